//! Matrix primitives never panic (issue 10, item 7, matrix part): every primitive, called
//! through the generated code's path (`matrix::run`) on random shapes (sides of 0 and 1, up to
//! 12 × 12 and 3-D), random values (NaN, ±inf, huge) and random configurations; outputs are
//! finite whenever the inputs are finite and moderate and the configuration is sane. Plus the
//! `MatrixWord::check` hook: zero-size shapes and bad configurations are refused with a
//! message naming the word.

use optim_dsl::matrix::{
    run, Call, Eigenbasis, EigenbasisConfig, Factored, FactoredConfig, Kfac, KfacConfig, Kron,
    KronConfig, MatrixWord, Orthogonalize, OrthogonalizeConfig, Phase, Primitive, Rotate,
    RotateConfig, Src, Unrotate,
};
use optim_dsl::state::KronFactors;
use optim_dsl::{Float, ParamInfo, ParamState};
use proptest::prelude::*;

use crate::no_panic::{self, call, cast, finite, Expect};

/// Runs primitive `P` for `steps` steps on fresh state; returns the last output.
fn drive<E: Float, P: Primitive<E> + 'static>(
    cfg: &P::Config,
    shape: &[usize],
    grads: &[Vec<E>],
    ps: &mut ParamState<E>,
) -> Vec<E> {
    let info = ParamInfo::new("p", shape);
    let n = grads[0].len();
    let slots: Vec<usize> = (0..P::STATE.len()).collect();
    if ps.buffers.len() < slots.len() {
        ps.buffers.resize(slots.len(), Vec::new());
    }
    ps.ensure_temp(0, n);
    for (t, g) in grads.iter().enumerate() {
        ps.step = t as u64 + 1;
        run::<E, P>(cfg, Phase::Barrier, call(&slots), ps, &[], g, info);
    }
    ps.temps[0].clone()
}

#[derive(Debug, Clone)]
struct Configs {
    kron: KronConfig,
    factored: FactoredConfig,
    ortho: OrthogonalizeConfig,
    kfac: KfacConfig,
    basis: EigenbasisConfig,
}

/// Random configurations; `sane` keeps them where finite outputs are promised.
fn configs(sane: bool) -> impl Strategy<Value = Configs> {
    let any_f = prop_oneof![
        -2.0f64..2.0,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(0.0),
        Just(1e-300)
    ];
    let (a, b, c, d, e, f, g) = if sane {
        (
            (0.0f64..1.0).boxed(),
            prop_oneof![Just(None), (0.0f64..0.99).prop_map(Some)].boxed(),
            prop_oneof![Just(None), (1e-10f64..1e-3).prop_map(Some)].boxed(),
            Just(None).boxed(),
            (1e-12f64..1.0).boxed(),
            (0.0f64..0.99).boxed(),
            (1usize..8).boxed(),
        )
    } else {
        (
            any_f.clone().boxed(),
            proptest::option::of(any_f.clone()).boxed(),
            proptest::option::of(any_f.clone()).boxed(),
            proptest::option::of(any_f.clone()).boxed(),
            any_f.clone().boxed(),
            any_f.clone().boxed(),
            (0usize..12).boxed(),
        )
    };
    (a, b, c, d, e, f, g, 0u64..4, 0usize..14).prop_map(
        move |(eps, beta, rtol, exponent, feps, fbeta, steps, freq, max_dim)| Configs {
            kron: KronConfig {
                beta,
                eps,
                rank_rtol: rtol,
                update_freq: freq,
                exponent,
                max_dim,
            },
            factored: FactoredConfig {
                beta: fbeta,
                eps: feps,
            },
            ortho: OrthogonalizeConfig {
                steps,
                eps: if sane { feps } else { eps },
                ..Default::default()
            },
            kfac: KfacConfig {
                damping: if sane { eps } else { feps },
                rank_rtol: rtol,
            },
            basis: EigenbasisConfig {
                beta: fbeta,
                update_freq: freq,
                max_dim,
            },
        },
    )
}

