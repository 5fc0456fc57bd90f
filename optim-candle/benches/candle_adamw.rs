//! One AdamW step on CPU `Var`s: candle-nn's `AdamW` (tensor ops, a new tensor per
//! intermediate) against the DSL's `AdamW` through [`CandleOptimizer`] (one fused pass over
//! each `Var`'s own storage), on the same `Var`s and gradients, in the same run; and the slice
//! path over plain `Vec`s as the memory-bound reference of the fused kernel.
//!
//! Sizes: 1M and 10M `f32` parameters, as a few `Var`s of a transformer-like mix of shapes.
//! Bytes moved per step by the fused AdamW: param read+write, grad read, m and v read+write
//! = 28 bytes per parameter. Run on a quiet machine:
//! `cargo bench -p optim-candle --bench candle_adamw`.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use optim_candle::{CandleConfig, CandleOptimizer};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig};
use std::hint::black_box;

/// `Var` shapes for about `total` parameters: square matrices, their biases, and a vector.
fn shapes(total: usize) -> Vec<Vec<usize>> {
    let side = ((total / 4) as f64).sqrt() as usize;
    let mut s: Vec<Vec<usize>> = (0..4).map(|_| vec![side, side]).collect();
    s.extend((0..4).map(|_| vec![side]));
    s
}

fn filled(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 * 1e-3 - 0.5
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("adamw_step");
    group.sample_size(20);
    for total in [1_000_000usize, 10_000_000] {
        let shapes = shapes(total);
        let numel: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        group.throughput(Throughput::Bytes(28 * numel as u64));
        let vars: Vec<Var> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| Var::from_vec(filled(s.iter().product(), i as u32), s.as_slice(), &dev))
            .collect::<candle_core::Result<_>>()
            .unwrap();
        let mut grads = GradStore::default();
        for (i, (v, s)) in vars.iter().zip(&shapes).enumerate() {
            let g = Tensor::from_vec(
                filled(s.iter().product(), 100 + i as u32),
                s.as_slice(),
                &dev,
            )
            .unwrap();
            grads.insert(v, g);
        }

        let params = ParamsAdamW {
            lr: 1e-3,
            weight_decay: 1e-2,
            ..Default::default()
        };
        let mut candle_nn_adamw = candle_nn::AdamW::new(vars.clone(), params).unwrap();
        group.bench_function(BenchmarkId::new("candle_nn::AdamW", numel), |b| {
            b.iter(|| candle_nn_adamw.step(black_box(&grads)).unwrap())
        });

        let dsl = AdamW::<f32>::new(AdamWConfig {
            lr: 1e-3.into(),
            weight_decay: 1e-2.into(),
            ..Default::default()
        })
        .unwrap();
        let mut ours = CandleOptimizer::new(vars.clone(), CandleConfig::new(dsl)).unwrap();
        group.bench_function(BenchmarkId::new("optim_candle::AdamW", numel), |b| {
            b.iter(|| ours.step(black_box(&grads)).unwrap())
        });

        // the slice path over plain buffers: the fused kernel without candle
        let mut slice_opt = AdamW::<f32>::new(AdamWConfig {
            lr: 1e-3.into(),
            weight_decay: 1e-2.into(),
            ..Default::default()
        })
        .unwrap();
        let names: Vec<String> = (0..shapes.len()).map(|i| format!("var{i}")).collect();
        let mut ps: Vec<Vec<f32>> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| filled(s.iter().product(), i as u32))
            .collect();
        let gs: Vec<Vec<f32>> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| filled(s.iter().product(), 100 + i as u32))
            .collect();
        group.bench_function(BenchmarkId::new("slice_path::AdamW", numel), |b| {
            b.iter(|| {
                let mut slices: Vec<ParamSlice<'_, f32>> = names
                    .iter()
                    .zip(&shapes)
                    .zip(ps.iter_mut())
                    .zip(&gs)
                    .map(|(((n, s), p), g)| ParamSlice {
                        name: n,
                        shape: s,
                        param: p,
                        grad: g,
                    })
                    .collect();
                slice_opt.update_slices(black_box(&mut slices)).unwrap()
            })
        });
    }
    group.finish();
}

/// Runs the group (what `criterion_group!` would generate, with a doc comment).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}

criterion_main!(benches);
