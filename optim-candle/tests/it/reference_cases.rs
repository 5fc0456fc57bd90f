//! The shared reference trajectories (`tests/fixtures/*.json`) run through the candle path.
//!
//! Every case is run teacher-forced: the case's four parameters become `Var`s of a `VarMap`
//! under the case's names, the reference gradient `grads[t]` is put in a `GradStore`, and
//! [`CandleOptimizer`] (built through `candle_nn::Optimizer::new` with the `VarMap` for names)
//! steps them; the `Var`s are compared with `params[t]` after every step under the case's
//! tolerance, and the optimizer state after the last step with the reference's `final_state`.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use optim_candle::{CandleConfig, CandleOptimizer, CandleUpdate};
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;
use optim_tests::fixtures::{self, assert_close, Case};
use optim_tests::torch_config;
use optim_tests::zoo::torch_adamw_config;

/// The case's parameters as `Var`s of a fresh `VarMap` on `dev`, keyed by the case's names.
pub(crate) fn varmap_on(case: &Case, dev: &Device) -> VarMap {
    let map = VarMap::new();
    {
        let mut data = map.data().lock().unwrap();
        for n in &case.param_order {
            let v = Var::from_slice(&case.init_f32(n), case.shape(n), dev).unwrap();
            data.insert(n.clone(), v);
        }
    }
    map
}

/// [`varmap_on`] the CPU.
fn varmap_of(case: &Case) -> VarMap {
    varmap_on(case, &Device::Cpu)
}

/// The reference gradients of step `t + 1` for the `Var`s of `map` (on the `Var`s' device).
fn grads_at(case: &Case, map: &VarMap, t: usize) -> GradStore {
    let data = map.data().lock().unwrap();
    let mut grads = GradStore::default();
    for n in &case.param_order {
        let dev = data[n].device();
        let g = Tensor::from_slice(&case.grad_f32(t, n), case.shape(n), dev).unwrap();
        grads.insert(&data[n], g);
    }
    grads
}

/// `var`'s elements, row-major.
pub(crate) fn values(var: &Var) -> Vec<f32> {
    var.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Runs `case` through `candle_nn::Optimizer` over a `VarMap`, checking every step, and returns
/// the optimizer for final-state checks. `before(t, &opt)` runs before step `t + 1`.
fn run<O: DslOptimizer<f32>>(
    case: &Case,
    optimizer: O,
    before: impl FnMut(usize, &CandleOptimizer<O>),
) -> CandleOptimizer<O> {
    run_on(&Device::Cpu, case, optimizer, before).0
}

/// [`run`] with the `Var`s on `dev`; also returns the `VarMap`.
pub(crate) fn run_on<O: DslOptimizer<f32>>(
    dev: &Device,
    case: &Case,
    optimizer: O,
    mut before: impl FnMut(usize, &CandleOptimizer<O>),
) -> (CandleOptimizer<O>, VarMap) {
    let map = varmap_on(case, dev);
    // `all_vars` comes in HashMap order: the names come from the VarMap, not the order.
    let mut opt = CandleOptimizer::new(
        map.all_vars(),
        CandleConfig::new(optimizer).with_varmap(&map),
    )
    .unwrap();
    for t in 0..case.steps {
        before(t, &opt);
        let grads = grads_at(case, &map, t);
        opt.step(&grads).unwrap();
        let data = map.data().lock().unwrap();
        for n in &case.param_order {
            case.assert_params_at(&format!("candle path ({dev:?})"), t, n, &values(&data[n]));
        }
    }
    (opt, map)
}

/// Compares our state buffer `ours` of every parameter with the reference's `theirs`, and the
/// per-parameter step counts with the case's step count.
pub(crate) fn check_state<O: DslOptimizer<f32>>(case: &Case, opt: &O, names: &[(&str, &str)]) {
    assert_eq!(opt.opt_state().step, case.steps as u64, "global step");
    for p in &case.param_order {
        let ps = opt
            .opt_state()
            .param(p)
            .expect("state keyed by the VarMap name");
        assert_eq!(ps.step, case.steps as u64, "{p}: step count");
        for (theirs, ours) in names {
            let want = case.final_state_tensor(p, theirs).expect("reference state");
            let got = opt
                .state_buffer(p, ours)
                .unwrap_or_else(|| panic!("{p}: no state {ours}"));
            let what = format!("candle path: final {p}.{theirs} (ours {ours})");
            assert_close(&case.case, &what, got, &want.data, &case.tolerance);
        }
    }
}

/// torch SGD with the hyperparameters of `case` (momentum, dampening, weight decay, Nesterov,
/// maximize) and its constant learning rate.
pub(crate) fn torch_sgd(case: &Case) -> optim_dsl::zoo::Sgd<f32> {
    use optim_dsl::zoo::{Sgd, SgdConfig};
    Sgd::<f32>::new(torch_config! {
        case.group_f64, case.hyper_f64("lr").into(),
        SgdConfig { momentum, dampening, weight_decay }, case.group_bool { nesterov, maximize }
    })
    .unwrap()
}

#[test]
fn adamw_matches_torch_through_candle_nn_optimizer() {
    let case = fixtures::load("adamw");
    let opt = AdamW::<f32>::new(torch_adamw_config(&case, case.hyper_f64("lr").into())).unwrap();
    let opt = run(&case, opt, |_, _| {});
    check_state(&case, opt.inner(), &[("exp_avg", "m"), ("exp_avg_sq", "v")]);
}

#[test]
fn adamw_matches_torch_through_update_varmap() {
    let case = fixtures::load("adamw");
    let mut opt =
        AdamW::<f32>::new(torch_adamw_config(&case, case.hyper_f64("lr").into())).unwrap();
    let map = varmap_of(&case);
    for t in 0..case.steps {
        opt.update_varmap(&map, &grads_at(&case, &map, t)).unwrap();
        let data = map.data().lock().unwrap();
        for n in &case.param_order {
            case.assert_params_at("update_varmap", t, n, &values(&data[n]));
        }
    }
    check_state(&case, &opt, &[("exp_avg", "m"), ("exp_avg_sq", "v")]);
}

/// The schedule of the `adamw_warmup_cosine` case (torch `SequentialLR` of a linear warm-up and
/// a cosine), and `learning_rate()` reporting its value for the next step.
#[test]
fn adamw_warmup_cosine_schedule_and_learning_rate() {
    let case = fixtures::load("adamw_warmup_cosine");
    let schedule = Schedule::join(
        vec![
            Schedule::linear(0.001, 0.01, 5).unwrap(),
            Schedule::cosine(0.01, 1e-4, 15).unwrap(),
        ],
        vec![5],
    )
    .unwrap();
    let opt = AdamW::<f32>::new(torch_adamw_config(&case, schedule.into())).unwrap();
    let opt = run(&case, opt, |t, opt| {
        let (got, want) = (opt.learning_rate(), case.lr_at(t));
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "learning_rate() before step {}: {got} vs torch's {want}",
            t + 1
        );
    });
    check_state(&case, opt.inner(), &[("exp_avg", "m"), ("exp_avg_sq", "v")]);
}

