//! Opt-in step metrics (issue 10, item 14) and `clip_global_norm` with non-finite gradients
//! (item 9): values computed by hand.

use optim_dsl::prelude::*;
use optim_dsl::zoo::{Sgd, SgdConfig, Shampoo};
use optim_dsl::{NonFinitePolicy, StepMetrics};
use optim_tests::params::slice;
use optim_tests::zoo::{sgd, ClipSgd};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-14 * b.abs().max(1.0)
}

#[test]
fn metrics_are_off_by_default_and_dropped_when_turned_off() {
    let mut opt = ClipSgd::<f64>::default();
    let (mut p, g) = ([0.0; 2], [3.0, 4.0]);
    opt.update_slices(&mut [slice("w", &[2], &mut p, &g)])
        .unwrap();
    assert!(opt.metrics().is_none());
    opt.set_metrics(true);
    assert!(opt.metrics().is_none(), "nothing before the next step");
    opt.update_slices(&mut [slice("w", &[2], &mut p, &g)])
        .unwrap();
    assert_eq!(opt.metrics().map(|m| m.step), Some(1));
    opt.set_metrics(false);
    assert!(opt.metrics().is_none());
}

#[test]
fn global_norm_clip_factor_and_update_rms_by_hand() {
    let mut opt = ClipSgd::<f64>::default();
    opt.set_metrics(true);
    // ‖g‖ = sqrt(9 + 16 + 144) = 13 over both parameters; factor = 1 / (13 + 1e-6)
    let (mut w, gw) = ([1.0, -1.0], [3.0, 4.0]);
    let (mut b, gb) = ([0.5], [12.0]);
    opt.update_slices(&mut [slice("w", &[2], &mut w, &gw), slice("b", &[1], &mut b, &gb)])
        .unwrap();
    let m: &StepMetrics = opt.metrics().unwrap();
    let factor = 1.0 / (13.0 + 1e-6);
    assert_eq!(m.step, 0);
    assert_eq!(m.grad_norm, 13.0);
    assert_eq!(m.global_norms, vec![13.0]);
    assert_eq!(m.clip_factor(1.0), Some(factor));
    // the factor the update really applied: w moved by -g * factor
    assert!(close(1.0 - w[0], 3.0 * factor), "{w:?}");
    // update RMS: w moved by (3, 4) * factor, RMS sqrt(12.5) * factor; b by 12 * factor
    let pw = m.params["w"];
    assert_eq!(pw.grad_norm, 5.0);
    assert!(close(pw.update_rms, 12.5f64.sqrt() * factor), "{pw:?}");
    let pb = m.params["b"];
    assert_eq!(pb.grad_norm, 12.0);
    assert!(close(pb.update_rms, 12.0 * factor), "{pb:?}");
    assert_eq!(
        (m.refreshes, m.failed_refreshes, m.skipped_inputs),
        (0, 0, 0)
    );
    // a norm below max_norm is not clipped: factor 1
    let (gw, gb) = ([0.3, 0.4], [0.0]);
    opt.update_slices(&mut [slice("w", &[2], &mut w, &gw), slice("b", &[1], &mut b, &gb)])
        .unwrap();
    let m = opt.metrics().unwrap();
    assert_eq!(m.step, 1);
    assert!(close(m.grad_norm, 0.5));
    assert_eq!(m.clip_factor(1.0), Some(1.0));
    assert!(close(m.params["w"].update_rms, 0.125f64.sqrt()));
    assert_eq!(m.params["b"].update_rms, 0.0);
}

#[test]
fn an_optimizer_without_global_reductions_still_reports_the_gradient_norm() {
    let mut opt = sgd(0.5);
    opt.set_metrics(true);
    // f32: p = 1 - 0.5 * 0.5 = 0.75 and 2 - 0.5 * (-1) = 2.5 exactly
    let (mut p, g) = ([1.0f32, 2.0], [0.5f32, -1.0]);
    opt.update_slices(&mut [slice("p", &[2], &mut p, &g)])
        .unwrap();
    let m = opt.metrics().unwrap();
    assert_eq!(m.grad_norm, 1.25f64.sqrt());
    assert!(m.global_norms.is_empty());
    assert_eq!(m.clip_factor(1.0), None);
    // update (-0.25, 0.5): RMS sqrt((0.0625 + 0.25) / 2)
    assert_eq!(m.params["p"].update_rms, 0.15625f64.sqrt());
}

