//! One AdamW step on CPU `Var`s, every variant in the same run, with same-run ratios to a
//! memory-bound baseline printed after each group.
//!
//! Groups `candle_1M` and `candle_10M`: about 1M and 10M `f32` parameters as eight `Var`s of a
//! transformer-like mix of shapes (four square matrices and their biases). Variants (criterion
//! function ids):
//!
//! - `bound`: the memory-bound baseline, a hand-written single pass with AdamW's access pattern
//!   (reads `p, g, m, v`, writes `p, m, v`: 28 bytes per parameter, the bytes the fused AdamW
//!   moves) and trivial arithmetic, run as the runtime runs its kernels (run-time SIMD dispatch
//!   through `optim_dsl::__private::dispatch`, one rayon dispatch over `CHUNK`-element pieces of
//!   every tensor above `PARALLEL_THRESHOLD` elements: `common::bound_step`, the same bound as
//!   `optim-dsl`'s `adamw` bench). It runs over exactly the buffers `optim_candle` touches, as
//!   the `adamw` bench runs its bound over `dsl_slices`'s: the `Var`s' own storage (locked by
//!   optim-candle's own access path, `optim_candle::with_storage`: the nested in-place ops of
//!   its step), the gradients' storage, and `optim_candle`'s own `m` and `v` (its math is
//!   AdamW's moment update, so that state stays valid): the ratio compares two passes over the
//!   same memory.
//! - `optim_candle`: the zoo's `AdamW` through [`CandleOptimizer`] (one fused pass over each
//!   `Var`'s own storage). The target: within 1.05× `bound` at 10M.
//! - `candle_nn`: candle-nn's `AdamW` (tensor ops, a new tensor per intermediate) on the same
//!   `Var`s and gradients.
//! - `slice_path`: the zoo's `AdamW` through `update_slices` over plain `Vec`s (the fused kernel
//!   without candle), copies of the `Var`s and gradients with state of its own: other buffers
//!   than the bound's (`optim-dsl`'s `adamw` bench measures the slice path against a bound over
//!   its own buffers).
//! - `bound_again`: `bound` once more after the others: memory bandwidth on a shared machine
//!   drifts, and `bound_again / bound` far from 1 discredits the group's ratios.
//!
//! Groups `candle_bf16_1M` and `candle_bf16_10M`: the same shapes as `bf16` `Var`s (and
//! gradients), AdamW with `f32` state; `candle_f16_1M` and `candle_f16_10M` the same as `f16`
//! `Var`s. Variants:
//!
//! - `bound`: a hand-written single pass over the `Var`s' and gradients' own `bf16` storage
//!   (`optim_candle::with_storage_16`) and `optim_candle`'s `f32` `m` and `v`, reading `p, g,
//!   m, v` and writing `p, m, v`: 2 + 2 + 8 + 8 + 2 = 22 bytes per parameter, the bytes the data
//!   needs; trivial arithmetic, widening by a shift and narrowing by truncation (the bf16
//!   conversions; the `f16` groups run the same loop, which reads their bits as `bf16`: the same
//!   bytes, without `f16`'s dearer conversions, so a lower bound); threaded as
//!   `common::bound_step` (one rayon dispatch over `CHUNK`-element pieces), its loop compiled
//!   for AVX2+FMA where the CPU has it.
//! - `blocks`: the zoo's `AdamW` through [`CandleOptimizer`], its loop's 16-bit entry point run
//!   on the 16-bit storage in place (`optim_runtime::narrow`; the name is from the executor-level
//!   2048-element blocks this path used before): 22 bytes per parameter.
//! - `staged`: the same with `set_stage_whole(true)`: the whole parameter and gradient widened
//!   into `f32` buffers, the `f32` step, the parameter rounded back (about 46 bytes per
//!   parameter): the path `blocks` replaced.
//! - `bound_again`: as in the `f32` groups.
//!
//! After each group the bench prints, from this run's own samples (criterion's per-sample
//! times, recorded through `iter_custom`), the median time per step of each variant and its
//! ratio to the mean of the `bound` and `bound_again` medians. `python3 scripts/bench-report.py`
//! makes the same table from criterion's files.
//!
//! Interleaved mode: with `CANDLE_BENCH_INTERLEAVED=<rounds>` set, each group skips criterion
//! and runs `bound`, `optim_candle` and `slice_path` round-robin (one step each per round, the
//! order rotating), then prints each variant's median time and the median of its per-round ratio
//! to the same round's `bound`. Sequential criterion runs see the machine's bandwidth drift
//! between variants (`bound_again / bound`); paired rounds see the same drift in both terms of
//! a ratio. `CANDLE_BENCH_INTERLEAVED=40 cargo bench -p optim-candle --bench candle_adamw`.
//!
//! Run on a quiet machine: `cargo bench -p optim-candle --bench candle_adamw`. A smoke run:
//! `cargo bench -p optim-candle --bench candle_adamw -- --warm-up-time 1 --measurement-time 2
//! candle_1M/optim_candle`.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use criterion::{criterion_main, Bencher, Criterion, SamplingMode, Throughput};
use optim_candle::{CandleConfig, CandleOptimizer};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

