//! The issue-11 matrix primitives (`eigen_sign`, `psgd_precondition`,
//! `low_rank_orthonormalize`) never panic, as `matrix_no_panic.rs` asks of the older ones: called
//! through the generated code's path (`matrix::run`) on random shapes (sides of 0 and 1, up to
//! 12 × 12 and 3-D), random values (NaN, ±inf, 1e30) and random configurations. With sane
//! configurations their state stays finite whatever the gradient (bad input is skipped, never
//! stored), and finite moderate gradients give finite outputs.

use optim_dsl::matrix::{
    run, EigenSign, EigenSignConfig, LowRank, LowRankConfig, MatrixWord, Phase, Psgd, PsgdConfig,
};
use optim_dsl::{Float, ParamInfo, ParamState};
use proptest::prelude::*;

use crate::no_panic::{self, call, cast, finite, Expect};

#[derive(Debug, Clone)]
struct Configs {
    sign: EigenSignConfig,
    psgd: PsgdConfig,
    low_rank: LowRankConfig,
}

/// Random configurations; `sane` keeps them where finite state and outputs are promised.
fn configs(sane: bool) -> BoxedStrategy<Configs> {
    let any_f = || {
        prop_oneof![
            -2.0f64..2.0,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(0.0),
            Just(1e-300)
        ]
        .boxed()
    };
    let (beta, eps, lr, scale, mu, frac, epsilon) = if sane {
        (
            (0.0f64..1.0).boxed(),
            (0.0f64..1e-3).boxed(),
            (0.0f64..0.5).boxed(),
            (0.1f64..10.0).boxed(),
            (0.0f64..=1.0).boxed(),
            (0.05f64..=1.0).boxed(),
            (1e-12f64..1e-3).boxed(),
        )
    } else {
        (
            any_f(),
            any_f(),
            any_f(),
            any_f(),
            any_f(),
            any_f(),
            any_f(),
        )
    };
    let counts = (
        0u64..4,
        0usize..14,
        0usize..13,
        0usize..4,
        0usize..5,
        0u64..4,
    );
    (
        (beta, eps, lr, scale),
        (mu, frac, epsilon),
        counts,
        any::<bool>(),
    )
        .prop_map(
            |((beta, eps, lr, scale), (mu, frac, epsilon), c, update)| Configs {
                sign: EigenSignConfig {
                    beta,
                    update_freq: c.0,
                    max_dim: c.1,
                    eps,
                },
                psgd: PsgdConfig {
                    precond_lr: lr,
                    precond_init_scale: scale,
                    max_size_triangular: c.2,
                    min_ndim_triangular: c.3,
                    update,
                    seed: c.5,
                },
                low_rank: LowRankConfig {
                    mu,
                    rank_fraction: frac,
                    rank_multiple_of: c.4,
                    power_iters: c.5,
                    epsilon,
                    seed: c.5,
                },
            },
        )
        .boxed()
}

/// A parameter state with the buffers of word `W` and scratch buffer 0.
fn fresh<E: Float, W: MatrixWord>(n: usize) -> ParamState<E> {
    let mut ps = ParamState::<E>::new(0, n);
    ps.buffers.resize(W::STATE.len(), Vec::new());
    ps.ensure_temp(0, n);
    ps
}

/// Each primitive for every step of `grads` on fresh state (`eigen_sign` also after the step,
/// on the gradient, as the generated code calls it). Asserts finite state after every step
/// when `expect.finite_state`, and finite outputs when `expect.finite_outputs`.
fn exercise<E: Float>(cfg: &Configs, shape: &[usize], grads: &[Vec<E>], expect: Expect) {
    let (expect_finite, sane_cfg) = (expect.finite_outputs, expect.finite_state);
    let n = grads[0].len();
    let info = ParamInfo::new("p", shape);
    let states = |ps: &ParamState<E>| ps.buffers.iter().all(|b| finite(b));

    let mut ps = fresh::<E, EigenSign>(n);
    for (t, g) in grads.iter().enumerate() {
        ps.step = t as u64 + 1;
        run::<E, EigenSign>(
            &cfg.sign,
            Phase::Barrier,
            call(&[0, 1]),
            &mut ps,
            &[],
            g,
            info,
        );
        assert!(
            !expect_finite || finite(&ps.temps[0]),
            "eigen_sign {shape:?} {cfg:?}"
        );
        run::<E, EigenSign>(
            &cfg.sign,
            Phase::Finish,
            call(&[0, 1]),
            &mut ps,
            &[],
            g,
            info,
        );
        assert!(
            !sane_cfg || states(&ps),
            "eigen_sign state {shape:?} {cfg:?}"
        );
    }

    let mut ps = fresh::<E, Psgd>(n);
    for (t, g) in grads.iter().enumerate() {
        ps.step = t as u64 + 1;
        run::<E, Psgd>(&cfg.psgd, Phase::Barrier, call(&[0]), &mut ps, &[], g, info);
        assert!(!sane_cfg || states(&ps), "psgd factors {shape:?} {cfg:?}");
        assert!(
            !expect_finite || finite(&ps.temps[0]),
            "psgd {shape:?} {cfg:?}"
        );
    }

    let mut ps = fresh::<E, LowRank>(n);
    for (t, g) in grads.iter().enumerate() {
        ps.step = t as u64 + 1;
        run::<E, LowRank>(
            &cfg.low_rank,
            Phase::Barrier,
            call(&[0, 1]),
            &mut ps,
            &[],
            g,
            info,
        );
        assert!(!sane_cfg || states(&ps), "low_rank state {shape:?} {cfg:?}");
        assert!(
            !expect_finite || finite(&ps.temps[0]),
            "low_rank {shape:?} {cfg:?}"
        );
    }
}