#[test]
fn a_failed_or_skipped_step_keeps_the_previous_record() {
    let mut opt = ClipSgd::<f64>::default();
    opt.set_metrics(true);
    let (mut p, g) = ([0.0; 2], [3.0, 4.0]);
    opt.update_slices(&mut [slice("w", &[2], &mut p, &g)])
        .unwrap();
    let first = opt.metrics().cloned().unwrap();
    // a gradient of the wrong length: an error, nothing recorded
    let short = [1.0];
    assert!(opt
        .update_slices(&mut [slice("w", &[2], &mut p, &short)])
        .is_err());
    assert_eq!(opt.metrics(), Some(&first));
    // a skipped step: nothing moves, nothing recorded
    opt.set_non_finite_policy(NonFinitePolicy::SkipStep);
    let bad = [f64::NAN, 1.0];
    opt.update_slices(&mut [slice("w", &[2], &mut p, &bad)])
        .unwrap();
    assert_eq!(opt.metrics(), Some(&first));
    assert_eq!(opt.state().skipped_steps, 1);
}

/// Shampoo on a 3 × 2 matrix refreshes both inverse roots every step (`update_freq = 1`). A
/// left statistic corrupted with a NaN makes the next step refuse that side's refresh (the
/// right one still refreshes) and refuse the new statistics of both sides.
#[test]
fn kronecker_refreshes_and_refused_refreshes_per_step() {
    let mut opt = Shampoo::<f32>::default();
    opt.set_metrics(true);
    let mut w = [0.5f32, -1.0, 0.25, 2.0, 1.0, -0.5];
    let g = [1.0f32, -0.5, 0.25, 2.0, -1.0, 0.5];
    // one step; the step's (refreshes, failed refreshes, skipped inputs) and `w`'s metrics
    let mut step = |opt: &mut Shampoo<f32>| {
        opt.update_slices(&mut [slice("w", &[3, 2], &mut w, &g)])
            .unwrap();
        let m = opt.metrics().unwrap();
        (
            (m.refreshes, m.failed_refreshes, m.skipped_inputs),
            m.params["w"],
        )
    };
    let (counts, pw) = step(&mut opt);
    assert_eq!(counts, (2, 0, 0));
    assert_eq!(pw.refreshes, 2);
    let stats = Shampoo::<f32>::state_names(0)
        .iter()
        .position(|s| *s == "u.stats")
        .unwrap();
    opt.opt_state_mut().params.get_mut("w").unwrap().buffers[stats][1] = f32::NAN;
    let (counts, pw) = step(&mut opt);
    assert_eq!(counts, (1, 1, 2));
    assert_eq!(pw.failed_refreshes, 1);
    // the running totals in the parameter's state agree
    let st = opt.state().param("w").unwrap().matrix;
    assert_eq!((st.refreshes, st.failed_refreshes), (3, 1));
}

/// `ClipSgd` (lr 1, metrics on) after one step from `p = 0` on gradient `g` of parameter `w`:
/// the optimizer and `p`, the clipped gradient negated.
fn clipped_step(g: [f64; 3]) -> (ClipSgd<f64>, [f64; 3]) {
    let mut opt = ClipSgd::<f64>::default();
    opt.set_metrics(true);
    let mut p = [0.0; 3];
    opt.update_slices(&mut [slice("w", &[3], &mut p, &g)])
        .unwrap();
    (opt, p)
}

/// `clip_global_norm` with a non-finite gradient under the default `Propagate` policy does what
/// PyTorch's `clip_grad_norm_(error_if_nonfinite=False)` does: an infinite total norm gives the
/// factor `max_norm / (inf + 1e-6) = 0`, so finite elements become 0 and infinite ones NaN
/// (`inf * 0`); a NaN total norm gives a NaN factor (`min` propagates NaN, as `clamp` does), so
/// every element becomes NaN. SGD with lr = 1 from p = 0 shows the clipped gradient.
#[test]
fn clip_global_norm_with_non_finite_gradients_follows_pytorch() {
    let (opt, p) = clipped_step([f64::INFINITY, 2.0, -1.0]);
    assert!(p[0].is_nan(), "{p:?}");
    assert_eq!(p[1..], [0.0, 0.0]);
    let m = opt.metrics().unwrap();
    assert_eq!(m.grad_norm, f64::INFINITY);
    assert_eq!(m.clip_factor(1.0), Some(0.0));

    let mut p = [0.0f32; 3];
    let g = [-f32::INFINITY, 2.0, -1.0];
    let mut opt = ClipSgd::<f32>::default();
    opt.update_slices(&mut [slice("w", &[3], &mut p, &g)])
        .unwrap();
    assert!(p[0].is_nan(), "{p:?}");
    assert_eq!(p[1..], [0.0, 0.0]);

    let g = [f64::NAN, 2.0, -1.0];
    let (opt, p) = clipped_step(g);
    assert!(p.iter().all(|x| x.is_nan()), "{p:?}");
    assert!(opt.metrics().unwrap().clip_factor(1.0).unwrap().is_nan());

    // error_if_nonfinite=True is NonFinitePolicy::Error: an error naming the parameter, nothing
    // written
    let mut opt = ClipSgd::<f64>::default();
    opt.set_non_finite_policy(NonFinitePolicy::Error);
    let mut p = [0.0; 3];
    let err = opt
        .update_slices(&mut [slice("w", &[3], &mut p, &g)])
        .unwrap_err();
    assert!(
        matches!(&err, optim_dsl::OptimError::NonFiniteGradient { param } if param == "w"),
        "{err:?}"
    );
    assert_eq!(p, [0.0; 3]);
}