// The memory-bound baseline and criterion's settings, shared with optim-dsl's AdamW benches.
#[path = "../../optim-dsl/benches/common/mod.rs"]
mod common;
use common::SAMPLES;

// ---------------------------------------------------------------------------------------------
// The memory-bound baseline over the candle path's own buffers.

/// One bound step over the storages of the `Var`s `vars` and of their gradients, locked by
/// optim-candle's own access path (`optim_candle::with_storage`: the nested in-place ops of
/// its step), with the moments `m` and `v`.
fn bound_on_vars<'s>(
    vars: &[(String, Var)],
    grads: &GradStore,
    m: &mut [&'s mut [f32]],
    v: &mut [&'s mut [f32]],
) {
    let named = vars.iter().map(|(n, var)| (n.as_str(), var));
    optim_candle::with_storage::<f32>(named, grads, &mut |p, g| common::bound_step(p, g, m, v))
        .expect("bound: storage access");
}

// ---------------------------------------------------------------------------------------------
// Data and same-run timings.

/// `Var` shapes for about `total` parameters: square matrices, their biases.
fn shapes(total: usize) -> Vec<Vec<usize>> {
    let side = ((total / 4) as f64).sqrt() as usize;
    let mut s: Vec<Vec<usize>> = (0..4).map(|_| vec![side, side]).collect();
    s.extend((0..4).map(|_| vec![side]));
    s
}

/// Deterministic values in `[-0.5, 0.5)`.
fn filled(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 * 1e-3 - 0.5
        })
        .collect()
}

/// A tensor's elements, flattened.
fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("f32 elements")
}

fn adamw() -> AdamW<f32> {
    AdamW::<f32>::new(AdamWConfig {
        lr: 1e-3.into(),
        weight_decay: 1e-2.into(),
        ..Default::default()
    })
    .expect("valid AdamW config")
}

/// Per-iteration times (seconds) of every sample criterion took, by variant, in this run.
#[derive(Default)]
struct Times(RefCell<BTreeMap<&'static str, Vec<f64>>>);

impl Times {
    /// Times `step` as criterion's routine, recording each sample's time per iteration.
    fn run(&self, b: &mut Bencher<'_>, id: &'static str, mut step: impl FnMut()) {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                step();
            }
            let elapsed = start.elapsed();
            let per = elapsed.as_secs_f64() / iters.max(1) as f64;
            self.0.borrow_mut().entry(id).or_default().push(per);
            elapsed
        })
    }

    /// The median of the last [`SAMPLES`] records of `id` (criterion's warm-up calls come
    /// first, its samples last), if it ran.
    fn median(&self, id: &str) -> Option<f64> {
        let map = self.0.borrow();
        let all = map.get(id)?;
        let mut last: Vec<f64> = all[all.len().saturating_sub(SAMPLES)..].to_vec();
        last.sort_by(f64::total_cmp);
        Some(last[last.len() / 2])
    }

    /// Prints the group's medians of `ids` and their ratios to the bound (the mean of `bound`
    /// and `bound_again` when both ran), in `bytes` per parameter, and the bound's drift.
    fn report(&self, group: &str, numel: usize, ids: &[&str], bytes: usize) {
        let bounds: Vec<f64> = ["bound", "bound_again"]
            .iter()
            .filter_map(|id| self.median(id))
            .collect();
        if ids.iter().all(|id| self.median(id).is_none()) {
            return; // filtered out
        }
        let bound = (!bounds.is_empty()).then(|| bounds.iter().sum::<f64>() / bounds.len() as f64);
        eprintln!("\n{group}: {numel} parameters, same-run medians ({bytes} B/param)");
        eprintln!(
            "  {:<14} {:>12} {:>9} {:>10}",
            "variant", "time/step", "GB/s", "÷ bound"
        );
        for &id in ids {
            let Some(t) = self.median(id) else { continue };
            let gbs = (bytes * numel) as f64 / t / 1e9;
            let ratio = bound.map_or("-".to_string(), |b| format!("{:.3}", t / b));
            eprintln!("  {id:<14} {:>9.3} ms {gbs:>9.2} {ratio:>10}", t * 1e3);
        }
        if let (Some(a), Some(b)) = (self.median("bound"), self.median("bound_again")) {
            eprintln!("  bound drift (bound_again / bound): {:.3}", b / a);
        }
        self.0.borrow_mut().clear();
    }
}

