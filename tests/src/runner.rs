//! Teacher-forced conformance runs (see `tests/fixtures/README.md`, "How the tests
//! compare"): before step `t + 1` the reference gradient `grads[t]` is fed (never our own),
//! the optimizer keeps its own state, and the parameters after the step are compared with
//! `params[t]` under the case tolerance; after the last step the optimizer state is
//! compared with the reference's `final_state`. [`conformance!`](crate::conformance!)
//! defines one `#[test]` per case from these pieces.

use crate::fixtures::{assert_close, max_ratio, Case};
use crate::model::DfdxCase;
pub use dfdx::tensor::Cpu;
use dfdx::tensor::Gradients;
use optim_dsl::{DslOptimizer, ParamSlice};

/// Teacher-forced run of `case` through the slice path; `step` performs one optimizer
/// update. Returns the largest error over all steps and elements as a fraction of the
/// tolerance ([`max_ratio`]); panics at the first step out of tolerance.
pub fn run_slices(case: &Case, mut step: impl FnMut(&mut Vec<ParamSlice<'_, f32>>)) -> f64 {
    let names = &case.param_order;
    let shapes: Vec<Vec<usize>> = names.iter().map(|n| case.shape(n).to_vec()).collect();
    let mut params: Vec<Vec<f32>> = names.iter().map(|n| case.init_f32(n)).collect();
    let mut worst = 0.0f64;
    for t in 0..case.steps {
        let grads: Vec<Vec<f32>> = names.iter().map(|n| case.grad_f32(t, n)).collect();
        let mut slices = crate::params::slices(names, &shapes, &mut params, &grads);
        step(&mut slices);
        drop(slices);
        for (name, p) in names.iter().zip(&params) {
            case.assert_params_at("slice path", t, name, p);
            worst = worst.max(max_ratio(p, &case.params[t][name], &case.tolerance));
        }
    }
    worst
}

/// Teacher-forced run of `case` through the dfdx path on model `M`; `step` performs one
/// optimizer update. One `Gradients` is allocated up front and overwritten before every
/// step, as in a training loop that reuses its gradient buffers. Returns the largest error
/// as a fraction of the tolerance, like [`run_slices`].
pub fn run_dfdx<M: DfdxCase>(
    case: &Case,
    mut step: impl FnMut(&mut M, &mut Gradients<f32, Cpu>),
) -> f64 {
    use dfdx::nn::ZeroGrads;
    let dev = Cpu::default();
    let mut model = M::load(&dev, case);
    let mut grads = model.alloc_grads();
    let mut worst = 0.0f64;
    for t in 0..case.steps {
        model.set_grads(&mut grads, &case.grads[t]);
        step(&mut model, &mut grads);
        worst = worst.max(check_step(case, "dfdx path", t, |name| model.flat(name)));
    }
    worst
}

/// Asserts every parameter after step `t + 1` (`read(name)`) against the reference under
/// the case tolerance (`what` names the path); returns the largest error as a fraction of
/// the tolerance.
fn check_step(case: &Case, what: &str, t: usize, read: impl Fn(&str) -> Vec<f32>) -> f64 {
    case.param_order
        .iter()
        .map(|name| {
            let p = read(name);
            case.assert_params_at(what, t, name, &p);
            max_ratio(&p, &case.params[t][name], &case.tolerance)
        })
        .fold(0.0, f64::max)
}

/// [`run_dfdx`] on a dfdx `Cuda` device (feature `cuda`; needs a GPU): the case's
/// [`CaseModel`](crate::model::CaseModel) on GPU 0, the reference gradients uploaded into
/// its `Gradients` before every step, the parameters read back after it. Cases with a
/// model of their own (`model = ...`) are not run here.
#[cfg(feature = "cuda")]
pub fn run_dfdx_cuda(
    case: &Case,
    mut step: impl FnMut(
        &mut crate::model::CaseModel<f32, dfdx::tensor::Cuda>,
        &mut Gradients<f32, dfdx::tensor::Cuda>,
    ),
) -> f64 {
    use dfdx::nn::ZeroGrads;
    use dfdx::tensor::Cuda;
    let dev = Cuda::default();
    let mut model = crate::model::CaseModel::<f32, Cuda>::from_case(&dev, case);
    let mut grads = model.alloc_grads();
    let mut worst = 0.0f64;
    for t in 0..case.steps {
        for name in &case.param_order {
            let data = case.grad_f32(t, name);
            let slot = match name.as_str() {
                "w_16x8" => grads.get_or_alloc_mut(&model.w_16x8),
                "w_8x16" => grads.get_or_alloc_mut(&model.w_8x16),
                "b_8" => grads.get_or_alloc_mut(&model.b_8),
                "s_1" => grads.get_or_alloc_mut(&model.s_1),
                other => panic!("CaseModel has no parameter {other:?}"),
            }
            .expect("allocating a gradient buffer");
            let slice: &mut optim_dsl::cuda::device::CudaSlice<f32> = &mut *slot;
            slice
                .device()
                .htod_sync_copy_into(&data, slice)
                .expect("uploading a gradient");
        }
        step(&mut model, &mut grads);
        let read = |name: &str| model.params_flat(name);
        worst = worst.max(check_step(case, "dfdx Cuda path", t, read));
    }
    worst
}

/// How the reference's `final_state` corresponds to ours.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateMap<'a> {
    /// Reference state key -> our element-wise state buffer (a `let` name of the rule,
    /// read with [`DslOptimizer::state_buffer`]).
    pub buffers: &'a [(&'a str, &'a str)],
    /// Reference state key (a Python float in the reference) -> index of our scalar state
    /// slot ([`optim_dsl::ParamState::scalars`]).
    pub scalars: &'a [(&'a str, usize)],
    /// `(parameter, reference key)` pairs the reference keeps and we do not (e.g. a buffer
    /// that only another rule of ours needs); each test says why.
    pub not_kept: &'a [(&'a str, &'a str)],
}

