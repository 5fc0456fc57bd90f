//! Hostile use of `bf16`/`f16` `Var`s: a gradient of another dtype or shape, dtypes an `f32`
//! optimizer cannot update, one `Var` under two names, a reshaped `Var`, empty and
//! one-element `Var`s, and NaN/infinite 16-bit gradients under each `NonFinitePolicy`. Every
//! refusal is a clear `OptimError` with the `Var`s (bit for bit) and the state as they were;
//! the odd-but-valid cases give hand-computed values (SGD, lr 0.5: each step with gradient 1
//! subtracts 0.5, exactly in `bf16` and `f16` at these magnitudes) and agree bit for bit with
//! the whole-tensor staging.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use optim_candle::{CandleConfig, CandleOptimizer, CandleUpdate};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig, Sgd, SgdConfig};
use optim_dsl::{NonFinitePolicy, ShapeChange};
use optim_runtime::OptimError;

/// SGD with learning rate 0.5.
fn sgd() -> Sgd<f32> {
    Sgd::<f32>::new(SgdConfig {
        lr: 0.5.into(),
        ..Default::default()
    })
    .unwrap()
}

/// AdamW with a learning rate large enough to move `bf16` values near 2 (their spacing there
/// is 2^-6).
fn adamw() -> AdamW<f32> {
    AdamW::<f32>::new(AdamWConfig {
        lr: 0.05.into(),
        ..Default::default()
    })
    .unwrap()
}

/// A `Var` of `dtype` and `shape` holding `values` (converted from `f32`).
fn var(values: &[f32], shape: &[usize], dtype: DType) -> Var {
    let t = Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap();
    Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
}

