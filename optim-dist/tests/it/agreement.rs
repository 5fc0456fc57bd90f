//! Whole-step decisions are taken identically on every rank: non-finite gradients under
//! `SkipStep`/`Error`, hyperparameter and shape errors, mismatched ranks, ranks that own
//! nothing, and global reductions.

use crate::common;

use common::*;
use optim_dist::{Communicator, DistOptions, Distributed, SelfComm, ThreadComm};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig, Muon};
use optim_dsl::NonFinitePolicy;

fn adamw(policy: NonFinitePolicy) -> AdamW<f32> {
    let mut o = AdamW::new(AdamWConfig {
        lr: 1e-2.into(),
        ..Default::default()
    })
    .unwrap();
    o.set_non_finite_policy(policy);
    o
}

/// A NaN in rank 1's gradient of `h2.bias` (parameter 4) at step 2.
fn nan_on_rank_1(rank: usize, step: usize, p: usize, g: &mut [f32]) {
    if rank == 1 && step == 2 && p == 4 {
        g[3] = f32::NAN;
    }
}

#[test]
fn a_nan_on_one_rank_skips_the_step_on_every_rank() {
    let model = mixed_model();
    for ranks in 2..=4 {
        let (want, want_r) = reference(
            &mut adamw(NonFinitePolicy::SkipStep),
            &model,
            ranks,
            5,
            nan_on_rank_1,
        );
        assert!(want_r.iter().all(Result::is_ok));
        // The reference skipped step 2: its parameters after step 2 equal those after step 1.
        assert_bits(&want[2], &want[1], &model, "reference skip");
        let runs = distributed(
            &|| adamw(NonFinitePolicy::SkipStep),
            &model,
            ranks,
            5,
            DistOptions::default(),
            nan_on_rank_1,
        );
        for (history, results, rank, step, skipped) in &runs {
            assert!(
                results.iter().all(Result::is_ok),
                "rank {rank}: {results:?}"
            );
            assert_eq!((*step, *skipped), (4, 1), "{ranks} ranks, rank {rank}");
            for s in 0..5 {
                assert_bits(
                    &history[s],
                    &want[s],
                    &model,
                    &format!("{ranks} ranks, rank {rank}, step {s}"),
                );
            }
        }
    }
}

#[test]
fn a_nan_on_one_rank_is_the_same_error_on_every_rank() {
    let model = mixed_model();
    let runs = distributed(
        &|| adamw(NonFinitePolicy::Error),
        &model,
        3,
        4,
        DistOptions::default(),
        nan_on_rank_1,
    );
    let (want, want_r) = reference(
        &mut adamw(NonFinitePolicy::Error),
        &model,
        3,
        4,
        nan_on_rank_1,
    );
    let expected = Err(OptimError::NonFiniteGradient {
        param: "h2.bias".into(),
    });
    assert_eq!(want_r[2], expected);
    for (history, results, rank, step, _) in &runs {
        assert_eq!(results[2], expected, "rank {rank}");
        assert!(results[3].is_ok(), "rank {rank} goes on after the error");
        assert_eq!(*step, 3);
        // Nothing was written at the failed step.
        assert_bits(
            &history[2],
            &history[1],
            &model,
            "failed step wrote nothing",
        );
        assert_bits(
            &history[3],
            &want[3],
            &model,
            &format!("rank {rank} after the error"),
        );
    }
}

#[test]
fn a_bad_hyperparameter_fails_identically_everywhere_before_anything_is_written() {
    let model = mixed_model();
    // beta1 follows 0.9, 1.0, 1.1, …: valid at step 0, outside [0, 1) from step 1 on.
    let make = || {
        AdamW::<f32>::new(AdamWConfig {
            beta1: Schedule::linear(0.9, 1.3, 4).unwrap().into(),
            ..Default::default()
        })
        .unwrap()
    };
    let (want, want_r) = reference(&mut make(), &model, 3, 2, no_hook);
    let err = want_r[1].clone().unwrap_err();
    assert!(
        matches!(
            err,
            OptimError::InvalidHyperparameter {
                name: "beta1",
                step: 1,
                ..
            }
        ),
        "{err}"
    );
    let runs = distributed(&make, &model, 3, 2, DistOptions::default(), no_hook);
    for (history, results, rank, step, _) in &runs {
        assert_eq!(results[0], Ok(()), "rank {rank}");
        assert_eq!(results[1], Err(err.clone()), "rank {rank}");
        assert_eq!(*step, 1);
        assert_bits(&history[0], &want[0], &model, "step 0");
        assert_bits(
            &history[1],
            &history[0],
            &model,
            "nothing written at step 1",
        );
    }
}

#[test]
fn a_shape_error_on_one_rank_is_the_same_error_on_every_rank() {
    let model = mixed_model();
    let out = ThreadComm::run(3, |comm| {
        let rank = comm.rank();
        let mut dist = Distributed::new(adamw(NonFinitePolicy::Propagate), comm);
        let mut params = init(&model);
        let mut grads: Vec<Vec<f32>> = (0..model.len()).map(|p| grad(&model, rank, 0, p)).collect();
        if rank == 2 {
            grads[1].pop(); // rank 2's gradient of h1.weight is one element short
        }
        let mut slices = param_slices(&model, &mut params, &grads);
        let r = dist.update_slices(&mut slices);
        (r, params, dist.inner().opt_state().step)
    });
    let expected = Err(OptimError::ShapeMismatch {
        param: "h1.weight".into(),
        detail: "gradient has 127 elements, parameter has 128".into(),
    });
    for (r, params, step) in &out {
        assert_eq!(r, &expected);
        assert_eq!(*step, 0);
        assert_bits(params, &init(&model), &model, "nothing written");
    }
}