// ---------------------------------------------------------------------------------------------
// The groups.

/// One `Var` per shape and its gradient, of type `dtype`, with deterministic values (`Var` `i`
/// from seed `i`, its gradient from seed `100 + i`, rounded from `f32`).
fn vars_and_grads(shapes: &[Vec<usize>], dtype: candle_core::DType) -> (Vec<Var>, GradStore) {
    let dev = Device::Cpu;
    let tensor = |seed: u32, s: &[usize]| {
        Tensor::from_vec(filled(s.iter().product(), seed), s, &dev).and_then(|t| t.to_dtype(dtype))
    };
    let vars: Vec<Var> = (shapes.iter().enumerate())
        .map(|(i, s)| Var::from_tensor(&tensor(i as u32, s)?))
        .collect::<candle_core::Result<_>>()
        .expect("Vars");
    let mut grads = GradStore::default();
    for (i, (v, s)) in vars.iter().zip(shapes).enumerate() {
        grads.insert(v, tensor(100 + i as u32, s).expect("gradient"));
    }
    (vars, grads)
}

fn bench_group(c: &mut Criterion, label: &str, total: usize) {
    let shapes = shapes(total);
    let numel: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let (vars, grads) = vars_and_grads(&shapes, candle_core::DType::F32);
    let params = ParamsAdamW {
        lr: 1e-3,
        weight_decay: 1e-2,
        ..Default::default()
    };
    let mut candle_nn_adamw = candle_nn::AdamW::new(vars.clone(), params).expect("candle-nn");
    let mut ours = CandleOptimizer::new(vars.clone(), CandleConfig::new(adamw())).expect("ours");
    // One step creates `ours`'s state: the bound runs over it.
    ours.step(&grads).expect("optim-candle step");
    let bound_vars: Vec<(String, Var)> = ours.vars().to_vec();
    let bound_names: Vec<String> = ours.vars().iter().map(|(n, _)| n.clone()).collect();
    let mut slice_opt = adamw();
    let names: Vec<String> = (0..shapes.len()).map(|i| format!("var{i}")).collect();
    let mut ps: Vec<Vec<f32>> = vars.iter().map(|v| flat(v.as_tensor())).collect();
    let gs: Vec<Vec<f32>> = vars
        .iter()
        .map(|v| flat(grads.get(v).expect("gradient")))
        .collect();
    let mut slice_step = || {
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
        slice_opt
            .update_slices(black_box(&mut slices))
            .expect("slice step")
    };

    if let Some(rounds) = interleaved_rounds() {
        let mut t: [Vec<f64>; 3] = Default::default();
        for r in 0..rounds {
            for k in 0..3 {
                let which = (r + k) % 3;
                let start = Instant::now();
                match which {
                    0 => {
                        let (mut m, mut v) = common::moments(ours.inner_mut(), &bound_names);
                        bound_on_vars(&bound_vars, &grads, &mut m, &mut v);
                    }
                    1 => ours.step(black_box(&grads)).expect("optim-candle step"),
                    _ => slice_step(),
                }
                t[which].push(start.elapsed().as_secs_f64());
            }
        }
        report_interleaved(
            label,
            numel,
            &t,
            &["bound", "optim_candle", "slice_path"],
            28,
        );
        return;
    }
    let times = Times::default();
    let mut group = c.benchmark_group(label);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(28 * numel as u64));
    group.bench_function("bound", |b| {
        let (mut m, mut v) = common::moments(ours.inner_mut(), &bound_names);
        times.run(b, "bound", || {
            bound_on_vars(&bound_vars, &grads, &mut m, &mut v)
        })
    });
    group.bench_function("optim_candle", |b| {
        times.run(b, "optim_candle", || {
            ours.step(black_box(&grads)).expect("optim-candle step")
        })
    });
    group.bench_function("candle_nn", |b| {
        times.run(b, "candle_nn", || {
            candle_nn_adamw
                .step(black_box(&grads))
                .expect("candle-nn step")
        })
    });
    group.bench_function("slice_path", |b| {
        times.run(b, "slice_path", &mut slice_step)
    });
    group.bench_function("bound_again", |b| {
        let (mut m, mut v) = common::moments(ours.inner_mut(), &bound_names);
        times.run(b, "bound_again", || {
            bound_on_vars(&bound_vars, &grads, &mut m, &mut v)
        })
    });
    group.finish();
    let ids = [
        "bound",
        "optim_candle",
        "candle_nn",
        "slice_path",
        "bound_again",
    ];
    times.report(label, numel, &ids, 28);
}

