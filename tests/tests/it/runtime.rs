//! Behaviour of the runtime around the kernels: validation errors (and that they change
//! nothing), per-parameter step counts, hyperparameter changes between steps, dfdx buffers that
//! must not be updated, and `f64` parameters. Expected values are computed by hand from the
//! update rules in the zoo docs.

use dfdx::prelude::*;
use optim_dsl::prelude::*;
use optim_dsl::zoo::{Adam, AdamConfig, AdamW, AdamWConfig, Lion, LionConfig, Sgd, SgdConfig};
use optim_dsl::{OptimError, RuleBody};
use optim_tests::params::slice;
use optim_tests::zoo::sgd;

/// Asserts for each `Opt(OptConfig { field: value })` that `Opt::<f32>::new` with `field = value`
/// (the rest default) fails with [`OptimError::InvalidHyperparameter`] naming `field` and the
/// optimizer `Opt`.
macro_rules! assert_rejected {
    ($($opt:ident($cfg:ident { $field:ident: $value:expr })),* $(,)?) => {$(
        match $opt::<f32>::new($cfg {
            $field: ($value).into(),
            ..Default::default()
        }) {
            Err(OptimError::InvalidHyperparameter { name, optimizer, .. }) => {
                assert_eq!(name, stringify!($field));
                assert_eq!(optimizer, stringify!($opt));
            }
            Err(other) => {
                panic!("expected an error naming `{}`, got {other:?}", stringify!($field))
            }
            Ok(_) => panic!("{} accepted {} = {}", stringify!($opt), stringify!($field), $value),
        }
    )*};
}

