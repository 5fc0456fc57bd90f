//! Training-toolkit pieces of the runtime: the per-optimizer non-finite gradient policy,
//! gradient accumulation ([`GradAccumulator`]), weight EMA ([`WeightEma`], against PyTorch's
//! `AveragedModel` in `fixtures/ema_sgd_momentum.json`) and checkpoints (bit-identical resume,
//! refusal of mismatched files).
//!
//! "Bit-identical" comparisons compare `f32::to_bits` of every element.

use dfdx::tensor::{Cpu, Gradients};
use optim_dsl::prelude::*;
use optim_dsl::state::NonFinitePolicy;
use optim_dsl::zoo::{AdamW, AdamWConfig, Sgd, SgdConfig};
use optim_dsl::{Field, OptState, ParamInfo, ParamState};
use optim_runtime::{EmaCorrection, GradAccumulator, WeightEma};
use optim_tests::fixtures::{self, assert_close, Case};
use optim_tests::model::CaseModel;
use optim_tests::params::{slice, slices};
use optim_tests::state::state_bits;
use optim_tests::zoo::{sgd, ClipSgd, ClipSgdConfig};
use std::collections::BTreeMap;

// ---------------------------------------------------------------- helpers

/// Parameters of a case as owned flat vectors, in `param_order`.
struct Params {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    values: Vec<Vec<f32>>,
}

impl Params {
    fn of(case: &Case) -> Self {
        Params {
            names: case.param_order.clone(),
            shapes: case
                .param_order
                .iter()
                .map(|n| case.shape(n).to_vec())
                .collect(),
            values: case.param_order.iter().map(|n| case.init_f32(n)).collect(),
        }
    }

    /// One optimizer step with `grads` (in `names` order).
    fn step<O: DslOptimizer<f32>>(
        &mut self,
        opt: &mut O,
        grads: &[Vec<f32>],
    ) -> Result<(), OptimError> {
        let mut slices = slices(&self.names, &self.shapes, &mut self.values, grads);
        opt.update_slices(&mut slices)
    }

    /// `(name, shape, values)` of every parameter, for the accumulator's `step_slices`.
    fn triples(&mut self) -> Vec<(&str, &[usize], &mut [f32])> {
        self.names
            .iter()
            .zip(&self.shapes)
            .zip(self.values.iter_mut())
            .map(|((n, s), v)| (n.as_str(), s.as_slice(), v.as_mut_slice()))
            .collect()
    }

    fn named(&self) -> Vec<(&str, &[f32])> {
        self.names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect()
    }

    fn bits(&self) -> Vec<Vec<u32>> {
        self.values.iter().map(|v| bits(v)).collect()
    }
}

fn grads_at(case: &Case, t: usize) -> Vec<Vec<f32>> {
    case.param_order
        .iter()
        .map(|n| case.grad_f32(t, n))
        .collect()
}

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

/// AdamW with [`adamw_config`] and the non-finite `policy`.
fn adamw_with(policy: NonFinitePolicy) -> AdamW<f32> {
    let mut opt = AdamW::<f32>::new(adamw_config()).unwrap();
    opt.set_non_finite_policy(policy);
    opt
}

/// Every parameter of `model` as bits, by name.
fn model_bits(model: &CaseModel<f32, Cpu>) -> BTreeMap<String, Vec<u32>> {
    model
        .to_flat()
        .into_iter()
        .map(|(k, v)| (k, bits(&v)))
        .collect()
}

fn ema_bits(e: &WeightEma<f32>) -> Vec<(String, Vec<u32>)> {
    e.names()
        .map(|n| (n.to_string(), bits(&e.averaged(n).unwrap())))
        .collect()
}

fn adamw_config() -> AdamWConfig {
    let lr = Schedule::warmup_cosine(1e-4, 1e-2, 5, 20, 1e-4).unwrap();
    optim_tests::zoo::adamw_config(lr, 0.1)
}

/// The `adamw` case, AdamW with the non-finite `policy`, and the case's parameters after its
/// first step.
fn after_first_step(policy: NonFinitePolicy) -> (Case, AdamW<f32>, Params) {
    let case = fixtures::load("adamw");
    let mut opt = adamw_with(policy);
    let mut p = Params::of(&case);
    p.step(&mut opt, &grads_at(&case, 0)).unwrap();
    (case, opt, p)
}

/// A [`DslOptimizer`] running `O`'s rules with its own config and state, exposing
/// `config_mut` (the generated optimizers keep theirs private): shows that a checkpoint
/// restores the config.
struct Open<O: DslOptimizer<f32>> {
    config: O::Config,
    state: OptState<f32>,
}

impl<O: DslOptimizer<f32>> Open<O> {
    fn new(config: O::Config) -> Self {
        Open {
            config,
            state: OptState::default(),
        }
    }
}