/// Every primitive on `shape`; asserts finite outputs when `expect.finite_outputs`, and finite
/// Kronecker and eigenbasis state (bad input is skipped, never stored) when
/// `expect.finite_state`.
fn exercise<E: Float>(cfg: &Configs, shape: &[usize], grads: &[Vec<E>], expect: Expect) {
    let (expect_finite, sane_cfg) = (expect.finite_outputs, expect.finite_state);
    let n = grads[0].len();
    let info = ParamInfo::new("p", shape);
    let rows = shape.first().copied().unwrap_or(1);
    let cols = if shape.len() < 2 {
        1
    } else {
        shape[1..].iter().product()
    };

    let mut ps = ParamState::<E>::new(0, n);
    let out = drive::<E, Kron>(&cfg.kron, shape, grads, &mut ps);
    assert!(
        !expect_finite || finite(&out),
        "kron {shape:?} {cfg:?}: {out:?}"
    );
    assert!(!sane_cfg || finite(&ps.buffers[0]), "kron stats {shape:?}");
    assert!(!sane_cfg || finite(&ps.buffers[1]), "kron roots {shape:?}");

    let mut ps = ParamState::<E>::new(0, n);
    let out = drive::<E, Factored>(&cfg.factored, shape, grads, &mut ps);
    assert!(
        !expect_finite || finite(&out),
        "factored {shape:?} {cfg:?}: {out:?}"
    );

    let mut ps = ParamState::<E>::new(0, n);
    let out = drive::<E, Orthogonalize>(&cfg.ortho, shape, grads, &mut ps);
    assert!(
        !expect_finite || finite(&out),
        "orthogonalize {shape:?}: {out:?}"
    );

    // K-FAC with user factors of the matrix view (Gram matrices of the gradient: PSD)
    let mut ps = ParamState::<E>::new(0, n);
    let g = &grads[0];
    let gram = |d: usize, left: bool| -> Vec<E> {
        let mut h = vec![E::zero(); d * d];
        for i in 0..d {
            for j in 0..d {
                let mut s = E::zero();
                for k in 0..(if left { cols } else { rows }) {
                    let (a, b) = if left {
                        (g[i * cols + k], g[j * cols + k])
                    } else {
                        (g[k * cols + i], g[k * cols + j])
                    };
                    s += a * b;
                }
                h[i * d + j] = s;
            }
        }
        h
    };
    if n > 0 && n == rows * cols {
        ps.factors = Some(KronFactors {
            left: Some(gram(rows, true)),
            right: Some(gram(cols, false)),
            dirty: true,
            probe: None,
        });
    }
    let out = drive::<E, Kfac>(&cfg.kfac, shape, grads, &mut ps);
    assert!(
        !expect_finite || finite(&out),
        "kfac {shape:?} {cfg:?}: {out:?}"
    );

    // eigenbasis: init, then a rotation and its inverse, then the end-of-step update
    let mut ps = ParamState::<E>::new(0, n);
    ps.buffers.resize(3, Vec::new());
    ps.buffers[2] = grads[0].clone();
    ps.ensure_temp(0, n);
    ps.ensure_temp(1, n);
    for (t, g) in grads.iter().enumerate() {
        ps.step = t as u64 + 1;
        let basis = Call {
            input: Src::Grad,
            out: None,
            state: &[0, 1],
            basis_q: None,
            rotated: &[2],
            batch: 0,
        };
        run::<E, Eigenbasis>(&cfg.basis, Phase::Init, basis, &mut ps, &[], g, info);
        let rot = RotateConfig {
            max_dim: cfg.basis.max_dim,
        };
        let r = Call {
            input: Src::Grad,
            out: Some(0),
            state: &[],
            basis_q: Some(1),
            rotated: &[],
            batch: 0,
        };
        run::<E, Rotate>(&rot, Phase::Barrier, r, &mut ps, &[], g, info);
        let u = Call {
            input: Src::Temp(0),
            out: Some(1),
            ..r
        };
        run::<E, Unrotate>(&rot, Phase::Barrier, u, &mut ps, &[], g, info);
        run::<E, Eigenbasis>(&cfg.basis, Phase::Finish, basis, &mut ps, &[], g, info);
        if sane_cfg {
            assert!(finite(&ps.buffers[0]), "eigenbasis stats {shape:?}");
            assert!(finite(&ps.buffers[1]), "eigenbasis q {shape:?}");
        }
        if expect_finite {
            assert!(finite(&ps.temps[1]), "rotate/unrotate {shape:?}");
            assert!(finite(&ps.buffers[1]), "eigenbasis q {shape:?}");
            // unrotate(rotate(g)) = g for an orthogonal basis
            for (a, b) in ps.temps[1].iter().zip(g) {
                let (a, b) = (a.as_f64(), b.as_f64());
                assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}

fn case(hostile: bool, sane: bool) -> impl Strategy<Value = (Vec<usize>, Vec<Vec<f64>>, Configs)> {
    no_panic::case(configs(sane), hostile, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Anything goes: hostile values and configurations, in `f32` and `f64`: no panic.
    #[test]
    fn matrix_primitives_never_panic((shape, grads, cfg) in case(true, false)) {
        exercise::<f32>(&cfg, &shape, &grads.iter().map(|g| cast(g)).collect::<Vec<_>>(), Expect { finite_outputs: false, finite_state: false });
        exercise::<f64>(&cfg, &shape, &grads.iter().map(|g| cast(g)).collect::<Vec<_>>(), Expect { finite_outputs: false, finite_state: false });
    }

    /// Hostile values (NaN, ±inf, 1e30) with sane configurations: no panic, and the Kronecker
    /// statistics, roots and eigenbases stay finite.
    #[test]
    fn hostile_inputs_never_enter_kronecker_state((shape, grads, cfg) in case(true, true)) {
        exercise::<f32>(&cfg, &shape, &grads.iter().map(|g| cast(g)).collect::<Vec<_>>(), Expect { finite_outputs: false, finite_state: true });
        exercise::<f64>(&cfg, &shape, &grads.iter().map(|g| cast(g)).collect::<Vec<_>>(), Expect { finite_outputs: false, finite_state: true });
    }

    /// Finite moderate inputs and sane configurations give finite outputs and statistics.
    #[test]
    fn matrix_primitives_stay_finite_on_finite_inputs((shape, grads, cfg) in case(false, true)) {
        exercise::<f32>(&cfg, &shape, &grads.iter().map(|g| cast(g)).collect::<Vec<_>>(), Expect { finite_outputs: true, finite_state: true });
        exercise::<f64>(&cfg, &shape, &grads.iter().map(|g| cast(g)).collect::<Vec<_>>(), Expect { finite_outputs: true, finite_state: true });
    }
}

/// The check hook refuses zero-size shapes for every word, with the word and the parameter in
/// the message, and accepts scalars, vectors, unit axes and 3-D tensors.
#[test]
fn check_refuses_zero_size_shapes_naming_the_word() {
    fn refused<W: MatrixWord>(shape: &[usize]) -> Option<String> {
        W::check(&W::Config::default(), ParamInfo::new("layer.w", shape)).err()
    }
    fn all(shape: &[usize]) -> Vec<(&'static str, Option<String>)> {
        vec![
            (Kron::WORD, refused::<Kron>(shape)),
            (Factored::WORD, refused::<Factored>(shape)),
            (Orthogonalize::WORD, refused::<Orthogonalize>(shape)),
            (Kfac::WORD, refused::<Kfac>(shape)),
            (Eigenbasis::WORD, refused::<Eigenbasis>(shape)),
            (Rotate::WORD, refused::<Rotate>(shape)),
            (Unrotate::WORD, refused::<Unrotate>(shape)),
        ]
    }
    for shape in [&[0usize][..], &[3, 0], &[0, 4], &[2, 0, 5]] {
        for (word, err) in all(shape) {
            let err = err.unwrap_or_else(|| panic!("{word} accepted {shape:?}"));
            assert!(
                err.contains(&format!("`{word}`"))
                    && err.contains("`layer.w`")
                    && err.contains("dimension of size 0"),
                "{err}"
            );
        }
    }
    for shape in [&[][..], &[1], &[7], &[1, 5], &[5, 1], &[3, 4], &[2, 3, 4]] {
        for (word, err) in all(shape) {
            assert_eq!(err, None, "{word} on {shape:?}");
        }
    }
    let too_big = [usize::MAX, 3];
    assert!(refused::<Kron>(&too_big)
        .unwrap()
        .contains("too many elements"));
}

/// The check hook refuses configurations a primitive cannot honour.
#[test]
fn check_refuses_bad_configurations() {
    let info = ParamInfo::new("w", &[4, 3]);
    let kron = |f: fn(&mut KronConfig)| {
        let mut c = KronConfig::default();
        f(&mut c);
        Kron::check(&c, info)
    };
    assert!(kron(|_| ()).is_ok());
    assert!(kron(|c| c.eps = 0.0).is_ok());
    for (bad, what) in [
        (kron(|c| c.eps = -1e-6), "eps"),
        (kron(|c| c.eps = f64::NAN), "eps"),
        (kron(|c| c.beta = Some(1.5)), "beta"),
        (kron(|c| c.rank_rtol = Some(-1.0)), "rank_rtol"),
        (kron(|c| c.rank_rtol = Some(f64::INFINITY)), "rank_rtol"),
        (kron(|c| c.exponent = Some(0.0)), "exponent"),
    ] {
        let err = bad.unwrap_err();
        assert!(
            err.contains("`kron_precondition`") && err.contains(what),
            "{err}"
        );
    }
    let factored = FactoredConfig {
        beta: f64::NAN,
        eps: 1e-30,
    };
    let kfac = KfacConfig {
        damping: f64::NAN,
        rank_rtol: None,
    };
    let orthogonalize = OrthogonalizeConfig {
        eps: -1.0,
        ..Default::default()
    };
    let eigenbasis = EigenbasisConfig {
        beta: -0.5,
        ..Default::default()
    };
    let refusals = [
        Factored::check(&factored, info),
        Orthogonalize::check(&orthogonalize, info),
        Kfac::check(&kfac, info),
        Eigenbasis::check(&eigenbasis, info),
    ];
    let expected = [
        ("factored_second_moment", "beta"),
        ("orthogonalize", "eps"),
        ("kfac_precondition", "damping"),
        ("kron_eigenbasis", "beta"),
    ];
    for (checked, (word, what)) in refusals.into_iter().zip(expected) {
        let err = checked.unwrap_err();
        assert!(
            err.contains(&format!("`{word}`")) && err.contains(what),
            "{err}"
        );
    }
}