// ---------------------------------------------------------------------------------------------
// The 16-bit groups.

/// The bf16 bound's loop over one piece: AdamW's access pattern over 16-bit `p` and `g` and
/// `f32` `m`, `v` (see the module docs).
#[inline(always)]
fn bound16_piece(p: &mut [u16], g: &[u16], m: &mut [f32], v: &mut [f32]) {
    let s = &common::BOUND_SCALARS;
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let pf = f32::from_bits(u32::from(p[i]) << 16);
        let gf = f32::from_bits(u32::from(g[i]) << 16);
        m[i] = s[0] * m[i] + s[1] * gf;
        v[i] = s[2] * v[i] + s[3] * gf * gf;
        p[i] = ((pf + s[5] * m[i]).to_bits() >> 16) as u16;
    }
}

/// [`bound16_piece`] compiled for AVX2+FMA where the CPU has it.
fn bound16_dispatch(p: &mut [u16], g: &[u16], m: &mut [f32], v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(p: &mut [u16], g: &[u16], m: &mut [f32], v: &mut [f32]) {
            bound16_piece(p, g, m, v);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked on the line above).
            return unsafe { avx2(p, g, m, v) };
        }
    }
    bound16_piece(p, g, m, v);
}

/// One bf16 bound step over the `Var`s' own storage (threaded as `common::bound_step`).
fn bound16_on_vars(
    vars: &[(String, Var)],
    grads: &GradStore,
    m: &mut [&mut [f32]],
    v: &mut [&mut [f32]],
) {
    use rayon::prelude::*;
    let named = vars.iter().map(|(n, var)| (n.as_str(), var));
    let chunk = optim_dsl::__private::CHUNK;
    optim_candle::with_storage_16(named, grads, &mut |ps, gs| {
        let mut items = Vec::new();
        for ((p, g), (m, v)) in ps.iter_mut().zip(gs).zip(m.iter_mut().zip(v.iter_mut())) {
            let pieces = p
                .chunks_mut(chunk)
                .zip(g.chunks(chunk))
                .zip(m.chunks_mut(chunk).zip(v.chunks_mut(chunk)));
            items.extend(pieces);
        }
        items
            .into_par_iter()
            .for_each(|((p, g), (m, v))| bound16_dispatch(p, g, m, v));
    })
    .expect("bound: storage access");
}