impl<O: DslOptimizer<f32>> DslOptimizer<f32> for Open<O> {
    type Config = O::Config;
    fn config(&self) -> &O::Config {
        &self.config
    }
    fn opt_state(&self) -> &OptState<f32> {
        &self.state
    }
    fn opt_state_mut(&mut self) -> &mut OptState<f32> {
        &mut self.state
    }
    fn route(info: &ParamInfo<'_>) -> usize {
        O::route(info)
    }
    fn rule_count() -> usize {
        O::rule_count()
    }
    type Job<'a>
        = O::Job<'a>
    where
        Self: 'a;
    fn prepare<'a>(
        values: &'a <O::Config as OptimizerConfig>::Values,
        rule: usize,
        ps: &'a mut ParamState<f32>,
        info: ParamInfo<'a>,
        param: &'a mut [f32],
        grad: &'a [f32],
    ) -> O::Job<'a> {
        O::prepare(values, rule, ps, info, param, grad)
    }
    fn config_mut(&mut self) -> Option<&mut O::Config> {
        Some(&mut self.config)
    }
}

// ---------------------------------------------------------------- non-finite policy

#[test]
fn propagate_is_the_default_and_lets_nan_through() {
    let mut opt = sgd(0.1);
    assert_eq!(opt.non_finite_policy(), NonFinitePolicy::Propagate);
    let mut w = vec![1.0f32, 2.0];
    let g = [f32::NAN, 1.0];
    opt.update_slices(&mut [slice("w", &[2], &mut w, &g)])
        .unwrap();
    assert!(
        w[0].is_nan(),
        "PyTorch behaviour: the NaN reaches the parameter"
    );
    assert_eq!(w[1], 1.9);
    assert_eq!(opt.opt_state().step, 1);
    assert_eq!(opt.opt_state().skipped_steps, 0);
}

/// SkipStep: the bad step changes no parameter bit, no state bit, no step count; it is
/// counted in `skipped_steps`; and the trajectory afterwards is bit-identical to one that
/// never saw the bad step (schedules and bias corrections resume where they were).
#[test]
fn skip_step_leaves_every_buffer_bit_identical_and_does_not_advance() {
    let case = fixtures::load("adamw");
    let mut opt = AdamW::<f32>::new(adamw_config()).unwrap();
    let mut clean = AdamW::<f32>::new(adamw_config()).unwrap();
    opt.set_non_finite_policy(NonFinitePolicy::SkipStep);
    assert_eq!(opt.non_finite_policy(), NonFinitePolicy::SkipStep);
    let mut p = Params::of(&case);
    let mut q = Params::of(&case);
    for t in 0..3 {
        p.step(&mut opt, &grads_at(&case, t)).unwrap();
        q.step(&mut clean, &grads_at(&case, t)).unwrap();
    }
    let before_params = p.bits();
    let before_state = state_bits(opt.opt_state());

    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut g = grads_at(&case, 3);
        g[1][5] = bad; // one element of the second parameter
        p.step(&mut opt, &g).unwrap();
        assert_eq!(p.bits(), before_params, "a parameter changed ({bad})");
        let mut now = opt.opt_state().clone();
        assert_eq!(now.step, 3, "the global step advanced");
        assert!(now.params.values().all(|ps| ps.step == 3));
        now.skipped_steps = 0; // the only field that may change
        assert_eq!(state_bits(&now), before_state, "state changed ({bad})");
    }
    assert_eq!(opt.opt_state().skipped_steps, 3);

    for t in 3..8 {
        p.step(&mut opt, &grads_at(&case, t)).unwrap();
        q.step(&mut clean, &grads_at(&case, t)).unwrap();
        assert_eq!(
            p.bits(),
            q.bits(),
            "trajectory differs after the skip (step {t})"
        );
    }
    let mut a = opt.opt_state().clone();
    a.skipped_steps = 0;
    a.non_finite = NonFinitePolicy::Propagate;
    assert_eq!(state_bits(&a), state_bits(clean.opt_state()));
}

#[test]
fn skip_step_state_is_bit_identical_snapshot() {
    // The same, compared against a snapshot taken before the bad step (buffers, scalars, steps).
    let (case, mut opt, mut p) = after_first_step(NonFinitePolicy::SkipStep);
    p.step(&mut opt, &grads_at(&case, 1)).unwrap();
    let mut snapshot = opt.opt_state().clone();
    let mut g = grads_at(&case, 2);
    g[3][0] = f32::NAN;
    p.step(&mut opt, &g).unwrap();
    snapshot.skipped_steps = 1;
    assert_eq!(state_bits(opt.opt_state()), state_bits(&snapshot));
}

