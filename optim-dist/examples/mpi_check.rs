//! The data-parallel checks of `tests/` over real MPI processes (feature `mpi`); `.ci/run` runs
//! it with `mpirun -np 2` and `-np 3`.
//!
//! ```text
//! cargo build --release -p optim-dist --features mpi --example mpi_check
//! mpirun -np 3 target/release/examples/mpi_check
//! ```
//!
//! Every rank computes the single-process reference itself (it can generate every rank's
//! gradients), so each rank checks its own parameters bit for bit: AdamW, Muon, Shampoo and a
//! `clip_global_norm` SGD (a global reduction over every rank's parameters) after 6 steps; a NaN on rank 1 under `SkipStep` skipping the step on every rank; a
//! hyperparameter leaving its domain at step 1 failing on every rank with nothing written; a
//! checkpoint saved on all ranks and loaded on the same ranks going on bit-identically. Exits
//! non-zero on the first failure.

#[path = "../tests/it/common.rs"]
mod common;

use common::*;
use optim_dist::{Communicator, DistOptions, Distributed, GradSync, MpiComm};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig, Muon, MuonConfig, Shampoo, ShampooConfig};
use optim_dsl::NonFinitePolicy;

const STEPS: usize = 6;

optimizer! {
    /// `clip_grad_norm_` then SGD: a global reduction over the parameters of every rank.
    pub ClippedSgd<lr = 0.05, max_norm = 1.0> {
        let g = clip_global_norm(grad, max_norm);
        param -= lr * g;
    }
}

fn same(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .all(|(x, y)| x.to_bits() == y.to_bits())
}

fn identical<O: DslOptimizer<f32>>(
    make: impl Fn() -> O,
    comm: &MpiComm,
    what: &str,
) -> Result<(), String> {
    let model = mixed_model();
    let n = comm.size();
    let (want, _) = reference(&mut make(), &model, n, STEPS, no_hook);
    let mut d = Distributed::new(make(), MpiComm::new(comm.raw()));
    let (got, r) = run_steps(&mut d, &model, 0..STEPS, init(&model), no_hook);
    if let Some(e) = r.iter().find_map(|r| r.as_ref().err()) {
        return Err(format!("{what}: {e}"));
    }
    for s in 0..STEPS {
        if !same(&got[s], &want[s]) {
            return Err(format!(
                "{what}: rank {} differs from the reference after step {s}",
                comm.rank()
            ));
        }
    }
    Ok(())
}

fn nan_on_rank_1(rank: usize, step: usize, p: usize, g: &mut [f32]) {
    if rank == 1 && step == 2 && p == 4 {
        g[0] = f32::NAN;
    }
}

fn skip(comm: &MpiComm) -> Result<(), String> {
    let model = mixed_model();
    let make = || {
        let mut opt = AdamW::<f32>::default();
        opt.set_non_finite_policy(NonFinitePolicy::SkipStep);
        opt
    };
    let (want, _) = reference(&mut make(), &model, comm.size(), 4, nan_on_rank_1);
    let mut d = Distributed::new(make(), MpiComm::new(comm.raw()));
    let (got, r) = run_steps(&mut d, &model, 0..4, init(&model), nan_on_rank_1);
    let st = d.inner().opt_state();
    if r.iter().any(Result::is_err)
        || (st.step, st.skipped_steps) != (3, 1)
        || !same(&got[3], &want[3])
    {
        return Err(format!(
            "SkipStep: rank {} got {r:?}, step {}, skipped {}",
            comm.rank(),
            st.step,
            st.skipped_steps
        ));
    }
    Ok(())
}