/// One step on two threads, rank `r` stepping `make(r) = (optimizer, model)`; every rank's
/// step must fail with an error that contains `want`.
fn assert_refused_on_every_rank(want: &str, make: impl Fn(usize) -> (AdamW<f32>, Model) + Sync) {
    let out = ThreadComm::run(2, |comm| {
        let (opt, model) = make(comm.rank());
        let mut dist = Distributed::new(opt, comm);
        let (_, r) = run_steps(&mut dist, &model, 0..1, init(&model), no_hook);
        r[0].clone()
    });
    for r in &out {
        let e = r.clone().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn ranks_with_different_parameter_lists_or_configs_are_refused_on_every_rank() {
    assert_refused_on_every_rank("rank 1's optimizer differs from rank 0's", |rank| {
        let lr = if rank == 1 { 2e-2 } else { 1e-2 };
        let opt = AdamW::<f32>::new(AdamWConfig {
            lr: lr.into(),
            ..Default::default()
        })
        .unwrap();
        (opt, mixed_model())
    });
    assert_refused_on_every_rank("rank 1 passed a different parameter list", |rank| {
        let mut m = mixed_model();
        if rank == 1 {
            m.swap(0, 1);
        }
        (adamw(NonFinitePolicy::Propagate), m)
    });
}

#[test]
fn ranks_that_own_nothing_keep_the_schedule_in_lock_step() {
    // Two parameters on four ranks: ranks 2 and 3 own nothing, but the warm-up schedule must
    // be evaluated at the same global step everywhere (the rank that owns a parameter next,
    // after a checkpoint reshard, must see the right step).
    let model: Model = vec![("w", vec![6, 4]), ("b", vec![6])];
    let make = || {
        AdamW::<f32>::new(AdamWConfig {
            lr: Schedule::linear(0.0, 1e-2, 4).unwrap().into(),
            ..Default::default()
        })
        .unwrap()
    };
    let (want, _) = reference(&mut make(), &model, 4, 6, no_hook);
    let runs = distributed(&make, &model, 4, 6, DistOptions::default(), no_hook);
    let mut idle = 0;
    for (history, _, rank, step, _) in &runs {
        assert_eq!(*step, 6, "rank {rank}");
        assert_bits(&history[5], &want[5], &model, &format!("rank {rank}"));
        idle += usize::from(*rank >= 2);
    }
    assert_eq!(idle, 2);
}

optimizer! {
    /// `clip_grad_norm_` then SGD: a global reduction over all parameters.
    pub ClippedSgd<lr = 0.05, max_norm = 1.0> {
        let g = clip_global_norm(grad, max_norm);
        param -= lr * g;
    }
}

#[test]
fn global_norm_clipping_across_ranks_is_bit_identical_to_one_process() {
    let model = mixed_model();
    // One rank: the plain optimizer's clip, bit for bit.
    let (want, _) = reference(&mut ClippedSgd::<f32>::default(), &model, 1, 3, no_hook);
    let mut dist = Distributed::new(ClippedSgd::<f32>::default(), SelfComm);
    let mut params = init(&model);
    for step in 0..3 {
        let grads: Vec<Vec<f32>> = (0..model.len()).map(|p| grad(&model, 0, step, p)).collect();
        let mut slices = param_slices(&model, &mut params, &grads);
        dist.update_slices(&mut slices).unwrap();
        assert_bits(&params, &want[step], &model, "clip on one rank");
    }
    // Several ranks: the clip factor is computed from every rank's pieces, summed in the single
    // process's parameter order, so the parameters match the single process bit for bit.
    for ranks in 2..=4 {
        let (want, _) = reference(&mut ClippedSgd::<f32>::default(), &model, ranks, 3, no_hook);
        let runs = distributed(
            &ClippedSgd::<f32>::default,
            &model,
            ranks,
            3,
            DistOptions::default(),
            no_hook,
        );
        for (history, results, rank, ..) in &runs {
            for step in 0..3 {
                assert_eq!(results[step], Ok(()), "{ranks} ranks, rank {rank}");
                assert_bits(
                    &history[step],
                    &want[step],
                    &model,
                    &format!("{ranks} ranks, rank {rank}, step {step}"),
                );
            }
        }
    }
}

#[test]
fn muon_matrices_are_spread_by_flops() {
    // Four 64×64 Newton–Schulz matrices (≈ 7 MFLOP each) and many small AdamW vectors: on 4
    // ranks each matrix goes to its own rank.
    let mut model: Model = (0..4)
        .map(|i| (["a", "b", "c", "d"][i], vec![64, 64]))
        .collect();
    model.extend((0..8).map(|i| {
        (
            ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"][i],
            vec![64],
        )
    }));
    let layouts = ThreadComm::run(4, |comm| {
        let mut d = Distributed::new(Muon::<f32>::default(), comm);
        run_steps(&mut d, &model, 0..1, init(&model), no_hook);
        d.layout().unwrap().clone()
    });
    let l = &layouts[0];
    let mut matrix_owners: Vec<usize> = l.pieces[..4].iter().map(|p| p.owner).collect();
    matrix_owners.sort_unstable();
    assert_eq!(matrix_owners, vec![0, 1, 2, 3]);
    assert!(l.imbalance() < 1.01, "imbalance {}", l.imbalance());
}