#[test]
fn invalid_hyperparameters_are_rejected_with_their_name() {
    assert_rejected!(
        AdamW(AdamWConfig { lr: -1.0 }),
        AdamW(AdamWConfig { beta1: 1.0 }),
        AdamW(AdamWConfig { beta2: -0.1 }),
        AdamW(AdamWConfig { eps: 0.0 }),
        AdamW(AdamWConfig {
            weight_decay: f64::NAN
        }),
    );
    // the message names the hyperparameter, the value and the domain
    let err = AdamW::<f32>::new(AdamWConfig {
        beta1: 1.5.into(),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid hyperparameter `beta1` of `AdamW`: 1.5 at step 0; expected a value in [0, 1)"
    );
    // the momentum of SGD is a beta of its `momentum` primitive, so it is checked as one
    assert!(Sgd::<f32>::new(SgdConfig {
        momentum: 1.0.into(),
        ..Default::default()
    })
    .is_err());
}

#[test]
fn a_schedule_that_leaves_the_domain_fails_the_step_and_changes_nothing() {
    // lr goes 1e-3, 0, -1e-3, ... : step 3 (index 2) is invalid
    let mut opt = AdamW::<f32>::new(AdamWConfig {
        lr: Schedule::linear(1e-3, -1e-3, 2).unwrap().into(),
        ..Default::default()
    })
    .unwrap();
    let mut p = vec![1.0f32, 2.0];
    let g = [0.5f32, -0.5];
    for _ in 0..2 {
        opt.update_slices(&mut [slice("w", &[2], &mut p, &g)])
            .unwrap();
    }
    let before_p = p.clone();
    let before_state = opt.state().clone();
    let err = opt
        .update_slices(&mut [slice("w", &[2], &mut p, &g)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            OptimError::InvalidHyperparameter {
                name: "lr",
                step: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(p, before_p);
    assert_eq!(opt.state(), &before_state);
}

#[test]
fn set_hyperparameter_validates_and_keeps_the_old_value_on_error() {
    let mut opt = AdamW::<f32>::default();
    assert!(opt.set_lr(-3.0).is_err());
    assert_eq!(opt.config().lr, Hyper::Const(1e-3));
    opt.set_lr(0.5).unwrap();
    assert_eq!(opt.config().lr, Hyper::Const(0.5));
}

#[test]
fn shape_mismatches_name_the_parameter_and_change_nothing() {
    let mut opt = Sgd::<f32>::new(SgdConfig {
        lr: 0.1.into(),
        momentum: 0.9.into(),
        ..Default::default()
    })
    .unwrap();
    let mut a = vec![1.0f32; 4];
    let mut b = vec![1.0f32; 3];
    let ga = [1.0f32; 4];
    let gb_short = [1.0f32; 2];
    let err = opt
        .update_slices(&mut [
            slice("a", &[2, 2], &mut a, &ga),
            slice("b", &[3], &mut b, &gb_short),
        ])
        .unwrap_err();
    assert_eq!(
        err,
        OptimError::ShapeMismatch {
            param: "b".into(),
            detail: "gradient has 2 elements, parameter has 3".into()
        }
    );
    assert_eq!(
        a,
        vec![1.0; 4],
        "no parameter may move when any parameter is invalid"
    );
    assert_eq!(opt.state().step, 0);
    assert!(opt.state().params.is_empty());

    // shape that disagrees with the data
    let err = opt
        .update_slices(&mut [slice("a", &[3, 2], &mut a, &ga)])
        .unwrap_err();
    assert!(
        matches!(err, OptimError::ShapeMismatch { ref param, .. } if param == "a"),
        "{err}"
    );

    // a parameter whose size changed since its state was created
    opt.update_slices(&mut [slice("a", &[2, 2], &mut a, &ga)])
        .unwrap();
    let ga6 = [1.0f32; 6];
    let mut a6 = vec![0.0f32; 6];
    let err = opt
        .update_slices(&mut [slice("a", &[6], &mut a6, &ga6)])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`a`") && msg.contains("created for shape [2, 2]") && msg.contains("[6]"),
        "{err}"
    );

    // duplicate names
    let mut c = vec![0.0f32; 4];
    let err = opt
        .update_slices(&mut [slice("a", &[4], &mut a, &ga), slice("a", &[4], &mut c, &ga)])
        .unwrap_err();
    assert_eq!(err, OptimError::DuplicateParam("a".into()));
}

#[test]
fn each_parameter_is_bias_corrected_from_its_own_first_step() {
    // Adam's first step moves every element by lr * sign(g) (m_hat = g, v_hat = g^2), whatever
    // the global step: a parameter first seen at global step 5 must take exactly that step.
    let mut opt = Adam::<f64>::new(AdamConfig {
        lr: 0.1.into(),
        eps: 1e-12.into(),
        ..Default::default()
    })
    .unwrap();
    let mut a = vec![0.0f64; 3];
    let ga = [1.0f64, -2.0, 0.5];
    for _ in 0..4 {
        opt.update_slices(&mut [slice("a", &[3], &mut a, &ga)])
            .unwrap();
    }
    let mut late = vec![1.0f64, 1.0];
    let gl = [3.0f64, -0.25];
    opt.update_slices(&mut [
        slice("a", &[3], &mut a, &ga),
        slice("late", &[2], &mut late, &gl),
    ])
    .unwrap();
    assert!((late[0] - 0.9).abs() < 1e-12, "{late:?}");
    assert!((late[1] - 1.1).abs() < 1e-12, "{late:?}");
    assert_eq!(opt.state().param("late").unwrap().step, 1);
    assert_eq!(opt.state().param("a").unwrap().step, 5);
    assert_eq!(opt.state().step, 5);
}

#[test]
fn hyperparameter_changes_take_effect_at_the_next_step() {
    let mut opt = sgd(1.0);
    let mut p = vec![0.0f32];
    let g = [1.0f32];
    opt.update_slices(&mut [slice("p", &[1], &mut p, &g)])
        .unwrap();
    assert_eq!(p, [-1.0]);
    opt.set_lr(0.25).unwrap();
    opt.update_slices(&mut [slice("p", &[1], &mut p, &g)])
        .unwrap();
    assert_eq!(p, [-1.25]);
    opt.set_maximize(true);
    opt.update_slices(&mut [slice("p", &[1], &mut p, &g)])
        .unwrap();
    assert_eq!(p, [-1.0]);
}

/// Sets every element of the gradient of `t` in `grads` to `value` (allocating the buffer).
fn fill_grad<S: Shape>(grads: &mut Gradients<f32, Cpu>, t: &Tensor<S, f32, Cpu>, value: f32) {
    grads
        .get_or_alloc_mut(t)
        .unwrap()
        .iter_mut()
        .for_each(|x| *x = value);
}

#[test]
fn dfdx_path_leaves_non_trainable_buffers_alone() {
    // BatchNorm1D's running mean/var have do_gradient_update == false
    let dev: Cpu = Default::default();
    let mut model = dev.build_module::<(Linear<2, 3>, BatchNorm1D<3>), f32>();
    let before_mean = model.1.running_mean.as_vec();
    let before_var = model.1.running_var.as_vec();
    let before_w = model.0.weight.as_vec();
    let mut grads = model.alloc_grads();
    for t in [
        &model.1.running_mean,
        &model.1.running_var,
        &model.1.scale,
        &model.1.bias,
    ] {
        fill_grad(&mut grads, t, 1.0);
    }
    fill_grad(&mut grads, &model.0.weight, 1.0);
    let mut opt = sgd(0.5);
    opt.update(&mut model, &mut grads).unwrap();
    assert_eq!(model.1.running_mean.as_vec(), before_mean);
    assert_eq!(model.1.running_var.as_vec(), before_var);
    let after_w = model.0.weight.as_vec();
    for (a, b) in after_w.iter().zip(&before_w) {
        assert!((a - (b - 0.5)).abs() < 1e-7);
    }
    let names: Vec<&String> = opt.state().params.keys().collect();
    assert_eq!(names, ["0.bias", "0.weight", "1.bias", "1.scale"]);
    // gradients are intact after the step
    assert!(grads
        .get_or_alloc_mut(&model.0.weight)
        .unwrap()
        .iter()
        .all(|&x| x == 1.0));
}

#[test]
fn dfdx_path_runs_in_f64() {
    let dev: Cpu = Default::default();
    let mut model = dev.build_module::<Linear<2, 2>, f64>();
    let w0 = model.weight.as_vec();
    let mut grads = model.alloc_grads();
    grads
        .get_or_alloc_mut(&model.weight)
        .unwrap()
        .iter_mut()
        .for_each(|x| *x = -1.0);
    let mut opt = Lion::<f64>::new(LionConfig {
        lr: 0.125.into(),
        ..Default::default()
    })
    .unwrap();
    opt.update(&mut model, &mut grads).unwrap();
    // Lion's first step: m = 0, c = (1 - beta1) * g, p -= lr * sign(g)
    for (a, b) in model.weight.as_vec().iter().zip(&w0) {
        assert_eq!(*a, b + 0.125);
    }
}

#[test]
fn explain_describes_one_adamw_kernel_of_28_bytes() {
    let plan = AdamW::<f32>::default().explain();
    assert_eq!(plan.kernel_count(), 1);
    let RuleBody::Fused { kernels, state, .. } = &plan.rules[0].body else {
        panic!("fused rule expected")
    };
    assert_eq!(kernels[0].reads, ["param", "grad", "m", "v"]);
    assert_eq!(kernels[0].writes, ["param", "m", "v"]);
    assert_eq!(kernels[0].bytes_per_param(4), 28);
    assert_eq!(state, &["m", "v"]);
    // AMSGrad adds one stream read and written
    let plan = AdamW::<f32>::default().with_amsgrad(true).explain();
    let RuleBody::Fused { kernels, .. } = &plan.rules[0].body else {
        panic!()
    };
    assert_eq!(kernels[0].bytes_per_param(4), 36);
    let text = plan.to_string();
    assert!(
        text.contains("kernel 0: reads [param, grad, m, v, vmax]"),
        "{text}"
    );
}

optimizer! {
    /// Embedding tables get plain SGD, every other matrix Lion-like sign steps, the rest SGD.
    pub ByModule<lr = 0.5> {
        matrix if module == "Embedding" => { param -= lr * grad; }
        matrix if module.starts_with("Lin") => { param -= lr * sign(grad); }
        _ => { param -= 0.0 * grad; }
    }
}

#[test]
fn rules_can_route_by_the_enclosing_dfdx_module_type() {
    let dev: Cpu = Default::default();
    let mut model = dev.build_module::<(Embedding<5, 3>, Linear<3, 2>), f32>();
    let emb0 = model.0.weight.as_vec();
    let lin0 = model.1.weight.as_vec();
    let bias0 = model.1.bias.as_vec();
    let mut grads = model.alloc_grads();
    fill_grad(&mut grads, &model.0.weight, 0.25);
    fill_grad(&mut grads, &model.1.weight, 0.25);
    fill_grad(&mut grads, &model.1.bias, 0.25);
    let mut opt = ByModule::<f32>::default();
    opt.update(&mut model, &mut grads).unwrap();
    for (a, b) in model.0.weight.as_vec().iter().zip(&emb0) {
        assert!((a - (b - 0.125)).abs() < 1e-7, "embedding: plain SGD step");
    }
    for (a, b) in model.1.weight.as_vec().iter().zip(&lin0) {
        assert!((a - (b - 0.5)).abs() < 1e-7, "linear: sign step");
    }
    assert_eq!(
        model.1.bias.as_vec(),
        bias0,
        "the bias (a vector) takes the catch-all"
    );
    assert_eq!(opt.state().param("0.weight").unwrap().rule, 0);
    assert_eq!(opt.state().param("1.weight").unwrap().rule, 1);
    assert_eq!(opt.state().param("1.bias").unwrap().rule, 2);
}

/// LAMB's first step by hand: m̂ = g, v̂ = g², u = g / (|g| + eps) + wd p, and the step is
/// lr · (‖p‖ / ‖u‖) · u (You et al. 2020, Alg. 2).
#[test]
fn lamb_first_step_matches_the_hand_computed_update() {
    use optim_dsl::zoo::{Lamb, LambConfig};
    let (lr, eps, wd) = (0.1f64, 1e-6f64, 0.01f64);
    let mut opt = Lamb::<f64>::new(LambConfig {
        lr: lr.into(),
        eps: eps.into(),
        weight_decay: wd.into(),
        ..Default::default()
    })
    .unwrap();
    let p0 = [3.0f64, -4.0];
    let g = [0.5f64, 2.0];
    let mut p = p0.to_vec();
    opt.update_slices(&mut [slice("w", &[2], &mut p, &g)])
        .unwrap();
    let u: Vec<f64> = p0
        .iter()
        .zip(&g)
        .map(|(p, g)| g / (g.abs() + eps) + wd * p)
        .collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let ratio = norm(&p0) / norm(&u);
    for i in 0..2 {
        let want = p0[i] - lr * ratio * u[i];
        assert!((p[i] - want).abs() < 1e-12, "{p:?} vs {want}");
    }
}

#[test]
fn schedule_free_with_a_zero_first_learning_rate_stays_finite() {
    use optim_dsl::zoo::{ScheduleFreeAdamW, ScheduleFreeAdamWConfig};
    let mut opt = ScheduleFreeAdamW::<f32>::new(ScheduleFreeAdamWConfig {
        lr: Schedule::linear(0.0, 2.5e-3, 10).unwrap().into(),
        ..Default::default()
    })
    .unwrap();
    let mut p = vec![1.0f32, 2.0];
    for _ in 0..5 {
        opt.update_slices(&mut [slice("p", &[2], &mut p, &[0.5, -0.5])])
            .unwrap();
    }
    assert!(p.iter().all(|x| x.is_finite()), "{p:?}");
    assert!(p[0] < 1.0 && p[1] > 2.0, "{p:?}");
}

#[test]
fn zoo_hyperparameters_outside_their_domains_are_rejected() {
    use optim_dsl::zoo::{
        Adafactor, AdafactorConfig, Adagrad, AdagradConfig, KFac, KFacConfig, Muon, MuonConfig,
        Shampoo, ShampooConfig,
    };
    assert_rejected!(
        Adagrad(AdagradConfig { lr_decay: -1.0 }),
        Shampoo(ShampooConfig { matrix_eps: 0.0 }),
        Shampoo(ShampooConfig { update_freq: 0.0 }),
        Adafactor(AdafactorConfig { d: 0.0 }),
        Adafactor(AdafactorConfig { beta2_decay: 0.5 }),
        Muon(MuonConfig { ns_steps: 2.5 }),
        KFac(KFacConfig { damping: -1.0 }),
    );
}

#[test]
fn kron_factors_of_a_stale_shape_are_an_error_not_a_panic() {
    use optim_dsl::zoo::{KFac, KFacConfig};
    let mut opt = KFac::<f32>::new(KFacConfig::default()).unwrap();
    opt.set_kron_factors("w", &[2, 3], Some(vec![2.0, 0.0, 0.0, 2.0]), None)
        .unwrap();
    let mut a = vec![1.0f32; 4];
    let mut w = vec![1.0f32; 6];
    let before = opt.state().clone();
    let err = opt
        .update_slices(&mut [
            slice("a", &[4], &mut a, &[1.0; 4]),
            slice("w", &[3, 2], &mut w, &[1.0; 6]),
        ])
        .unwrap_err();
    assert!(
        matches!(err, OptimError::ShapeMismatch { ref param, .. } if param == "w"),
        "{err}"
    );
    assert_eq!(a, vec![1.0; 4]);
    assert_eq!(opt.state(), &before);
}

/// `update_where` leaves the tensors without a gradient this step alone — value, state, step
/// count — and a tensor first stepped later is bias-corrected from its own first step.
#[test]
fn update_where_skips_tensors_without_a_gradient() {
    let dev: Cpu = Default::default();
    let mut model = dev.build_module::<(Linear<2, 2>, Linear<2, 2>), f64>();
    let mut grads = model.alloc_grads();
    for w in [&model.0.weight, &model.1.weight] {
        grads
            .get_or_alloc_mut(w)
            .unwrap()
            .iter_mut()
            .for_each(|x| *x = 0.5);
    }
    let mut opt = AdamW::<f64>::new(AdamWConfig {
        lr: 0.1.into(),
        weight_decay: 0.0.into(),
        ..Default::default()
    })
    .unwrap();
    let w1 = model.1.weight.as_vec();
    // two steps in which only the first layer had a gradient
    for _ in 0..2 {
        opt.update_where(&mut model, &mut grads, |name| name.starts_with("0."))
            .unwrap();
    }
    assert_eq!(model.1.weight.as_vec(), w1, "untouched");
    assert!(opt.state().param("1.weight").is_none(), "no state created");
    assert_eq!(opt.state().param("0.weight").unwrap().step, 2);
    // its first step: Adam's bias-corrected first update is lr * g / (|g| + eps)
    opt.update(&mut model, &mut grads).unwrap();
    assert_eq!(opt.state().param("1.weight").unwrap().step, 1);
    for (a, b) in model.1.weight.as_vec().iter().zip(&w1) {
        let want = b - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((a - want).abs() < 1e-15, "{a} vs {want}");
    }
}