#[test]
fn skip_step_on_the_dfdx_path_leaves_the_model_alone() {
    let case = fixtures::load("adamw");
    let dev = Cpu::default();
    let mut model = CaseModel::<f32, Cpu>::from_case(&dev, &case);
    let mut opt = adamw_with(NonFinitePolicy::SkipStep);
    let mut grads = model.grads_from(&case.grads[0]);
    opt.update(&mut model, &mut grads).unwrap();
    let before = model_bits(&model);
    let snapshot = state_bits(opt.opt_state());
    let mut bad = case.grads[1].clone();
    bad.get_mut("w_8x16").unwrap()[7] = f64::INFINITY;
    model.write_grads(&mut grads, &bad);
    opt.update(&mut model, &mut grads).unwrap();
    let after = model_bits(&model);
    assert_eq!(after, before);
    let mut s = opt.opt_state().clone();
    assert_eq!(s.skipped_steps, 1);
    s.skipped_steps = 0;
    assert_eq!(state_bits(&s), snapshot);
    // gradients are given back unchanged
    assert!(model.grad_flat(&mut grads, "w_8x16")[7].is_infinite());
}

#[test]
fn error_policy_names_the_first_bad_parameter_and_changes_nothing() {
    let (case, mut opt, mut p) = after_first_step(NonFinitePolicy::Error);
    let before_p = p.bits();
    let before_s = state_bits(opt.opt_state());
    let mut g = grads_at(&case, 1);
    g[2][3] = f32::NAN; // b_8
    g[3][0] = f32::INFINITY; // s_1, later in the order
    let err = p.step(&mut opt, &g).unwrap_err();
    assert_eq!(
        err,
        OptimError::NonFiniteGradient {
            param: "b_8".into()
        }
    );
    assert!(err.to_string().contains("`b_8`"), "{err}");
    assert_eq!(p.bits(), before_p);
    assert_eq!(state_bits(opt.opt_state()), before_s);
    // finite gradients still step
    p.step(&mut opt, &grads_at(&case, 1)).unwrap();
    assert_eq!(opt.opt_state().step, 2);
}

// ---------------------------------------------------------------- gradient accumulation

/// Two fresh `Sgd`s with the `sgd_momentum` cases' settings (torch `SGD(lr=0.05,
/// momentum=0.9)`), one for each of the two paths a test compares.
fn sgd_momentum_pair() -> (Sgd<f32>, Sgd<f32>) {
    let config = SgdConfig {
        lr: 0.05.into(),
        momentum: 0.9.into(),
        ..Default::default()
    };
    (Sgd::new(config.clone()).unwrap(), Sgd::new(config).unwrap())
}

#[test]
fn accumulated_step_equals_one_step_on_the_mean() {
    let case = fixtures::load("sgd_momentum");
    let (mut a, mut b) = sgd_momentum_pair();
    let mut pa = Params::of(&case);
    let mut pb = Params::of(&case);
    let mut acc = GradAccumulator::<f32>::new();
    for step in 0..4 {
        let micro: Vec<Vec<Vec<f32>>> = (0..3).map(|k| grads_at(&case, 3 * step + k)).collect();
        for g in &micro {
            let named: Vec<(&str, &[f32])> = pa
                .names
                .iter()
                .zip(g)
                .map(|(n, g)| (n.as_str(), g.as_slice()))
                .collect();
            acc.add_slices(&named).unwrap();
        }
        assert_eq!(acc.micro_batches(), 3);
        // the mean by hand: ((g0 + g1) + g2) / 3 in f32
        let mean: Vec<Vec<f32>> = (0..pa.names.len())
            .map(|i| {
                (0..micro[0][i].len())
                    .map(|j| (micro[0][i][j] + micro[1][i][j] + micro[2][i][j]) / 3.0)
                    .collect()
            })
            .collect();
        for (i, n) in pa.names.iter().enumerate() {
            assert_eq!(bits(&acc.mean(n).unwrap()), bits(&mean[i]));
        }
        let mut triples = pa.triples();
        acc.step_slices(&mut a, &mut triples).unwrap();
        assert_eq!(acc.micro_batches(), 0, "reset after the step");
        pb.step(&mut b, &mean).unwrap();
        assert_eq!(pa.bits(), pb.bits(), "step {step}");
    }
    assert_eq!(a.opt_state().step, 4, "one optimizer step per accumulation");
}