#[test]
fn sgd_momentum_and_nesterov_match_torch() {
    for name in ["sgd_momentum", "sgd_nesterov"] {
        let case = fixtures::load(name);
        let opt = run(&case, torch_sgd(&case), |_, _| {});
        check_state(&case, opt.inner(), &[("momentum_buffer", "buf")]);
    }
}

/// pytorch-optimizer's Lion with the hyperparameters of `case`.
pub(crate) fn torch_lion(case: &Case) -> optim_dsl::zoo::Lion<f32> {
    use optim_dsl::zoo::{Lion, LionConfig};
    assert!(case.group_bool("weight_decouple") && !case.group_bool("fixed_decay"));
    Lion::<f32>::new(torch_config! {
        case.group_f64, case.hyper_f64("lr").into(),
        LionConfig { beta1 = "betas.0", beta2 = "betas.1", weight_decay }
    })
    .unwrap()
}

#[test]
fn lion_matches_pytorch_optimizer() {
    let case = fixtures::load("lion");
    let opt = run(&case, torch_lion(&case), |_, _| {});
    check_state(&case, opt.inner(), &[("exp_avg", "m")]);
}

/// Muon's matrix rule (Newton–Schulz orthogonalization over the whole `Var`) and its AdamW
/// fallback for vectors, routed by shape.
#[test]
fn muon_matches_keller_single_device_muon() {
    let case = fixtures::load("muon_keller_f32");
    let opt = run(&case, optim_tests::zoo::keller_muon(&case), |_, _| {});
    let state = opt.inner().opt_state();
    assert_eq!(state.param("w_16x8").unwrap().rule, 0, "orthogonalized");
    assert_eq!(state.param("w_8x16").unwrap().rule, 0, "orthogonalized");
}

/// Shampoo (Kronecker factors, inverse roots): whole-tensor matrix words on candle `Var`s.
#[test]
fn shampoo_matches_pytorch_optimizer() {
    let case = fixtures::load("shampoo");
    let opt = optim_tests::zoo::pytorch_optimizer_shampoo(&case);
    run(&case, opt, |_, _| {});
}