fn case(hostile: bool, sane: bool) -> impl Strategy<Value = (Vec<usize>, Vec<Vec<f64>>, Configs)> {
    no_panic::case(configs(sane), hostile, 1..5)
}

fn both(cfg: &Configs, shape: &[usize], grads: &[Vec<f64>], expect: Expect) {
    let g32: Vec<Vec<f32>> = grads.iter().map(|g| cast(g)).collect();
    exercise::<f32>(cfg, shape, &g32, expect);
    let g64: Vec<Vec<f64>> = grads.iter().map(|g| cast(g)).collect();
    exercise::<f64>(cfg, shape, &g64, expect);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Anything goes: hostile values and configurations, in `f32` and `f64`: no panic.
    #[test]
    fn matrix2026_primitives_never_panic((shape, grads, cfg) in case(true, false)) {
        both(&cfg, &shape, &grads, Expect { finite_outputs: false, finite_state: false });
    }

    /// Hostile values (NaN, ±inf, 1e30) with sane configurations: no panic, and the Gram
    /// statistics, bases, PSGD factors and Dion momentum and `Q` stay finite.
    #[test]
    fn hostile_inputs_never_enter_matrix2026_state((shape, grads, cfg) in case(true, true)) {
        both(&cfg, &shape, &grads, Expect { finite_outputs: false, finite_state: true });
    }

    /// Finite moderate inputs and sane configurations give finite outputs and state.
    #[test]
    fn matrix2026_primitives_stay_finite_on_finite_inputs((shape, grads, cfg) in case(false, true)) {
        both(&cfg, &shape, &grads, Expect { finite_outputs: true, finite_state: true });
    }
}

/// The check hook refuses zero-size shapes naming the word, and bad configurations naming
/// the argument; it accepts the defaults on scalars, vectors and 3-D tensors.
#[test]
fn check_refuses_zero_size_shapes_and_bad_configurations() {
    let info = |shape: &'static [usize]| ParamInfo::new("layer.w", shape);
    for shape in [&[0usize, 3][..], &[4, 0], &[2, 0, 3]] {
        for (word, err) in [
            (
                EigenSign::WORD,
                EigenSign::check(&Default::default(), info(shape)),
            ),
            (Psgd::WORD, Psgd::check(&Default::default(), info(shape))),
            (
                LowRank::WORD,
                LowRank::check(&Default::default(), info(shape)),
            ),
        ] {
            let err = err.expect_err("a zero-size dimension is refused");
            assert!(
                err.contains(word) && err.contains("layer.w") && err.contains("size 0"),
                "{err}"
            );
        }
    }
    for shape in [&[][..], &[5], &[3, 4], &[2, 3, 4]] {
        assert!(EigenSign::check(&Default::default(), info(shape)).is_ok());
        assert!(Psgd::check(&Default::default(), info(shape)).is_ok());
        assert!(LowRank::check(&Default::default(), info(shape)).is_ok());
    }
    let w = info(&[3, 4]);
    let bad_sign = EigenSignConfig {
        beta: 1.5,
        ..Default::default()
    };
    let err = EigenSign::check(&bad_sign, w).unwrap_err();
    assert!(err.contains("eigen_sign") && err.contains("beta"), "{err}");
    let bad_sign = EigenSignConfig {
        eps: f64::NAN,
        ..Default::default()
    };
    assert!(EigenSign::check(&bad_sign, w).unwrap_err().contains("eps"));
    let bad_psgd = PsgdConfig {
        precond_init_scale: 0.0,
        ..Default::default()
    };
    let err = Psgd::check(&bad_psgd, w).unwrap_err();
    assert!(
        err.contains("psgd_precondition") && err.contains("precond_init_scale"),
        "{err}"
    );
    let bad_psgd = PsgdConfig {
        precond_lr: -0.1,
        ..Default::default()
    };
    assert!(Psgd::check(&bad_psgd, w)
        .unwrap_err()
        .contains("precond_lr"));
    for (cfg, arg) in [
        (
            LowRankConfig {
                mu: -0.5,
                ..Default::default()
            },
            "mu",
        ),
        (
            LowRankConfig {
                rank_fraction: 0.0,
                ..Default::default()
            },
            "rank_fraction",
        ),
        (
            LowRankConfig {
                epsilon: f64::INFINITY,
                ..Default::default()
            },
            "epsilon",
        ),
    ] {
        let err = LowRank::check(&cfg, w).unwrap_err();
        assert!(
            err.contains("low_rank_orthonormalize") && err.contains(arg),
            "{err}"
        );
    }
}
