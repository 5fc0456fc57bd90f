//! The issue-11 matrix primitives (`eigen_sign`, `psgd_precondition`,
//! `low_rank_orthonormalize`) never panic, as `matrix_no_panic.rs` asks of the older ones: called
//! through the generated code's path (`matrix::run`) on random shapes (sides of 0 and 1, up to
//! 12 × 12 and 3-D), random values (NaN, ±inf, 1e30) and random configurations. With sane
//! configurations their state stays finite whatever the gradient (bad input is skipped, never
//! stored), and finite moderate gradients give finite outputs.

use optim_dsl::matrix::{
    run, EigenSign, EigenSignConfig, LowRank, LowRankConfig, MatrixWord, Phase, Primitive, Psgd,
    PsgdConfig,
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

/// Word `W` (`cfg`, state slots `slots`) on fresh state for every step of `grads`: each of
/// `phases` in turn, `check(phase, state)` after each.
fn exercise_word<E: Float, W: Primitive<E> + 'static>(
    cfg: &W::Config,
    slots: &[usize],
    phases: &[Phase],
    (grads, info): (&[Vec<E>], ParamInfo<'_>),
    mut check: impl FnMut(Phase, &ParamState<E>),
) {
    let mut ps = fresh::<E, W>(grads[0].len());
    for (t, g) in grads.iter().enumerate() {
        ps.step = t as u64 + 1;
        for &phase in phases {
            run::<E, W>(cfg, phase, call(slots), &mut ps, &[], g, info);
            check(phase, &ps);
        }
    }
}

/// Each primitive for every step of `grads` on fresh state (`eigen_sign` also after the step,
/// on the gradient, as the generated code calls it). Asserts finite state after every step
/// when `expect.finite_state`, and finite outputs when `expect.finite_outputs`.
fn exercise<E: Float>(cfg: &Configs, shape: &[usize], grads: &[Vec<E>], expect: Expect) {
    let input = (grads, ParamInfo::new("p", shape));
    let output_ok = |ps: &ParamState<E>| !expect.finite_outputs || finite(&ps.temps[0]);
    let state_ok =
        |ps: &ParamState<E>| !expect.finite_state || ps.buffers.iter().all(|b| finite(b));
    let phases = [Phase::Barrier, Phase::Finish];
    exercise_word::<E, EigenSign>(&cfg.sign, &[0, 1], &phases, input, |phase, ps| {
        if phase == Phase::Barrier {
            assert!(output_ok(ps), "eigen_sign {shape:?} {cfg:?}");
        } else {
            assert!(state_ok(ps), "eigen_sign state {shape:?} {cfg:?}");
        }
    });
    exercise_word::<E, Psgd>(&cfg.psgd, &[0], &phases[..1], input, |_, ps| {
        assert!(state_ok(ps), "psgd factors {shape:?} {cfg:?}");
        assert!(output_ok(ps), "psgd {shape:?} {cfg:?}");
    });
    exercise_word::<E, LowRank>(&cfg.low_rank, &[0, 1], &phases[..1], input, |_, ps| {
        assert!(state_ok(ps), "low_rank state {shape:?} {cfg:?}");
        assert!(output_ok(ps), "low_rank {shape:?} {cfg:?}");
    });
}

/// `C::default()` changed by `f`.
fn with<C: Default>(f: fn(&mut C)) -> C {
    let mut c = C::default();
    f(&mut c);
    c
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
    // the default configuration with one bad value: the error names the word and the argument
    let sign = |f: fn(&mut EigenSignConfig)| EigenSign::check(&with(f), w);
    let psgd = |f: fn(&mut PsgdConfig)| Psgd::check(&with(f), w);
    let low_rank = |f: fn(&mut LowRankConfig)| LowRank::check(&with(f), w);
    let rejected: [(Result<(), String>, &[&str]); 7] = [
        (sign(|c| c.beta = 1.5), &["eigen_sign", "beta"]),
        (sign(|c| c.eps = f64::NAN), &["eps"]),
        (
            psgd(|c| c.precond_init_scale = 0.0),
            &["psgd_precondition", "precond_init_scale"],
        ),
        (psgd(|c| c.precond_lr = -0.1), &["precond_lr"]),
        (
            low_rank(|c| c.mu = -0.5),
            &["low_rank_orthonormalize", "mu"],
        ),
        (
            low_rank(|c| c.rank_fraction = 0.0),
            &["low_rank_orthonormalize", "rank_fraction"],
        ),
        (
            low_rank(|c| c.epsilon = f64::INFINITY),
            &["low_rank_orthonormalize", "epsilon"],
        ),
    ];
    for (err, words) in rejected {
        optim_tests::assert_err_has(err, words);
    }
}