/// One 16-bit group: the `Var`s and gradients in `bf` (`BF16` or `F16`).
fn bench_half_group(c: &mut Criterion, label: &str, total: usize, bf: candle_core::DType) {
    let shapes = shapes(total);
    let numel: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let (vars, grads) = vars_and_grads(&shapes, bf);
    let mut blocks = CandleOptimizer::new(vars.clone(), CandleConfig::new(adamw())).expect("ours");
    let mut staged = CandleOptimizer::new(vars.clone(), CandleConfig::new(adamw())).expect("ours");
    staged.set_stage_whole(true);
    blocks.step(&grads).expect("blocks step");
    staged.step(&grads).expect("staged step");
    let bound_vars: Vec<(String, Var)> = blocks.vars().to_vec();
    let bound_names: Vec<String> = blocks.vars().iter().map(|(n, _)| n.clone()).collect();

    if let Some(rounds) = interleaved_rounds() {
        let mut t: [Vec<f64>; 3] = Default::default();
        for r in 0..rounds {
            for k in 0..3 {
                let which = (r + k) % 3;
                let start = Instant::now();
                match which {
                    0 => {
                        let (mut m, mut v) = common::moments(blocks.inner_mut(), &bound_names);
                        bound16_on_vars(&bound_vars, &grads, &mut m, &mut v);
                    }
                    1 => blocks.step(black_box(&grads)).expect("blocks step"),
                    _ => staged.step(black_box(&grads)).expect("staged step"),
                }
                t[which].push(start.elapsed().as_secs_f64());
            }
        }
        report_interleaved(label, numel, &t, &["bound", "blocks", "staged"], 22);
        return;
    }
    let times = Times::default();
    let mut group = c.benchmark_group(label);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(22 * numel as u64));
    group.bench_function("bound", |b| {
        let (mut m, mut v) = common::moments(blocks.inner_mut(), &bound_names);
        times.run(b, "bound", || {
            bound16_on_vars(&bound_vars, &grads, &mut m, &mut v)
        })
    });
    group.bench_function("blocks", |b| {
        times.run(b, "blocks", || {
            blocks.step(black_box(&grads)).expect("blocks step")
        })
    });
    group.bench_function("staged", |b| {
        times.run(b, "staged", || {
            staged.step(black_box(&grads)).expect("staged step")
        })
    });
    group.bench_function("bound_again", |b| {
        let (mut m, mut v) = common::moments(blocks.inner_mut(), &bound_names);
        times.run(b, "bound_again", || {
            bound16_on_vars(&bound_vars, &grads, &mut m, &mut v)
        })
    });
    group.finish();
    times.report(
        label,
        numel,
        &["bound", "blocks", "staged", "bound_again"],
        22,
    );
}

/// The rounds of the interleaved mode (environment variable `CANDLE_BENCH_INTERLEAVED`), if set.
fn interleaved_rounds() -> Option<usize> {
    let rounds = std::env::var("CANDLE_BENCH_INTERLEAVED").ok()?;
    Some(
        rounds
            .parse()
            .expect("CANDLE_BENCH_INTERLEAVED: a number of rounds"),
    )
}

/// Prints the interleaved mode's medians (`t[k]`: variant `ids[k]`, `t[0]` the bound; one time
/// per round each) and the medians of each round's ratio to that round's bound, in `bytes` per
/// parameter.
fn report_interleaved(label: &str, numel: usize, t: &[Vec<f64>; 3], ids: &[&str; 3], bytes: usize) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "\n{label}: {numel} parameters, interleaved, {} rounds ({bytes} B/param)",
        t[0].len()
    );
    eprintln!(
        "  {:<14} {:>12} {:>9} {:>16}",
        "variant", "time/step", "GB/s", "÷ bound (paired)"
    );
    for (id, ts) in ids.iter().zip(t) {
        let med = median(ts.clone());
        let paired = median(ts.iter().zip(&t[0]).map(|(a, b)| a / b).collect());
        let gbs = (bytes * numel) as f64 / med / 1e9;
        eprintln!("  {id:<14} {:>9.3} ms {gbs:>9.2} {paired:>16.3}", med * 1e3);
    }
}

/// Runs the groups (what `criterion_group!` would generate, with a doc comment).
fn benches() {
    let mut c = common::criterion();
    bench_group(&mut c, "candle_1M", 1_000_000);
    bench_group(&mut c, "candle_10M", 10_000_000);
    let (bf16, f16) = (candle_core::DType::BF16, candle_core::DType::F16);
    bench_half_group(&mut c, "candle_bf16_1M", 1_000_000, bf16);
    bench_half_group(&mut c, "candle_bf16_10M", 10_000_000, bf16);
    bench_half_group(&mut c, "candle_f16_1M", 1_000_000, f16);
    bench_half_group(&mut c, "candle_f16_10M", 10_000_000, f16);
}

criterion_main!(benches);