/// Clipping declared in the optimizer applies once, to the averaged gradient: two
/// micro-batches with large opposite gradients average to a small one that is not clipped,
/// where clipping each micro-batch first would have shrunk them.
#[test]
fn clipping_sees_the_average_once() {
    let mut opt = ClipSgd::<f32>::new(ClipSgdConfig {
        lr: 0.5.into(),
        ..Default::default()
    })
    .unwrap();
    let mut acc = GradAccumulator::<f32>::new();
    acc.add_slices(&[("w", &[10.0, 0.0]), ("b", &[0.0])])
        .unwrap();
    acc.add_slices(&[("w", &[-9.5, 0.2]), ("b", &[0.4])])
        .unwrap();
    let mean = [acc.mean("w").unwrap(), acc.mean("b").unwrap()];
    assert_eq!(mean[0], vec![0.25, 0.1]);
    let norm = (0.25f64 * 0.25 + 0.1 * 0.1 + 0.2 * 0.2).sqrt();
    assert!(norm < 1.0, "the average is under max_norm");
    let mut w = vec![1.0f32, 1.0];
    let mut b = vec![1.0f32];
    acc.step_slices(&mut opt, &mut [("w", &[2], &mut w), ("b", &[1], &mut b)])
        .unwrap();
    // unclipped: p - 0.5 * mean
    assert_eq!(w, vec![1.0 - 0.5 * 0.25, 1.0 - 0.5 * 0.1]);
    assert_eq!(b, vec![1.0 - 0.5 * 0.2]);
    // clipping each micro-batch and averaging would have given a different update
    let clip = |g: &[f32]| -> Vec<f32> {
        let n = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        let c = (1.0 / (n + 1e-6)).min(1.0);
        g.iter().map(|x| x * c).collect()
    };
    let c1 = clip(&[10.0, 0.0, 0.0]);
    let c2 = clip(&[-9.5, 0.2, 0.4]);
    assert!((1.0 - 0.5 * (c1[0] + c2[0]) / 2.0 - w[0]).abs() > 1e-3);
}

#[test]
fn dfdx_accumulation_matches_the_slice_path() {
    let case = fixtures::load("adamw");
    let dev = Cpu::default();
    let mut model = CaseModel::<f32, Cpu>::from_case(&dev, &case);
    let mut opt = AdamW::<f32>::new(adamw_config()).unwrap();
    let mut sl_opt = AdamW::<f32>::new(adamw_config()).unwrap();
    let mut sl = Params::of(&case);
    let mut acc = GradAccumulator::<f32>::new();
    let mut sl_acc = GradAccumulator::<f32>::new();
    let mut grads: Gradients<f32, Cpu> = model.grads_from(&case.grads[0]);
    for step in 0..3 {
        for k in 0..2 {
            let t = 2 * step + k;
            model.write_grads(&mut grads, &case.grads[t]);
            acc.add_model(&model, &mut grads).unwrap();
            let g = grads_at(&case, t);
            let named: Vec<(&str, &[f32])> = sl
                .names
                .iter()
                .zip(&g)
                .map(|(n, g)| (n.as_str(), g.as_slice()))
                .collect();
            sl_acc.add_slices(&named).unwrap();
        }
        assert_eq!(acc, sl_acc, "same sums from both paths");
        let mean_b8 = acc.mean("b_8").unwrap();
        acc.step_model(&mut opt, &mut model, &mut grads).unwrap();
        assert_eq!(bits(&model.grad_flat(&mut grads, "b_8")), bits(&mean_b8));
        let mut triples = sl.triples();
        sl_acc.step_slices(&mut sl_opt, &mut triples).unwrap();
        for (i, n) in sl.names.iter().enumerate() {
            assert_eq!(bits(&model.params_flat(n)), bits(&sl.values[i]), "{n}");
        }
    }
}

#[test]
fn accumulator_errors_change_nothing() {
    let mut acc = GradAccumulator::<f32>::new();
    let mut opt = Sgd::<f32>::default();
    let mut w = vec![1.0f32; 2];
    let err = acc
        .step_slices(&mut opt, &mut [("w", &[2], &mut w)])
        .unwrap_err();
    assert!(matches!(err, OptimError::InvalidUse(_)), "{err}");
    acc.add_slices(&[("w", &[1.0, 2.0])]).unwrap();
    let before = acc.clone();
    let err = acc.add_slices(&[("w", &[1.0, 2.0, 3.0])]).unwrap_err();
    assert!(
        matches!(&err, OptimError::ShapeMismatch { param, .. } if param == "w"),
        "{err}"
    );
    let err = acc.add_slices(&[("v", &[1.0]), ("v", &[1.0])]).unwrap_err();
    assert_eq!(err, OptimError::DuplicateParam("v".into()));
    assert_eq!(acc, before);
    let err = acc
        .step_slices(
            &mut opt,
            &mut [("w", &[2], &mut w), ("u", &[1], &mut [0.0])],
        )
        .unwrap_err();
    assert!(err.to_string().contains("`u`"), "{err}");
    assert_eq!(acc, before, "a failed step keeps the accumulated gradients");
    assert_eq!(w, vec![1.0; 2]);
    assert_eq!(opt.opt_state().step, 0);
}

