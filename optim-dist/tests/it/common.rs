//! Shared by the integration tests: small models, per-rank gradients, the ordered mean, the
//! single-process reference and the data-parallel run on `ThreadComm`.
#![allow(dead_code)]

use optim_dist::{Communicator, DistOptions, Distributed, ThreadComm};
use optim_dsl::prelude::*;

/// Parameter names and shapes, in the step's order.
pub type Model = Vec<(&'static str, Vec<usize>)>;

/// A model with Muon-routed matrices, AdamW-routed embedding/head/vectors and a scalar.
pub fn mixed_model() -> Model {
    vec![
        ("embed.weight", vec![20, 8]),
        ("h1.weight", vec![16, 8]),
        ("h1.bias", vec![16]),
        ("h2.weight", vec![12, 16]),
        ("h2.bias", vec![12]),
        ("head.weight", vec![10, 12]),
        ("scale", vec![]),
        ("conv", vec![4, 2, 3, 3]),
    ]
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in [-1, 1) from a key.
fn unit(key: u64) -> f64 {
    (splitmix(key) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Initial parameters (identical on every rank).
pub fn init(model: &Model) -> Vec<Vec<f32>> {
    model
        .iter()
        .enumerate()
        .map(|(p, (_, shape))| {
            let n: usize = shape.iter().product();
            (0..n)
                .map(|i| (0.5 * unit(((p as u64) << 32) ^ i as u64 ^ 0xABCD)) as f32)
                .collect()
        })
        .collect()
}

/// Rank `rank`'s gradient of parameter `p` at step `step`. Ranks have different magnitudes
/// (×1, ×1000, ×0.001, ×37, …) so that the order in which they are added changes the rounding.
pub fn grad(model: &Model, rank: usize, step: usize, p: usize) -> Vec<f32> {
    let n: usize = model[p].1.iter().product();
    let scale = [1.0, 1000.0, 0.001, 37.0, 0.3, 5.0][rank % 6];
    (0..n)
        .map(|i| {
            let key = (rank as u64) << 56 ^ (step as u64) << 40 ^ (p as u64) << 24 ^ i as u64;
            (scale * unit(key)) as f32
        })
        .collect()
}

/// The reference average: `(((g₀ + g₁) + g₂) + … + g_{N−1}) / N` in `f32`, element by element,
/// ranks in increasing order (the order `GradSync::ReduceScatter` documents).
pub fn ordered_mean(per_rank: &[Vec<f32>]) -> Vec<f32> {
    let n = per_rank.len() as f32;
    let mut acc = per_rank[0].clone();
    for g in &per_rank[1..] {
        for (a, x) in acc.iter_mut().zip(g) {
            *a += *x;
        }
    }
    acc.iter().map(|a| a / n).collect()
}

/// Parameters after each step.
pub type History = Vec<Vec<Vec<f32>>>;
/// Each step's result.
pub type Results = Vec<Result<(), OptimError>>;
/// What one rank of a data-parallel run saw: history, results, rank, global step, skipped steps.
pub type RankOut = (History, Results, usize, u64, u64);

/// Modifies a rank's gradient before a step (e.g. to put a NaN in it).
pub type GradHook = fn(rank: usize, step: usize, p: usize, g: &mut [f32]);

/// No modification.
pub fn no_hook(_: usize, _: usize, _: usize, _: &mut [f32]) {}

fn grads_of(model: &Model, ranks: usize, step: usize, hook: GradHook) -> Vec<Vec<Vec<f32>>> {
    (0..ranks)
        .map(|r| {
            (0..model.len())
                .map(|p| {
                    let mut g = grad(model, r, step, p);
                    hook(r, step, p, &mut g);
                    g
                })
                .collect()
        })
        .collect()
}

/// The plain optimizer in one process, fed the ordered mean of `ranks` ranks' gradients.
/// Returns the parameters after each step and the step results.
pub fn reference<O: DslOptimizer<f32>>(
    opt: &mut O,
    model: &Model,
    ranks: usize,
    steps: usize,
    hook: GradHook,
) -> (History, Results) {
    let mut params = init(model);
    let mut history = Vec::new();
    let mut results = Vec::new();
    for step in 0..steps {
        let per_rank = grads_of(model, ranks, step, hook);
        let means: Vec<Vec<f32>> = (0..model.len())
            .map(|p| {
                let gs: Vec<Vec<f32>> = per_rank.iter().map(|g| g[p].clone()).collect();
                ordered_mean(&gs)
            })
            .collect();
        let mut slices = param_slices(model, &mut params, &means);
        results.push(opt.update_slices(&mut slices));
        history.push(params.clone());
    }
    (history, results)
}

/// `opt` data-parallel on `ranks` threads, each feeding its own gradients.
pub fn distributed<O>(
    make: &(dyn Fn() -> O + Sync),
    model: &Model,
    ranks: usize,
    steps: usize,
    opts: DistOptions,
    hook: GradHook,
) -> Vec<RankOut>
where
    O: DslOptimizer<f32>,
{
    ThreadComm::run(ranks, |comm| {
        let rank = comm.rank();
        let mut dist = Distributed::with_options(make(), comm, opts);
        let (history, results) = run_steps(&mut dist, model, 0..steps, init(model), hook);
        let st = dist.inner().opt_state();
        (history, results, rank, st.step, st.skipped_steps)
    })
}

/// Steps `range` of a data-parallel run from `params`.
pub fn run_steps<O: DslOptimizer<f32>, C: Communicator>(
    dist: &mut Distributed<O, C>,
    model: &Model,
    range: std::ops::Range<usize>,
    mut params: Vec<Vec<f32>>,
    hook: GradHook,
) -> (History, Results) {
    let rank = dist.comm().rank();
    let mut history = Vec::new();
    let mut results = Vec::new();
    for step in range {
        let grads: Vec<Vec<f32>> = (0..model.len())
            .map(|p| {
                let mut g = grad(model, rank, step, p);
                hook(rank, step, p, &mut g);
                g
            })
            .collect();
        let mut slices = param_slices(model, &mut params, &grads);
        results.push(dist.update_slices(&mut slices));
        history.push(params.clone());
    }
    (history, results)
}

/// The [`ParamSlice`]s of `model`'s parameters `params` with gradients `grads`, all in model
/// order.
pub fn param_slices<'a>(
    model: &'a Model,
    params: &'a mut [Vec<f32>],
    grads: &'a [Vec<f32>],
) -> Vec<ParamSlice<'a, f32>> {
    let mut slices = Vec::with_capacity(model.len());
    for (((name, shape), param), grad) in model.iter().zip(params).zip(grads) {
        slices.push(ParamSlice {
            name,
            shape,
            param,
            grad,
        });
    }
    slices
}

/// Asserts that two parameter sets are equal bit for bit, naming the first difference.
pub fn assert_bits(a: &[Vec<f32>], b: &[Vec<f32>], model: &Model, what: &str) {
    for (p, (x, y)) in a.iter().zip(b).enumerate() {
        for (i, (u, v)) in x.iter().zip(y).enumerate() {
            assert!(
                u.to_bits() == v.to_bits(),
                "{what}: `{}`[{i}] differs: {u:e} vs {v:e}",
                model[p].0
            );
        }
    }
}
