//! The step driver's contracts (issue 10 items 7, 8, 11; issue 14's `StepSync`): an update with
//! no parameters does not advance the step, a known parameter with another shape is an error
//! or, opted in, a fresh start, shape products never overflow into a panic, every
//! whole-step decision goes through `StepSync`, and per-step scalars can be computed in the
//! parameter's precision to reproduce optax.

use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, Sgd};
use optim_dsl::{GlobalContribution, OptimError, ScalarPrecision, ShapeChange, StepSync};
use optim_tests::fixtures;
use optim_tests::params::{slice, slices};

#[test]
fn an_update_with_no_parameters_does_not_advance_the_step() {
    let mut opt = AdamW::<f64>::default();
    opt.update_slices(&mut []).unwrap();
    assert_eq!(opt.state().step, 0);
    opt.advance_step();
    assert_eq!(
        opt.state().step,
        1,
        "advance_step keeps schedules in lock-step"
    );
}

#[test]
fn a_known_parameter_with_another_shape_is_an_error_or_a_fresh_start() {
    let mut opt = Sgd::<f64>::new(optim_dsl::zoo::SgdConfig {
        lr: 0.5.into(),
        momentum: 0.9.into(),
        ..Default::default()
    })
    .unwrap();
    let (mut p, g) = ([1.0; 6], [1.0; 6]);
    opt.update_slices(&mut [slice("w", &[2, 3], &mut p, &g)])
        .unwrap();
    let before = (p, opt.state().clone());
    // transposed: same number of elements, another shape
    let err = opt
        .update_slices(&mut [slice("w", &[3, 2], &mut p, &g)])
        .unwrap_err();
    match &err {
        OptimError::ShapeMismatch { param, detail } => {
            assert_eq!(param, "w");
            assert!(
                detail.contains("[2, 3]") && detail.contains("[3, 2]"),
                "{detail}"
            );
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert_eq!((p, opt.state().clone()), before, "nothing is written");
    opt.set_shape_change(ShapeChange::Reset);
    opt.update_slices(&mut [slice("w", &[3, 2], &mut p, &g)])
        .unwrap();
    let ps = opt.state().param("w").unwrap();
    assert_eq!(ps.step, 1, "its state starts afresh");
    assert_eq!(ps.shape, vec![3, 2]);
    // a fresh momentum buffer copies the gradient (PyTorch's first step): p = 0.5 - 0.5 * 1
    assert_eq!(p, [0.0; 6]);
}

#[test]
fn a_shape_whose_product_overflows_is_an_error_not_a_panic() {
    let mut opt = AdamW::<f64>::default();
    let (mut p, g) = ([0.0; 4], [0.0; 4]);
    let shape = [usize::MAX / 2, 3];
    let err = opt
        .update_slices(&mut [slice("w", &shape, &mut p, &g)])
        .unwrap_err();
    assert!(matches!(err, OptimError::ShapeMismatch { .. }), "{err:?}");
    assert!(opt.state().params.is_empty());
}

/// A stand-in for a second process: it reports a failure from elsewhere, or contributes the
/// same global sums as this one.
struct OtherProcess {
    fail: bool,
    calls: usize,
}

impl StepSync for OtherProcess {
    fn global_sums(&mut self, c: &[GlobalContribution]) -> Result<GlobalContribution, OptimError> {
        self.calls += 1;
        let mut total = GlobalContribution::default();
        for x in c.iter().chain(c) {
            for g in 0..x.sums.len() {
                if x.produced[g] {
                    total.sums[g] += x.sums[g];
                    total.produced[g] = true;
                }
            }
        }
        Ok(total)
    }
    fn any(&mut self, local: bool) -> Result<bool, OptimError> {
        Ok(local)
    }
    fn agree(&mut self, local: Result<(), OptimError>) -> Result<(), OptimError> {
        if self.fail {
            return Err(OptimError::InvalidUse("process 1 failed".into()));
        }
        local
    }
}

optimizer! {
    /// SGD on gradients clipped to a global norm of 1.
    ClipSgd<lr = 1.0> {
        param -= lr * clip_global_norm(grad, 1.0);
    }
}

#[test]
fn whole_step_decisions_go_through_step_sync() {
    // another process failed validation: nothing is written here either
    let mut opt = ClipSgd::<f64>::default();
    let (mut p, g) = ([0.0; 2], [3.0, 4.0]);
    let mut sync = OtherProcess {
        fail: true,
        calls: 0,
    };
    let err = opt
        .update_slices_synced(&mut [slice("w", &[2], &mut p, &g)], &mut sync)
        .unwrap_err();
    assert!(matches!(err, OptimError::InvalidUse(_)));
    assert_eq!((p, opt.state().step), ([0.0; 2], 0));
    // the global norm is over both processes' gradients: sqrt(2 * 25), so the clip factor is
    // 1 / (sqrt(50) + 1e-6) and p = -g * factor
    let mut sync = OtherProcess {
        fail: false,
        calls: 0,
    };
    opt.update_slices_synced(&mut [slice("w", &[2], &mut p, &g)], &mut sync)
        .unwrap();
    let factor = 1.0 / (50.0f64.sqrt() + 1e-6);
    assert_eq!(p, [-3.0 * factor, -4.0 * factor]);
    assert_eq!(sync.calls, ClipSgd::<f64>::max_stages());
    // a process with no parameters still combines as often, and does not advance
    let mut idle = ClipSgd::<f64>::default();
    let mut sync = OtherProcess {
        fail: false,
        calls: 0,
    };
    idle.update_slices_synced(&mut [], &mut sync).unwrap();
    assert_eq!(sync.calls, ClipSgd::<f64>::max_stages());
    assert_eq!(idle.state().step, 0);
}

optimizer! {
    /// optax.adam as optax computes it (moments in the `(1 - b) g + b m` form, bias corrections
    /// divided, `p + (-lr) u`).
    OptaxAdam<lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8> {
        let mu = state(0.0);
        mu = (1.0 - b1) * grad + b1 * mu;
        let nu = state(0.0);
        nu = (1.0 - b2) * (grad * grad) + b2 * nu;
        let mu_hat = mu / (1.0 - pow(b1, step));
        let nu_hat = nu / (1.0 - pow(b2, step));
        param = param + -lr * (mu_hat / (sqrt(nu_hat) + eps));
    }
}

/// The optax trajectory with float32 bias corrections: matched within its tight tolerance only
/// when scalars are computed in the parameter's precision.
#[test]
fn scalars_in_parameter_precision_reproduce_optax() {
    let case = fixtures::load("optax_adam_f32_scalars");
    let run = |precision: ScalarPrecision| -> f64 {
        let mut opt = OptaxAdam::<f32>::default();
        opt.set_scalar_precision(precision);
        let mut worst = 0.0f64;
        let names = &case.param_order;
        let mut params: Vec<Vec<f32>> = names.iter().map(|n| case.init_f32(n)).collect();
        for t in 0..case.steps {
            let grads: Vec<Vec<f32>> = names.iter().map(|n| case.grad_f32(t, n)).collect();
            let shapes: Vec<Vec<usize>> = names.iter().map(|n| case.shape(n).to_vec()).collect();
            let mut slices = slices(names, &shapes, &mut params, &grads);
            opt.update_slices(&mut slices).unwrap();
            for (n, p) in names.iter().zip(&params) {
                for (got, want) in p.iter().zip(&case.params[t][n]) {
                    let tol = case.tolerance.atol + case.tolerance.rtol * want.abs();
                    worst = worst.max((f64::from(*got) - want).abs() / tol);
                }
            }
        }
        worst
    };
    let param_precision = run(ScalarPrecision::Param);
    let f64_scalars = run(ScalarPrecision::F64);
    assert!(
        param_precision <= 1.0,
        "f32 scalars: worst error {param_precision:.3} of the tolerance"
    );
    assert!(
        f64_scalars > 1.0,
        "f64 scalars should be told apart by this case: {f64_scalars:.3}"
    );
}