// ---------------------------------------------------------------- weight EMA

fn ema_reference(case_name: &str) -> (Vec<BTreeMap<String, Vec<f64>>>, Vec<u64>) {
    let text = std::fs::read_to_string(fixtures::path(case_name)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let extra = &v["extra"];
    let ema: Vec<BTreeMap<String, Vec<f64>>> =
        serde_json::from_value(extra["ema_params"].clone()).unwrap();
    let n: Vec<u64> = serde_json::from_value(extra["n_averaged"].clone()).unwrap();
    (ema, n)
}

/// torch `SGD(lr, momentum)` + `AveragedModel(get_ema_multi_avg_fn(decay))`, teacher-forced:
/// parameters and EMA after every step within the case tolerance; `n_averaged` equal.
#[test]
fn ema_matches_torch_averaged_model() {
    let case = fixtures::load("ema_sgd_momentum");
    let (want_ema, want_n) = ema_reference("ema_sgd_momentum");
    let hp = &case.hyperparameters;
    let mut opt = Sgd::<f32>::new(SgdConfig {
        lr: hp["sgd"]["lr"].as_f64().unwrap().into(),
        momentum: hp["sgd"]["momentum"].as_f64().unwrap().into(),
        ..Default::default()
    })
    .unwrap();
    let mut ema = WeightEma::<f32>::new(case.hyper_f64("ema_decay")).unwrap();
    assert_eq!(ema.correction(), EmaCorrection::CopyFirst);
    let mut p = Params::of(&case);
    for t in 0..case.steps {
        p.step(&mut opt, &grads_at(&case, t)).unwrap();
        ema.update_slices(&p.named()).unwrap();
        for (i, n) in p.names.iter().enumerate() {
            case.assert_params_at("sgd", t, n, &p.values[i]);
            assert_close(
                &case.case,
                &format!("ema after step {} [{n}]", t + 1),
                &ema.averaged(n).unwrap(),
                &want_ema[t][n],
                &case.tolerance,
            );
        }
        assert_eq!(ema.updates(), want_n[t]);
    }
    // the first update copied the parameters exactly
    let mut first = WeightEma::<f32>::new(0.99).unwrap();
    let p0 = Params::of(&case);
    first.update_slices(&p0.named()).unwrap();
    assert_eq!(
        bits(&first.averaged("w_16x8").unwrap()),
        bits(&p0.values[0])
    );
}

/// The dfdx path averages the same values as the slice path; copy/swap write the averages
/// into the model and swap restores the training weights bit for bit.
#[test]
fn ema_on_a_dfdx_model_matches_slices_and_swaps_back() {
    let case = fixtures::load("ema_sgd_momentum");
    let dev = Cpu::default();
    let mut model = CaseModel::<f32, Cpu>::from_case(&dev, &case);
    let (mut opt, mut sl_opt) = sgd_momentum_pair();
    let mut ema = WeightEma::<f32>::new(0.99).unwrap();
    let mut sl_ema = WeightEma::<f32>::new(0.99).unwrap();
    let mut p = Params::of(&case);
    let mut grads = model.grads_from(&case.grads[0]);
    for t in 0..5 {
        model.write_grads(&mut grads, &case.grads[t]);
        opt.update(&mut model, &mut grads).unwrap();
        ema.update_model(&model).unwrap();
        p.step(&mut sl_opt, &grads_at(&case, t)).unwrap();
        sl_ema.update_slices(&p.named()).unwrap();
    }
    assert_eq!(ema_bits(&ema), ema_bits(&sl_ema));

    let training = model_bits(&model);
    ema.swap_with_model(&mut model).unwrap();
    assert!(ema.is_swapped());
    for n in p.names.iter() {
        assert_eq!(bits(&model.params_flat(n)), bits(&ema.averaged(n).unwrap()));
    }
    let err = ema.update_model(&model).unwrap_err();
    assert!(matches!(err, OptimError::InvalidUse(_)), "{err}");
    ema.swap_with_model(&mut model).unwrap();
    assert!(!ema.is_swapped());
    let back = model_bits(&model);
    assert_eq!(back, training, "swap back restores the training weights");

    ema.copy_to_model(&mut model).unwrap();
    assert_eq!(
        bits(&model.params_flat("b_8")),
        bits(&ema.averaged("b_8").unwrap())
    );

    // slices: swap and swap back
    let mut w = p.values[0].clone();
    let orig = bits(&w);
    sl_ema.swap_with_slices(&mut [("w_16x8", &mut w)]).unwrap();
    assert_eq!(bits(&w), bits(&sl_ema.averaged("w_16x8").unwrap()));
    sl_ema.swap_with_slices(&mut [("w_16x8", &mut w)]).unwrap();
    assert_eq!(bits(&w), orig);
}

#[test]
fn ema_corrections_and_errors() {
    // Debias (optax ema(debias=True)): acc from zero, averaged = acc / (1 - d^n).
    let mut d = WeightEma::<f64>::new(0.5)
        .unwrap()
        .with_correction(EmaCorrection::Debias);
    d.update_slices(&[("x", &[4.0])]).unwrap();
    assert_eq!(d.averaged("x").unwrap(), vec![4.0]); // (0.5 * 4) / 0.5
    d.update_slices(&[("x", &[8.0])]).unwrap();
    // acc = 0.5 * 2 + 0.5 * 8 = 5; / (1 - 0.25) = 20/3
    assert!((d.averaged("x").unwrap()[0] - 20.0 / 3.0).abs() < 1e-12);

    // Warmup (TF num_updates): update n+1 uses min(decay, (1 + n) / (10 + n)).
    let mut w = WeightEma::<f64>::new(0.999)
        .unwrap()
        .with_correction(EmaCorrection::Warmup);
    w.update_slices(&[("x", &[0.0])]).unwrap();
    w.update_slices(&[("x", &[1.0])]).unwrap(); // decay 2/11
    assert!((w.averaged("x").unwrap()[0] - 9.0 / 11.0).abs() < 1e-12);

    assert!(matches!(
        WeightEma::<f32>::new(1.0),
        Err(OptimError::InvalidUse(_))
    ));
    let mut e = WeightEma::<f32>::new(0.9).unwrap();
    e.update_slices(&[("x", &[1.0, 2.0])]).unwrap();
    let before = e.clone();
    let err = e.update_slices(&[("x", &[1.0])]).unwrap_err();
    assert!(matches!(&err, OptimError::ShapeMismatch { param, .. } if param == "x"));
    assert_eq!(e, before);
    let err = e.copy_to_slices(&mut [("y", &mut [0.0])]).unwrap_err();
    assert!(err.to_string().contains("`y`"), "{err}");
}

// ---------------------------------------------------------------- checkpoints

/// A fresh directory for one test's checkpoint files (removed by the test).
fn checkpoint_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("optim-dsl-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 10 steps of AdamW (warmup-cosine lr) + EMA, checkpoint, load into a FRESH optimizer and a
/// FRESH EMA, 10 more steps: parameters, EMA and every state buffer are bit-identical to 20
/// uninterrupted steps. Through a file and through bytes.
#[test]
fn resume_from_checkpoint_is_bit_identical() {
    let case = fixtures::load("adamw");
    assert!(case.steps >= 20);
    let run = |opt: &mut AdamW<f32>, ema: &mut WeightEma<f32>, p: &mut Params, steps| {
        for t in steps {
            p.step(opt, &grads_at(&case, t)).unwrap();
            ema.update_slices(&p.named()).unwrap();
        }
    };

    let mut full = adamw_with(NonFinitePolicy::SkipStep);
    let mut full_ema = WeightEma::<f32>::new(0.9).unwrap();
    let mut full_p = Params::of(&case);
    run(&mut full, &mut full_ema, &mut full_p, 0..20);

    let mut first = adamw_with(NonFinitePolicy::SkipStep);
    let mut first_ema = WeightEma::<f32>::new(0.9).unwrap();
    let mut p = Params::of(&case);
    run(&mut first, &mut first_ema, &mut p, 0..10);

    let dir = checkpoint_dir("resume");
    let file = dir.join("resume.safetensors");
    first.save_checkpoint_with_ema(&file, &first_ema).unwrap();
    let bytes = first.to_checkpoint_bytes(Some(&first_ema)).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "file and bytes agree");

    for from_file in [true, false] {
        let mut opt = AdamW::<f32>::new(adamw_config()).unwrap();
        let mut ema = WeightEma::<f32>::new(0.5).unwrap(); // settings come from the file
        if from_file {
            opt.load_checkpoint_with_ema(&file, &mut ema).unwrap();
        } else {
            opt.load_checkpoint_bytes(&bytes, Some(&mut ema)).unwrap();
        }
        assert_eq!(state_bits(opt.opt_state()), state_bits(first.opt_state()));
        assert_eq!(opt.non_finite_policy(), NonFinitePolicy::SkipStep);
        assert_eq!(ema.decay(), 0.9);
        assert_eq!(ema.updates(), 10);
        let mut q = Params {
            values: p.values.clone(),
            names: p.names.clone(),
            shapes: p.shapes.clone(),
        };
        run(&mut opt, &mut ema, &mut q, 10..20);
        assert_eq!(
            q.bits(),
            full_p.bits(),
            "parameters (from_file = {from_file})"
        );
        assert_eq!(ema_bits(&ema), ema_bits(&full_ema), "EMA");
        assert_eq!(state_bits(opt.opt_state()), state_bits(full.opt_state()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An optimizer that exposes `config_mut` gets the checkpoint's config (schedules included),
/// and resumes identically even when built with the defaults.
#[test]
fn checkpoint_restores_the_config() {
    let case = fixtures::load("adamw");
    let mut a = Open::<AdamW<f32>>::new(adamw_config());
    let mut p = Params::of(&case);
    for t in 0..4 {
        p.step(&mut a, &grads_at(&case, t)).unwrap();
    }
    let bytes = a.to_checkpoint_bytes(None).unwrap();
    let mut b = Open::<AdamW<f32>>::new(AdamWConfig::default());
    b.load_checkpoint_bytes(&bytes, None).unwrap();
    assert_eq!(b.config().fields(), adamw_config().fields());
    assert!(matches!(
        &b.config().fields()[0],
        ("lr", Field::Hyper(Hyper::Schedule(_)))
    ));
    let mut q = Params {
        values: p.values.clone(),
        names: p.names.clone(),
        shapes: p.shapes.clone(),
    };
    for t in 4..8 {
        p.step(&mut a, &grads_at(&case, t)).unwrap();
        q.step(&mut b, &grads_at(&case, t)).unwrap();
    }
    assert_eq!(p.bits(), q.bits());
}

/// The file is plain safetensors: one tensor per state buffer named `{param}/{state}` with the
/// plan's state names, plus JSON metadata naming the optimizer and dtype.
#[test]
fn checkpoint_file_layout() {
    let case = fixtures::load("adamw");
    let mut opt = AdamW::<f32>::new(adamw_config()).unwrap();
    let mut p = Params::of(&case);
    p.step(&mut opt, &grads_at(&case, 0)).unwrap();
    let mut ema = WeightEma::<f32>::new(0.9).unwrap();
    ema.update_slices(&p.named()).unwrap();
    let bytes = opt.to_checkpoint_bytes(Some(&ema)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort_unstable();
    let plan = opt.explain();
    let optim_dsl::RuleBody::Fused { state, .. } = &plan.rules[0].body else {
        panic!("AdamW is one fused rule")
    };
    let mut want: Vec<String> = Vec::new();
    for n in &case.param_order {
        for s in state {
            want.push(format!("{n}/{s}"));
        }
        want.push(format!("#ema/{n}"));
    }
    want.sort_unstable();
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
    let m = st.tensor("w_16x8/m").unwrap();
    assert_eq!(m.dtype(), safetensors::Dtype::F32);
    assert_eq!(m.shape(), &[128]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["optim_dsl"]).unwrap();
    assert_eq!(meta["optimizer"], "AdamW");
    assert_eq!(meta["dtype"], "f32");
    assert_eq!(meta["step"], 1);
    assert_eq!(meta["non_finite_policy"], "propagate");
    assert_eq!(meta["config"][0][0], "lr");
    assert!(meta["config"][0][1]["schedule"]["join"].is_object());
}

/// Loading a checkpoint whose parameters, lengths, dtype or optimizer differ returns an error
/// naming the parameter (or the optimizer), and leaves the optimizer and EMA untouched.
#[test]
fn mismatched_checkpoints_are_refused_and_change_nothing() {
    let w = [0.5f32; 6];
    let g = [0.1f32; 6];
    let step_with = |opt: &mut AdamW<f32>, names: &[(&str, usize)]| {
        let mut vals: Vec<Vec<f32>> = names.iter().map(|(_, n)| w[..*n].to_vec()).collect();
        let shapes: Vec<[usize; 1]> = names.iter().map(|(_, n)| [*n]).collect();
        let mut slices: Vec<ParamSlice<'_, f32>> = names
            .iter()
            .zip(vals.iter_mut())
            .zip(&shapes)
            .map(|(((name, n), v), s)| slice(name, s, v, &g[..*n]))
            .collect();
        opt.update_slices(&mut slices).unwrap();
    };
    let mut target = AdamW::<f32>::default();
    step_with(&mut target, &[("a", 4), ("b", 6)]);
    let mut target_ema = WeightEma::<f32>::new(0.9).unwrap();
    target_ema
        .update_slices(&[("a", &w[..4]), ("b", &w[..6])])
        .unwrap();
    let before = state_bits(target.opt_state());
    let before_ema = target_ema.clone();

    let expect = |bytes: &[u8], param: &str, target: &mut AdamW<f32>| {
        let err = target.load_checkpoint_bytes(bytes, None).unwrap_err();
        match &err {
            OptimError::CheckpointMismatch { param: p, .. } => assert_eq!(p, param, "{err}"),
            other => panic!("expected a mismatch naming `{param}`, got {other}"),
        }
        assert!(err.to_string().contains(&format!("`{param}`")), "{err}");
        assert_eq!(state_bits(target.opt_state()), before);
    };

    // unknown parameter name
    let mut other = AdamW::<f32>::default();
    step_with(&mut other, &[("a", 4), ("c", 6)]);
    expect(&other.to_checkpoint_bytes(None).unwrap(), "c", &mut target);
    // wrong length
    let mut other = AdamW::<f32>::default();
    step_with(&mut other, &[("a", 4), ("b", 5)]);
    expect(&other.to_checkpoint_bytes(None).unwrap(), "b", &mut target);
    // a parameter missing from the file
    let mut other = AdamW::<f32>::default();
    step_with(&mut other, &[("a", 4)]);
    expect(&other.to_checkpoint_bytes(None).unwrap(), "b", &mut target);
    // wrong dtype (an f64 optimizer's checkpoint)
    let mut other64 = AdamW::<f64>::default();
    let mut va = vec![0.5f64; 4];
    let mut vb = vec![0.5f64; 6];
    other64
        .update_slices(&mut [
            slice("a", &[4], &mut va, &[0.1; 4]),
            slice("b", &[6], &mut vb, &[0.1; 6]),
        ])
        .unwrap();
    let bytes64 = other64.to_checkpoint_bytes(None).unwrap();
    expect(&bytes64, "a", &mut target);
    assert!(target
        .load_checkpoint_bytes(&bytes64, None)
        .unwrap_err()
        .to_string()
        .contains("f64"));

    // another optimizer type, garbage, an EMA that does not fit
    let mut sgd = Sgd::<f32>::default();
    let mut va = vec![0.5f32; 4];
    sgd.update_slices(&mut [slice("a", &[4], &mut va, &[0.1; 4])])
        .unwrap();
    let err = target
        .load_checkpoint_bytes(&sgd.to_checkpoint_bytes(None).unwrap(), None)
        .unwrap_err();
    assert!(
        matches!(&err, OptimError::Checkpoint(m) if m.contains("`Sgd`") && m.contains("`AdamW`")),
        "{err}"
    );
    let err = target
        .load_checkpoint_bytes(b"not a checkpoint", None)
        .unwrap_err();
    assert!(matches!(err, OptimError::Checkpoint(_)), "{err}");
    let err = target
        .load_checkpoint(std::env::temp_dir().join("optim-dsl-no-such-checkpoint.safetensors"))
        .unwrap_err();
    assert!(matches!(err, OptimError::Checkpoint(_)), "{err}");

    let mut good = AdamW::<f32>::default();
    step_with(&mut good, &[("a", 4), ("b", 6)]);
    let mut ema = WeightEma::<f32>::new(0.9).unwrap();
    ema.update_slices(&[("a", &w[..4]), ("z", &w[..2])])
        .unwrap();
    let err = target
        .load_checkpoint_bytes(
            &good.to_checkpoint_bytes(Some(&ema)).unwrap(),
            Some(&mut target_ema),
        )
        .unwrap_err();
    assert!(
        matches!(&err, OptimError::CheckpointMismatch { param, .. } if param == "z"),
        "{err}"
    );
    let err = target
        .load_checkpoint_bytes(
            &good.to_checkpoint_bytes(None).unwrap(),
            Some(&mut target_ema),
        )
        .unwrap_err();
    assert!(err.to_string().contains("no weight EMA"), "{err}");
    assert_eq!(state_bits(target.opt_state()), before);
    assert_eq!(target_ema, before_ema);

    // and a matching one loads
    target
        .load_checkpoint_bytes(&good.to_checkpoint_bytes(None).unwrap(), None)
        .unwrap();
    assert_eq!(state_bits(target.opt_state()), state_bits(good.opt_state()));
}

/// A custom (closure) schedule cannot be stored; it is recorded by description and must be
/// present, identical, in the optimizer loaded into.
#[test]
fn custom_schedules_are_kept_by_description() {
    let custom = Schedule::from_fn("half", |i| 1e-3 / (1.0 + i as f64));
    let config = AdamWConfig {
        lr: custom.clone().into(),
        ..Default::default()
    };
    let mut a = AdamW::<f32>::new(config.clone()).unwrap();
    let mut w = vec![1.0f32; 3];
    a.update_slices(&mut [slice("w", &[3], &mut w, &[0.1; 3])])
        .unwrap();
    let bytes = a.to_checkpoint_bytes(None).unwrap();
    let mut same = AdamW::<f32>::new(config).unwrap();
    same.load_checkpoint_bytes(&bytes, None).unwrap();
    assert_eq!(same.opt_state().step, 1);
    let mut other = AdamW::<f32>::default();
    let err = other.load_checkpoint_bytes(&bytes, None).unwrap_err();
    assert!(err.to_string().contains("custom(half)"), "{err}");
    assert_eq!(other.opt_state().step, 0);
}
