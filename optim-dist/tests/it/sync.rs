//! The cross-rank agreement primitives and the `StepSync` implementation for global reductions.

use crate::common;

use common::*;
use optim_dist::sync::{agree, any, CommSync, StepSync};
use optim_dist::{Communicator, Distributed, ThreadComm};
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;
use optim_dsl::GlobalContribution;

#[test]
fn agree_returns_the_lowest_failing_ranks_error_everywhere() {
    let out = ThreadComm::run(4, |comm| {
        let r = comm.rank();
        let local = match r {
            1 => Err(OptimError::ShapeMismatch {
                param: "w".into(),
                detail: "one".into(),
            }),
            3 => Err(OptimError::InvalidUse("three".into())),
            _ => Ok(()),
        };
        agree(&comm, local)
    });
    for r in out {
        assert_eq!(
            r,
            Err(OptimError::ShapeMismatch {
                param: "w".into(),
                detail: "one".into()
            })
        );
    }
    let out = ThreadComm::run(3, |comm| agree(&comm, Ok(())));
    assert_eq!(out, vec![Ok(()); 3]);
}

#[test]
fn any_is_true_everywhere_when_one_rank_says_so() {
    let out = ThreadComm::run(3, |comm| {
        let r = comm.rank();
        (any(&comm, r == 2).unwrap(), any(&comm, false).unwrap())
    });
    assert_eq!(out, vec![(true, false); 3]);
}

#[test]
fn global_sums_add_in_canonical_order_whatever_the_partition() {
    // Contributions whose sum depends on the order: 1e16 + 1 - 1e16 + ... . Each parameter's
    // contribution is a function of its index; the total must equal the single-process sum
    // (from 0.0, in parameter order) at every rank count.
    let model: Model = (0..9)
        .map(|i| {
            (
                ["a", "b", "c", "d", "e", "f", "g", "h", "i"][i],
                vec![3 + i, 2],
            )
        })
        .collect();
    let contrib = |p: usize| -> [f64; 4] {
        let v = [1e16, 1.0, -1e16, 3.0, 0.1, 1e-3, 7.0, -2.5, 1e8][p];
        [v, v * 0.5, -v, 1.0]
    };
    let mut want = [0.0f64; 4];
    for p in 0..model.len() {
        for (w, c) in want.iter_mut().zip(contrib(p)) {
            *w += c;
        }
    }
    for ranks in 1..=4 {
        let out = ThreadComm::run(ranks, |comm| {
            let mut d = Distributed::new(AdamW::<f32>::default(), comm);
            run_steps(&mut d, &model, 0..1, init(&model), no_hook);
            let layout = d.layout().unwrap().clone();
            let mine: Vec<GlobalContribution> = layout
                .pieces_of(d.comm().rank())
                .map(|p| {
                    let mut c = GlobalContribution::default();
                    c.sums[..4].copy_from_slice(&contrib(p.param));
                    c.produced[..4].fill(true);
                    c
                })
                .collect();
            CommSync::new(d.comm(), &layout).global_sums(&mine).unwrap()
        });
        for total in out {
            assert!(total.produced[..4].iter().all(|&p| p));
            assert!(total.produced[4..].iter().all(|&p| !p));
            let got: [f64; 4] = total.sums[..4].try_into().unwrap();
            assert_eq!(
                got.map(f64::to_bits),
                want.map(f64::to_bits),
                "{ranks} ranks: {got:?} vs {want:?}"
            );
        }
    }
    // The order matters for these values (so the assertion above can fail).
    let rev: f64 = (0..model.len())
        .rev()
        .map(|p| contrib(p)[0])
        .fold(0.0, |a, c| a + c);
    assert_ne!(rev.to_bits(), want[0].to_bits());
}