#[test]
fn metrics_on_the_dfdx_path_see_the_model_values_before_the_step() {
    // the dfdx driver copies each tensor into its host buffer inside the step; with metrics on
    // that copy must come before they capture the parameters (else `update_rms` would measure
    // the distance from an empty buffer)
    use dfdx::nn::ZeroGrads;
    use dfdx::shapes::Rank1;
    use dfdx::tensor::{AsArray, Cpu, Tensor, TensorFrom};
    let dev = Cpu::default();
    let mut model: (Tensor<Rank1<2>, f64, Cpu>, Tensor<Rank1<1>, f64, Cpu>) =
        (dev.tensor([1.0, -1.0]), dev.tensor([0.5]));
    let mut grads = model.alloc_grads();
    grads
        .get_or_alloc_mut(&model.0)
        .unwrap()
        .copy_from_slice(&[3.0, 4.0]);
    grads.get_or_alloc_mut(&model.1).unwrap()[0] = 12.0;
    let mut opt = ClipSgd::<f64>::default();
    opt.set_metrics(true);
    opt.update(&mut model, &mut grads).unwrap();
    // as `global_norm_clip_factor_and_update_rms_by_hand`: ‖g‖ = 13, factor 1 / (13 + 1e-6)
    let factor = 1.0 / (13.0 + 1e-6);
    let m = opt.metrics().unwrap();
    assert_eq!(m.grad_norm, 13.0);
    // by name: the tuple's first tensor, then its second
    let rms: Vec<f64> = m.params.values().map(|p| p.update_rms).collect();
    assert_eq!(rms.len(), 2, "{m:?}");
    assert!(close(rms[0], 12.5f64.sqrt() * factor), "{m:?}");
    assert!(close(rms[1], 12.0 * factor), "{m:?}");
    let w = model.0.array();
    assert!(close(1.0 - w[0], 3.0 * factor), "{w:?}");
    assert!(close(-1.0 - w[1], 4.0 * factor), "{w:?}");
    assert!(close(0.5 - model.1.array()[0], 12.0 * factor));
}

#[test]
fn metrics_of_a_one_loop_rule_on_the_dfdx_path_see_the_model_values() {
    // one loop: without metrics the driver would copy each tensor in just before its loop,
    // after the metrics' capture; with metrics on it copies them all first
    use dfdx::nn::ZeroGrads;
    use dfdx::shapes::Rank1;
    use dfdx::tensor::{AsArray, Cpu, Tensor, TensorFrom};
    let dev = Cpu::default();
    let mut model: (Tensor<Rank1<2>, f64, Cpu>,) = (dev.tensor([1.0, -1.0]),);
    let mut grads = model.alloc_grads();
    grads
        .get_or_alloc_mut(&model.0)
        .unwrap()
        .copy_from_slice(&[3.0, 4.0]);
    let mut opt = Sgd::<f64>::new(SgdConfig {
        lr: 0.5.into(),
        ..Default::default()
    })
    .unwrap();
    opt.set_metrics(true);
    opt.update(&mut model, &mut grads).unwrap();
    // p -= 0.5 g: moved by (1.5, 2), RMS sqrt((2.25 + 4) / 2) = 1.25 * sqrt(2)
    assert_eq!(model.0.array(), [-0.5, -3.0]);
    let m = opt.metrics().unwrap();
    let rms: Vec<f64> = m.params.values().map(|p| p.update_rms).collect();
    assert_eq!(rms.len(), 1, "{m:?}");
    assert!(close(rms[0], 1.25 * 2f64.sqrt()), "{m:?}");
}
