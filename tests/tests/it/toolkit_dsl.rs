//! Training-toolkit pieces written in the DSL, against reference trajectories: global-norm and
//! value clipping declared inside an optimizer, and Schedule-Free AdamW (with its averaged
//! iterate `x` and fast iterate `z`).

use optim_dsl::prelude::*;
use optim_dsl::zoo::{ScheduleFreeAdamW, ScheduleFreeAdamWConfig};
use optim_dsl::RuleBody;
use optim_tests::fixtures::{self, Case};
use optim_tests::params::slice;
use optim_tests::torch_config;

optimizer! {
    /// `clip_grad_norm_` then SGD, as one optimizer: the global norm is a barrier over all
    /// parameters, then one fused loop per parameter.
    pub ClippedSgd<lr = 0.05, max_norm = 1.0> {
        let g = clip_global_norm(grad, max_norm);
        param -= lr * g;
    }
}

optimizer! {
    /// `clip_grad_value_` then SGD.
    pub ValueClippedSgd<lr = 0.05, clip = 0.5> {
        param -= lr * clip_value(grad, clip);
    }
}

fn run<O: DslOptimizer<f32>>(case: &Case, opt: &mut O, what: &str, after: impl FnMut(usize, &O)) {
    optim_tests::trajectory::run_slices(case, opt, what, after);
}

#[test]
fn global_norm_clipping_matches_torch() {
    let case = fixtures::load("clip_grad_norm_sgd");
    let lr = case.hyper_f64("sgd.lr").into();
    let config = torch_config! { case.hyper_f64, lr, ClippedSgdConfig { max_norm } };
    let mut opt = ClippedSgd::<f32>::new(config).unwrap();
    run(&case, &mut opt, "clip_grad_norm", |_, _| {});
    // one barrier (the global reduction), two loops
    let plan = opt.explain();
    let RuleBody::Fused {
        kernels, barriers, ..
    } = &plan.rules[0].body
    else {
        panic!()
    };
    assert_eq!(kernels.len(), 2, "{plan}");
    assert_eq!(barriers.len(), 1, "{plan}");
}

#[test]
fn global_norm_does_not_overflow_on_huge_finite_gradients() {
    // ||g|| = 1e20 * sqrt(2) overflows f32 when squared in f32; the reduction runs in f64
    let mut opt = ClippedSgd::<f32>::new(ClippedSgdConfig {
        lr: 1.0.into(),
        max_norm: 1.0.into(),
    })
    .unwrap();
    let mut a = vec![0.0f32];
    let mut b = vec![0.0f32];
    opt.update_slices(&mut [
        slice("a", &[1], &mut a, &[1e20]),
        slice("b", &[1], &mut b, &[-1e20]),
    ])
    .unwrap();
    let want = -(0.5f64).sqrt();
    assert!((f64::from(a[0]) - want).abs() < 1e-6, "{a:?}");
    assert!((f64::from(b[0]) + want).abs() < 1e-6, "{b:?}");
}

#[test]
fn value_clipping_matches_torch() {
    let case = fixtures::load("clip_grad_value_sgd");
    let lr = case.hyper_f64("sgd.lr").into();
    let config =
        torch_config! { case.hyper_f64, lr, ValueClippedSgdConfig { clip = "clip_value" } };
    run(
        &case,
        &mut ValueClippedSgd::<f32>::new(config).unwrap(),
        "clip_grad_value",
        |_, _| {},
    );
}

#[test]
fn schedule_free_adamw_matches_the_reference_including_x_and_z() {
    let case = fixtures::load("schedule_free_adamw");
    assert_eq!(
        case.hyperparameters["decay_at_z"],
        serde_json::Value::Bool(false)
    );
    let mut opt = ScheduleFreeAdamW::<f32>::new(torch_config! {
        case.hyper_f64, case.hyper_f64("lr").into(), ScheduleFreeAdamWConfig {
            beta1 = "betas.0", beta2 = "betas.1", eps, weight_decay, warmup_steps, r,
            weight_lr_power
        }
    })
    .unwrap();
    let plan = opt.explain();
    let RuleBody::Fused { state, .. } = &plan.rules[0].body else {
        panic!()
    };
    let slot = |n: &str| state.iter().position(|s| *s == n).unwrap();
    let (xs, zs) = (slot("x"), slot("z"));
    let extra = case_extra(&case);
    run(&case, &mut opt, "schedule_free", |t, opt| {
        for name in &case.param_order {
            let st = opt.state().param(name).unwrap();
            let want_x = fixtures::floats(&extra["x"][t][name]);
            let want_z = fixtures::floats(&extra["z"][t][name]);
            fixtures::assert_close(
                "schedule_free_adamw",
                &format!("x[{t}][{name}]"),
                &st.buffers[xs],
                &want_x,
                &case.tolerance,
            );
            fixtures::assert_close(
                "schedule_free_adamw",
                &format!("z[{t}][{name}]"),
                &st.buffers[zs],
                &want_z,
                &case.tolerance,
            );
        }
    });
}

fn case_extra(case: &Case) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures::path(&case.case)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["extra"].clone()
}

#[test]
fn schedule_free_eval_weights_swap_into_a_dfdx_model_and_back() {
    use dfdx::prelude::*;
    let dev: Cpu = Default::default();
    let mut model = dev.build_module::<Linear<3, 2>, f32>();
    let mut opt = ScheduleFreeAdamW::<f32>::new(ScheduleFreeAdamWConfig {
        lr: 0.1.into(),
        ..Default::default()
    })
    .unwrap();
    for k in 0..3 {
        let mut grads = model.alloc_grads();
        grads
            .get_or_alloc_mut(&model.weight)
            .unwrap()
            .iter_mut()
            .enumerate()
            .for_each(|(i, g)| *g = (i + k) as f32 - 2.0);
        grads
            .get_or_alloc_mut(&model.bias)
            .unwrap()
            .iter_mut()
            .for_each(|g| *g = 1.0);
        opt.update(&mut model, &mut grads).unwrap();
    }
    let y = model.weight.as_vec();
    let x = opt.state_buffer("weight", "x").unwrap().to_vec();
    assert_ne!(
        x, y,
        "the averaged iterate differs from the training iterate"
    );
    assert_eq!(opt.swap_state_with_model(&mut model, "x").unwrap(), 2);
    assert_eq!(model.weight.as_vec(), x);
    assert_eq!(opt.state_buffer("weight", "x").unwrap(), &y[..]);
    opt.swap_state_with_model(&mut model, "x").unwrap();
    assert_eq!(model.weight.as_vec(), y);
    assert_eq!(opt.state_buffer("weight", "x").unwrap(), &x[..]);
    assert!(opt.state_buffer("weight", "nope").is_none());
}