fn bad_hyper(comm: &MpiComm) -> Result<(), String> {
    let model = mixed_model();
    let opt = AdamW::<f32>::new(AdamWConfig {
        beta1: Schedule::linear(0.9, 1.3, 4).unwrap().into(),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let mut d = Distributed::new(opt, MpiComm::new(comm.raw()));
    let (got, r) = run_steps(&mut d, &model, 0..2, init(&model), no_hook);
    match &r[1] {
        Err(OptimError::InvalidHyperparameter {
            name: "beta1",
            step: 1,
            ..
        }) if same(&got[1], &got[0]) => Ok(()),
        other => Err(format!(
            "bad hyperparameter: rank {} got {other:?}",
            comm.rank()
        )),
    }
}

fn resume(comm: &MpiComm) -> Result<(), String> {
    let model = mixed_model();
    let make = || {
        Muon::<f32>::new(MuonConfig {
            lr: 0.02.into(),
            ..Default::default()
        })
        .map_err(|e| e.to_string())
    };
    let dir = std::env::temp_dir().join("optim-dist-mpi-check");
    let (want, _) = reference(&mut make()?, &model, comm.size(), STEPS, no_hook);
    let mut d = Distributed::new(make()?, MpiComm::new(comm.raw()));
    let (h, _) = run_steps(&mut d, &model, 0..3, init(&model), no_hook);
    d.save_checkpoint(&dir).map_err(|e| e.to_string())?;
    let mut d = Distributed::new(make()?, MpiComm::new(comm.raw()));
    d.load_checkpoint(&dir).map_err(|e| e.to_string())?;
    let (got, _) = run_steps(&mut d, &model, 3..STEPS, h[2].clone(), no_hook);
    if !same(&got[STEPS - 4], &want[STEPS - 1]) {
        return Err(format!(
            "checkpoint: rank {} differs after resuming",
            comm.rank()
        ));
    }
    Ok(())
}

/// Not a check: how many parameters the transport's all-reduce (GradSync::AllReduce) leaves
/// different from the ordered reference after 6 AdamW steps (Open MPI's order depends on the
/// algorithm it picks for the message size and rank count).
fn all_reduce_drift(comm: &MpiComm) -> Result<String, String> {
    let model = mixed_model();
    let (want, _) = reference(
        &mut AdamW::<f32>::default(),
        &model,
        comm.size(),
        STEPS,
        no_hook,
    );
    let opts = DistOptions {
        grad_sync: GradSync::AllReduce,
        ..Default::default()
    };
    let mut d = Distributed::with_options(AdamW::<f32>::default(), MpiComm::new(comm.raw()), opts);
    let (got, _) = run_steps(&mut d, &model, 0..STEPS, init(&model), no_hook);
    let (a, b) = (&got[STEPS - 1], &want[STEPS - 1]);
    let differ = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    let max = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    Ok(format!(
        "{differ} of {} parameters differ (max {max:e})",
        a.iter().flatten().count()
    ))
}

fn main() -> Result<(), String> {
    let universe = mpi::initialize().ok_or("MPI was already initialised")?;
    let comm = MpiComm::new(&universe.world());
    // A constructor of `Opt` with the listed non-default settings.
    macro_rules! make {
        ($opt:ident, $cfg:ident; $($field:ident = $value:expr),*) => {
            || {
                $opt::<f32>::new($cfg {
                    $($field: $value.into(),)*
                    ..Default::default()
                })
                .expect("valid config")
            }
        };
    }
    let adamw = make!(AdamW, AdamWConfig; lr = 1e-2, weight_decay = 0.1);
    let muon = make!(Muon, MuonConfig; lr = 0.02, adam_lr = 3e-3);
    let shampoo = make!(Shampoo, ShampooConfig; lr = 1e-2, momentum = 0.9);
    identical(adamw, &comm, "AdamW")?;
    identical(muon, &comm, "Muon")?;
    identical(shampoo, &comm, "Shampoo")?;
    identical(ClippedSgd::<f32>::default, &comm, "clip_global_norm")?;
    skip(&comm)?;
    bad_hyper(&comm)?;
    resume(&comm)?;
    let drift = all_reduce_drift(&comm)?;
    println!(
        "mpi_check rank {}/{}: all 7 checks bit-identical to the single-process reference; \
         with GradSync::AllReduce instead, {drift}",
        comm.rank(),
        comm.size()
    );
    Ok(())
}
