//! Data-parallel steps on `ThreadComm` are bit-identical to the plain optimizer in one process
//! fed the ordered mean of the ranks' gradients, for AdamW, Muon and Shampoo, at 1–4 ranks.

use crate::common;

use common::*;
use optim_dist::{DistOptions, GradSync, ShardOptions};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{
    AdamW, AdamWConfig, Lamb, LambConfig, Muon, MuonConfig, Shampoo, ShampooConfig,
};

const STEPS: usize = 6;

fn check<O>(make: impl Fn() -> O + Sync, model: &Model, opts: DistOptions, what: &str)
where
    O: DslOptimizer<f32>,
{
    for ranks in 1..=4 {
        let (want, _) = reference(&mut make(), model, ranks, STEPS, no_hook);
        let runs = distributed(&make, model, ranks, STEPS, opts, no_hook);
        for (history, results, rank, step, _) in &runs {
            for (s, r) in results.iter().enumerate() {
                assert_eq!(r, &Ok(()), "{what}, {ranks} ranks, rank {rank}, step {s}");
            }
            assert_eq!(
                *step, STEPS as u64,
                "{what}: rank {rank} kept the step in lock-step"
            );
            for s in 0..STEPS {
                assert_bits(
                    &history[s],
                    &want[s],
                    model,
                    &format!("{what}, {ranks} ranks, rank {rank}, after step {s}"),
                );
            }
        }
    }
}

fn adamw() -> AdamW<f32> {
    AdamW::new(AdamWConfig {
        lr: 1e-2.into(),
        weight_decay: 0.1.into(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn adamw_is_bit_identical_at_1_to_4_ranks() {
    check(adamw, &mixed_model(), DistOptions::default(), "AdamW");
}

#[test]
fn muon_is_bit_identical_at_1_to_4_ranks() {
    let muon = || {
        Muon::<f32>::new(MuonConfig {
            lr: 0.02.into(),
            weight_decay: 0.01.into(),
            adam_lr: 3e-3.into(),
            ..Default::default()
        })
        .unwrap()
    };
    check(muon, &mixed_model(), DistOptions::default(), "Muon");
}

#[test]
fn shampoo_is_bit_identical_at_1_to_4_ranks() {
    // Grafting computes two per-tensor norms per matrix: reductions that must not depend on
    // the partition either.
    let shampoo = || {
        Shampoo::<f32>::new(ShampooConfig {
            lr: 1e-2.into(),
            momentum: 0.9.into(),
            ..Default::default()
        })
        .unwrap()
    };
    check(shampoo, &mixed_model(), DistOptions::default(), "Shampoo");
}

#[test]
fn split_element_wise_parameters_stay_bit_identical() {
    // A parameter far above the fair share, with blocks allowed down to 64 elements: AdamW's
    // `big` is cut into row blocks over the ranks.
    let model: Model = vec![
        ("big", vec![48, 40]),
        ("small", vec![8, 5]),
        ("bias", vec![40]),
    ];
    let opts = DistOptions {
        shard: ShardOptions {
            min_split_elems: 64,
            allow_split: true,
        },
        ..Default::default()
    };
    check(adamw, &model, opts, "AdamW with a split parameter");
    // and it really was split: at 3 ranks `big` has 3 row blocks of 16 rows on 3 ranks.
    let runs = optim_dist::ThreadComm::run(3, |comm| {
        let mut d = optim_dist::Distributed::with_options(adamw(), comm, opts);
        run_steps(&mut d, &model, 0..1, init(&model), no_hook);
        d.layout().unwrap().clone()
    });
    let l = &runs[0];
    let big: Vec<_> = l.pieces.iter().filter(|p| p.param == 0).collect();
    assert_eq!(big.len(), 3);
    assert!(big
        .iter()
        .all(|p| p.shape == vec![16, 40] && p.len() == 640));
    let mut owners: Vec<usize> = big.iter().map(|p| p.owner).collect();
    owners.sort_unstable();
    assert_eq!(owners, vec![0, 1, 2]);
    assert!(
        runs.iter().all(|r| r == l),
        "every rank computed the same layout"
    );
}

#[test]
fn thread_all_reduce_option_matches_in_rank_order() {
    // ThreadComm's all-reduce adds in rank order, so here even the all-reduce path is exact;
    // over MPI it is not (see GradSync::AllReduce).
    let opts = DistOptions {
        grad_sync: GradSync::AllReduce,
        ..Default::default()
    };
    check(adamw, &mixed_model(), opts, "AdamW, all-reduce");
}

#[test]
fn the_order_of_the_ranks_matters_so_the_test_can_fail() {
    // The gradients differ in magnitude by rank, so averaging them in another order changes
    // the bits: a partition-dependent sum would be caught by the tests above.
    let model = mixed_model();
    let gs: Vec<Vec<f32>> = (0..4).map(|r| grad(&model, r, 0, 1)).collect();
    let fwd = ordered_mean(&gs);
    let rev: Vec<Vec<f32>> = gs.iter().rev().cloned().collect();
    let bwd = ordered_mean(&rev);
    let differ = fwd
        .iter()
        .zip(&bwd)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert!(differ > 0, "reversed rank order gave identical means");
}

#[test]
fn per_tensor_norms_do_not_depend_on_the_step_size() {
    // LAMB's trust ratio takes two per-tensor norms. The single process runs 130k elements per
    // step (summed in parallel chunks); at 2 ranks the rank holding `mid` (50k elements, two
    // 32 Ki chunks) runs fewer than 65,536 and loops on one thread. The norms must still be
    // the same bits: the runtime sums every tensor in fixed 32 Ki chunks in a fixed order.
    let model: Model = vec![
        ("big", vec![400, 200]),
        ("mid", vec![200, 250]),
        ("bias", vec![250]),
    ];
    let lamb = || {
        Lamb::<f32>::new(LambConfig {
            lr: 1e-2.into(),
            weight_decay: 0.01.into(),
            ..Default::default()
        })
        .unwrap()
    };
    check(
        lamb,
        &model,
        DistOptions::default(),
        "LAMB above the parallel threshold",
    );
}