/// Reference entries with no element-wise counterpart: torch's per-tensor `step` (checked
/// against our per-parameter step count instead) and NAdam's scalar `mu_product`.
const NOT_ELEMENTWISE: [&str; 2] = ["step", "mu_product"];

/// Compares the state of `opt` after the last step of `case` with the case's
/// `final_state`: global and per-parameter step counts (and the reference's `step`, a
/// number or a 0-d tensor), every mapped buffer element-wise and every mapped scalar under
/// the case tolerance. Every reference key must be mapped, listed in `not_kept`, or be
/// `step`/`mu_product`.
pub fn check_final_state<O: DslOptimizer<f32>>(
    case: &Case,
    what: &str,
    opt: &O,
    map: &StateMap<'_>,
) {
    let cname = &case.case;
    let steps = case.steps as u64;
    let state = opt.opt_state();
    assert_eq!(state.step, steps, "{cname}: {what}: global step count");
    if let Some(group_step) = case.final_param_groups.first().and_then(|g| g.get("step")) {
        // pytorch_optimizer keeps its step counter in the param group
        assert_eq!(
            group_step.as_f64(),
            Some(steps as f64),
            "{cname}: group step"
        );
    }
    for p in &case.param_order {
        let ps = state
            .param(p)
            .unwrap_or_else(|| panic!("{cname}: {what}: no optimizer state for {p}"));
        assert_eq!(ps.step, steps, "{cname}: {what}: step count of {p}");
        let reference = case.final_state.get(p).and_then(|v| v.as_object());
        let keys: Vec<&String> = reference.map(|m| m.keys().collect()).unwrap_or_default();
        let kept = |key: &str| !map.not_kept.contains(&(p.as_str(), key));
        for key in map
            .buffers
            .iter()
            .map(|b| b.0)
            .chain(map.scalars.iter().map(|s| s.0))
        {
            assert!(
                !kept(key) || keys.iter().any(|k| *k == key),
                "{cname}: mapped state {key} missing from the reference state of {p}"
            );
        }
        for key in keys {
            let value = &case.final_state[p.as_str()][key.as_str()];
            if key == "step" {
                // a Python int, or a 0-d tensor {"shape": [], "data": [x]}
                let n = value
                    .as_f64()
                    .or_else(|| value["data"][0].as_f64())
                    .unwrap_or_else(|| panic!("{cname}: reference step of {p}: {value}"));
                assert_eq!(n, steps as f64, "{cname}: reference step of {p}");
                continue;
            }
            if !kept(key) {
                continue;
            }
            if let Some(&(_, ours)) = map.buffers.iter().find(|(k, _)| k == key) {
                let got = opt
                    .state_buffer(p, ours)
                    .unwrap_or_else(|| panic!("{cname}: {what}: no state buffer {ours} for {p}"));
                let want = case.final_state_tensor(p, key).expect("present");
                assert_close(
                    cname,
                    &format!("{what}: final state {p}.{key} (ours: {ours})"),
                    got,
                    &want.data,
                    &case.tolerance,
                );
            } else if let Some(&(_, slot)) = map.scalars.iter().find(|(k, _)| k == key) {
                let want = value
                    .as_f64()
                    .unwrap_or_else(|| panic!("{cname}: {p}.{key} = {value} is not a number"));
                let got = *ps
                    .scalars
                    .get(slot)
                    .unwrap_or_else(|| panic!("{cname}: {what}: {p} has no scalar state {slot}"));
                assert!(
                    (got - want).abs() <= case.tolerance.allowed(want),
                    "{cname}: {what}: final scalar state {p}.{key} (ours: slot {slot}): got {got:e}, want {want:e}"
                );
            } else {
                assert!(
                    NOT_ELEMENTWISE.contains(&key.as_str()),
                    "{cname}: reference state {p}.{key} has no counterpart in the table"
                );
            }
        }
    }
}