/// A tensor like `v` (its shape) of `dtype`, every element `x`.
fn full(v: &Var, x: f32, dtype: DType) -> Tensor {
    let n = v.elem_count();
    Tensor::from_vec(vec![x; n], v.shape(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The values of `v`, widened exactly to `f32`, as bits.
fn bits(v: &Var) -> Vec<u32> {
    let w = v.as_tensor().to_dtype(DType::F32).unwrap();
    let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    w.iter().map(|x| x.to_bits()).collect()
}

/// The values of `v` widened to `f32`.
fn vals(v: &Var) -> Vec<f32> {
    bits(v).into_iter().map(f32::from_bits).collect()
}

/// The whole optimizer state as text (floats by their exact shortest decimal, NaN-safe).
fn state<O: DslOptimizer<f32>>(o: &O) -> String {
    format!("{:?}", o.opt_state())
}

/// A `bf16` `Var` with an `f32` gradient (and the other way round, and `f16` with `bf16`): a
/// `ShapeMismatch` naming it and the dtypes, nothing written, no state created; the same for a
/// gradient of another shape.
#[test]
fn a_gradient_of_another_dtype_or_shape_is_refused() {
    let cases = [
        (DType::BF16, DType::F32),
        (DType::F32, DType::BF16),
        (DType::F16, DType::BF16),
        (DType::BF16, DType::F16),
    ];
    for (vd, gd) in cases {
        let good = var(&[1.0, 2.0], &[2], DType::BF16);
        let v = var(&[1.0, 2.0, 3.0, 4.0], &[2, 2], vd);
        let mut g = GradStore::default();
        g.insert(&good, full(&good, 1.0, DType::BF16));
        g.insert(&v, full(&v, 1.0, gd));
        let (b0, good0) = (bits(&v), bits(&good));
        let mut opt = sgd();
        let err = opt
            .update_vars([("good", &good), ("v", &v)], &g)
            .unwrap_err();
        assert!(
            matches!(&err, OptimError::ShapeMismatch { param, detail } if param == "v" && detail.contains("dtype")),
            "{vd:?} with {gd:?}: {err:?}"
        );
        assert_eq!(bits(&v), b0);
        assert_eq!(bits(&good), good0);
        assert!(opt.opt_state().params.is_empty());
        assert_eq!(opt.opt_state().step, 0);
    }
    // another shape, same element count
    let v = var(&[1.0, 2.0, 3.0, 4.0], &[2, 2], DType::BF16);
    let mut g = GradStore::default();
    let wrong = Tensor::from_vec(vec![1.0f32; 4], &[4], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    g.insert(&v, wrong);
    let b0 = bits(&v);
    let mut opt = sgd();
    let err = opt.update_vars([("v", &v)], &g).unwrap_err();
    assert!(
        matches!(&err, OptimError::ShapeMismatch { param, .. } if param == "v"),
        "{err:?}"
    );
    assert_eq!(bits(&v), b0);
    assert!(opt.opt_state().params.is_empty());
}

/// `f64` and integer `Var`s under an `f32` optimizer, beside a good `bf16` `Var`: refused with
/// `InvalidUse` naming the `Var` and its dtype; the good `Var` is not written.
#[test]
fn dtypes_an_f32_optimizer_cannot_update_are_refused() {
    for bad in [DType::F64, DType::U32, DType::U8] {
        let good = var(&[1.0, 2.0], &[2], DType::BF16);
        let v = var(&[1.0, 2.0, 3.0], &[3], bad);
        let mut g = GradStore::default();
        g.insert(&good, full(&good, 1.0, DType::BF16));
        g.insert(&v, full(&v, 1.0, bad));
        let (good0, v0) = (bits(&good), bits(&v));
        let mut opt = sgd();
        let err = opt
            .update_vars([("good", &good), ("v", &v)], &g)
            .unwrap_err();
        assert!(
            matches!(&err, OptimError::InvalidUse(m) if m.contains("`v`") && m.contains(bad.as_str())),
            "{bad:?}: {err:?}"
        );
        assert_eq!(bits(&good), good0, "{bad:?}");
        assert_eq!(bits(&v), v0, "{bad:?}");
        assert!(opt.opt_state().params.is_empty());
    }
}

/// One 16-bit `Var` under two names in one step: refused before any lock is taken (it would
/// wait on itself), nothing written.
#[test]
fn one_var_under_two_names_is_refused() {
    let v = var(&[1.0, 2.0], &[2], DType::F16);
    let mut g = GradStore::default();
    g.insert(&v, full(&v, 1.0, DType::F16));
    let b0 = bits(&v);
    let mut opt = sgd();
    let err = opt.update_vars([("a", &v), ("b", &v)], &g).unwrap_err();
    assert!(
        matches!(&err, OptimError::InvalidUse(m) if m.contains("share one storage")),
        "{err:?}"
    );
    assert_eq!(bits(&v), b0);
    assert!(opt.opt_state().params.is_empty());
}

/// Empty, scalar and one-element `bf16`/`f16` `Var`s step (by hand), beside a larger one, and
/// agree bit for bit with the whole-tensor staging under AdamW.
#[test]
fn empty_and_one_element_16_bit_vars_step() {
    for dtype in [DType::BF16, DType::F16] {
        let make = || {
            vec![
                var(&[], &[0], dtype),
                var(&[2.0], &[], dtype),
                var(&[2.0], &[1], dtype),
                var(&[], &[0, 3], dtype),
                var(&[2.0; 300], &[3, 100], dtype),
            ]
        };
        let names = ["e0", "s", "one", "e1", "big"];
        let vs = make();
        let mut opt = sgd();
        let mut g = GradStore::default();
        for v in &vs {
            g.insert(v, full(v, 1.0, dtype));
        }
        opt.update_vars(names.iter().copied().zip(&vs), &g).unwrap();
        assert_eq!(vals(&vs[1]), [1.5], "{dtype:?}");
        assert_eq!(vals(&vs[2]), [1.5], "{dtype:?}");
        assert_eq!(vals(&vs[4]), vec![1.5; 300], "{dtype:?}");
        assert!(vals(&vs[0]).is_empty() && vals(&vs[3]).is_empty());
        assert_eq!(opt.opt_state().param("e1").unwrap().len, 0);
        assert_eq!(opt.opt_state().step, 1);

        // AdamW: blocks against the whole-tensor staging, bit for bit
        let (va, vb) = (make(), make());
        let new = |vars: &[Var], whole: bool| {
            let mut o =
                CandleOptimizer::new(vars.to_vec(), CandleConfig::new(adamw()).with_names(names))
                    .unwrap();
            o.set_stage_whole(whole);
            o
        };
        let (mut blocks, mut staged) = (new(&va, false), new(&vb, true));
        for t in 0..3 {
            for (o, vars) in [(&mut blocks, &va), (&mut staged, &vb)] {
                let mut g = GradStore::default();
                for v in vars {
                    g.insert(v, full(v, 0.25 * (t + 1) as f32, dtype));
                }
                o.step(&g).unwrap();
            }
            let b: Vec<_> = va.iter().map(bits).collect();
            let s: Vec<_> = vb.iter().map(bits).collect();
            assert_eq!(b, s, "{dtype:?} step {t}");
            assert_eq!(state(blocks.inner()), state(staged.inner()));
        }
        assert_ne!(vals(&va[1]), [2.0], "moved");
    }
}

/// A NaN or an infinity in a 16-bit gradient, beside an `f32` `Var`, under each policy:
/// `Error` refuses naming it and `SkipStep` skips (counted), both leaving every `Var` and the
/// state as they were; `Propagate` writes the non-finite result.
#[test]
fn non_finite_16_bit_gradients_follow_each_policy() {
    for dtype in [DType::BF16, DType::F16] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for policy in [
                NonFinitePolicy::Propagate,
                NonFinitePolicy::SkipStep,
                NonFinitePolicy::Error,
            ] {
                let what = format!("{dtype:?} {bad} {policy:?}");
                let w = var(&[1.0; 3], &[3], DType::F32);
                let h = var(&[1.0; 2500], &[50, 50], dtype);
                let names = vec!["h".to_string(), "w".to_string()];
                let mut opt = CandleOptimizer::new(
                    vec![h.clone(), w.clone()],
                    CandleConfig::new(sgd()).with_names(names),
                )
                .unwrap();
                opt.inner_mut().set_non_finite_policy(policy);
                let mut g = GradStore::default();
                g.insert(&w, full(&w, 1.0, DType::F32));
                g.insert(&h, full(&h, 1.0, dtype));
                opt.step(&g).unwrap();
                let (h0, w0, s0) = (bits(&h), bits(&w), state(opt.inner()));
                let mut vals_g = vec![1.0f32; 2500];
                vals_g[1234] = bad;
                let bad_g = Tensor::from_vec(vals_g, &[50, 50], &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                g.insert(&h, bad_g);
                let r = opt.update(&g);
                match policy {
                    NonFinitePolicy::Propagate => {
                        r.unwrap();
                        let v = vals(&h);
                        assert!(!v[1234].is_finite(), "{what}");
                        assert_eq!(v[0], 0.0, "{what}");
                        assert_eq!(vals(&w), [0.0; 3], "{what}");
                    }
                    NonFinitePolicy::SkipStep => {
                        r.unwrap();
                        assert_eq!(bits(&h), h0, "{what}");
                        assert_eq!(bits(&w), w0, "{what}");
                        assert_eq!(opt.inner().opt_state().skipped_steps, 1, "{what}");
                        opt.inner_mut().opt_state_mut().skipped_steps = 0;
                        assert_eq!(state(opt.inner()), s0, "{what}");
                    }
                    NonFinitePolicy::Error => {
                        let err = r.unwrap_err();
                        assert!(
                            matches!(&err, OptimError::NonFiniteGradient { param } if param == "h"),
                            "{what}: {err:?}"
                        );
                        assert_eq!(bits(&h), h0, "{what}");
                        assert_eq!(bits(&w), w0, "{what}");
                        assert_eq!(state(opt.inner()), s0, "{what}");
                    }
                }
            }
        }
    }
}

/// A 16-bit `Var` replaced, under the same name, by one of another shape: `ShapeMismatch`
/// under the default `ShapeChange::Error` (nothing written), a fresh state under `Reset`.
#[test]
fn a_reshaped_16_bit_var_under_the_same_name() {
    let mut opt = sgd();
    let a = var(&[2.0; 4], &[4], DType::BF16);
    let mut g = GradStore::default();
    g.insert(&a, full(&a, 1.0, DType::BF16));
    opt.update_vars([("p", &a)], &g).unwrap();
    let b = var(&[2.0; 6], &[2, 3], DType::BF16);
    let mut g = GradStore::default();
    g.insert(&b, full(&b, 1.0, DType::BF16));
    let s0 = state(&opt);
    let err = opt.update_vars([("p", &b)], &g).unwrap_err();
    assert!(
        matches!(&err, OptimError::ShapeMismatch { param, .. } if param == "p"),
        "{err:?}"
    );
    assert_eq!(vals(&b), [2.0; 6]);
    assert_eq!(state(&opt), s0);
    opt.set_shape_change(ShapeChange::Reset);
    opt.update_vars([("p", &b)], &g).unwrap();
    assert_eq!(vals(&b), [1.5; 6]);
    let ps = opt.opt_state().param("p").unwrap();
    assert_eq!((ps.len, ps.step), (6, 1));
}

/// Metrics on: 16-bit `Var`s are staged whole (not refused), with the values of the blocks.
#[test]
fn metrics_on_stage_16_bit_vars_whole() {
    let v = var(&[2.0; 5], &[5], DType::F16);
    let mut g = GradStore::default();
    g.insert(&v, full(&v, 1.0, DType::F16));
    let mut opt = sgd();
    opt.set_metrics(true);
    opt.update_vars([("p", &v)], &g).unwrap();
    assert_eq!(vals(&v), [1.5; 5]);
    assert!(opt.opt_state().metrics_on());
}
