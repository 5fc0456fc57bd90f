//! Matrix optimizers: one Muon step (momentum + 5-step Newton–Schulz + update) on 1024×1024
//! and 768×3072, the bare Newton–Schulz on the same shapes, and Shampoo / SOAP steps with their
//! preconditioners refreshed every 10 steps — measured as the amortised cost of 10 consecutive
//! steps — next to AdamW on the same parameters, in the same run.
//!
//! ```text
//! cargo bench -p optim-dsl --bench matrix
//! python3 scripts/bench-report.py      # medians and ratios
//! ```

use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use optim_dsl::lowp::mix64;
use optim_dsl::matrix::{orthogonalize, MatInOut, NS_COEFFS, NS_EPS, NS_STEPS};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, Muon, Shampoo, ShampooConfig, Soap, SoapConfig};
use std::hint::black_box;
use std::time::Duration;

/// `n` values uniform in [-0.01, 0.01) from `(seed, i)` (the runtime's splitmix64 mixer).
fn data(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let r = mix64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ mix64(i));
            ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        })
        .collect()
}

fn step<O: DslOptimizer<f32>>(opt: &mut O, shape: &[usize], p: &mut [f32], g: &[f32]) {
    opt.update_slices(&mut [ParamSlice {
        name: "w",
        shape,
        param: p,
        grad: g,
    }])
    .unwrap();
}

/// A group of 10 samples, each measured for `seconds` after a one-second warm-up.
fn slow_group<'a>(c: &'a mut Criterion, name: &str, seconds: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(seconds))
        .warm_up_time(Duration::from_secs(1));
    group
}

fn muon(c: &mut Criterion) {
    let mut group = slow_group(c, "muon", 6);
    for (rows, cols) in [(1024usize, 1024usize), (768, 3072)] {
        let id = format!("{rows}x{cols}");
        let g = data(rows * cols, 1);
        let mut out = vec![0.0f32; rows * cols];
        group.bench_function(BenchmarkId::new("newton_schulz", &id), |b| {
            b.iter(|| {
                let io = MatInOut::new(black_box(&g), &mut out, rows, cols).unwrap();
                orthogonalize(io, NS_STEPS, &[NS_COEFFS], NS_EPS)
            })
        });
        let mut p = data(rows * cols, 2);
        let mut opt = Muon::<f32>::default();
        step(&mut opt, &[rows, cols], &mut p, &g);
        group.bench_function(BenchmarkId::new("muon_step", &id), |b| {
            b.iter(|| step(&mut opt, &[rows, cols], &mut p, &g))
        });
    }
    group.finish();
}

/// One optimizer step on the parameter it is given.
type StepOnce<'a> = dyn FnMut(&mut [f32]) + 'a;

fn preconditioned(c: &mut Criterion) {
    let mut group = slow_group(c, "preconditioned_10_steps", 8);
    for (rows, cols) in [(256usize, 256usize), (512, 512)] {
        let id = format!("{rows}x{cols}");
        let shape = [rows, cols];
        let g = data(rows * cols, 3);
        let mut p = data(rows * cols, 4);
        let mut adamw = AdamW::<f32>::default();
        let mut shampoo = Shampoo::<f32>::new(ShampooConfig {
            update_freq: 10.0.into(),
            ..Default::default()
        })
        .unwrap();
        let mut soap = Soap::<f32>::new(SoapConfig {
            precondition_frequency: 10.0.into(),
            ..Default::default()
        })
        .unwrap();
        let runs: [(&str, &mut StepOnce<'_>); 3] = [
            ("adamw", &mut |p: &mut [f32]| {
                step(&mut adamw, &shape, p, &g)
            }),
            ("shampoo", &mut |p: &mut [f32]| {
                step(&mut shampoo, &shape, p, &g)
            }),
            ("soap", &mut |p: &mut [f32]| step(&mut soap, &shape, p, &g)),
        ];
        // one warm-up step, then 10 steps per iteration = one refresh of the preconditioner
        // per iteration
        for (name, step_once) in runs {
            step_once(&mut p);
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| {
                    for _ in 0..10 {
                        step_once(&mut p)
                    }
                })
            });
        }
    }
    group.finish();
}

/// Runs every group (what `criterion_group!` would generate, with a doc comment).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    muon(&mut c);
    preconditioned(&mut c);
}

criterion_main!(benches);
