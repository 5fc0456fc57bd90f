//! Schedules: conformance with PyTorch / pytorch-optimizer / optax schedule values recorded in
//! `tests/fixtures/sched_*.json`, property tests (continuity at milestones, end values,
//! monotone phases), and serde round trips.
//!
//! Every `sched_*` file records `lr[i]`, the value in effect for update `i + 1` (i = 0..49),
//! which is `Schedule::value(i)`. Each schedule is built from the file's `hyperparameters`
//! (not restated here) and compared with the file's tolerance (rtol 1e-6, atol 1e-9).

use optim_dsl::schedule::{Anneal, Cooldown};
use optim_dsl::Schedule;
use optim_tests::fixtures::{is_close, path, Tolerance};
use proptest::prelude::*;
use serde::Deserialize;

/// A `sched_*` reference file (its format differs from the optimizer trajectories).
#[derive(Debug, Deserialize)]
struct SchedCase {
    case: String,
    semantics: String,
    hyperparameters: serde_json::Value,
    steps: usize,
    lr: Vec<f64>,
    #[serde(default)]
    momentum: Option<Vec<f64>>,
    #[serde(default)]
    lr_after_last_step: Option<f64>,
    #[serde(default)]
    value_at_count_50: Option<f64>,
    tolerance: Tolerance,
}

fn load(name: &str) -> SchedCase {
    let p = path(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}"));
    let c: SchedCase =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {p}: {e}"));
    assert_eq!(c.case, name);
    assert_eq!(c.lr.len(), c.steps, "{name}: lr.len() != steps");
    assert!(!c.semantics.is_empty());
    c
}

impl SchedCase {
    fn h(&self, key: &str) -> f64 {
        key.split('.')
            .try_fold(&self.hyperparameters, |v, k| match v {
                serde_json::Value::Array(a) => a.get(k.parse::<usize>().ok()?),
                other => other.get(k),
            })
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{}: no numeric hyperparameter {key}", self.case))
    }

    fn u(&self, key: &str) -> u64 {
        let x = self.h(key);
        assert!(x >= 0.0 && x.fract() == 0.0, "{}: {key} = {x}", self.case);
        x as u64
    }

    /// Asserts `s.value(i)` matches `want[i]` for every i, with the case tolerance.
    #[track_caller]
    fn check(&self, what: &str, s: &Schedule, want: &[f64]) {
        for (i, &w) in want.iter().enumerate() {
            let got = s.value(i as u64);
            assert!(
                is_close(got, w, &self.tolerance),
                "{}: {what}: value({i}) = {got:e}, reference {w:e} (|err| {:e} > {:e})",
                self.case,
                (got - w).abs(),
                self.tolerance.allowed(w)
            );
        }
        // The schedule also survives serde with the same values.
        let json = serde_json::to_string(s).expect("serialising a built-in schedule");
        let back: Schedule = serde_json::from_str(&json).expect("deserialising it back");
        assert_eq!(&back, s, "{}: serde round trip of {what}", self.case);
    }

    #[track_caller]
    /// [`check`](Self::check) against the reference `lr` trajectory, then the value after
    /// its last step against `lr_after_last_step`.
    fn check_through_end(&self, what: &str, s: &Schedule) {
        self.check(what, s, &self.lr);
        self.check_one(
            "after the last step",
            s.value(self.steps as u64),
            self.lr_after_last_step.unwrap(),
        );
    }

    fn check_one(&self, what: &str, got: f64, want: f64) {
        assert!(
            is_close(got, want, &self.tolerance),
            "{}: {what}: got {got:e}, reference {want:e}",
            self.case
        );
    }
}

#[test]
fn torch_warmup_cosine() {
    // SequentialLR([LinearLR(start_factor, 1.0, total_iters), CosineAnnealingLR(T_max, eta_min)]).
    let c = load("sched_torch_warmup_cosine");
    let base = c.h("base_lr");
    let start = c.h("schedulers.0.LinearLR.start_factor");
    assert_eq!(c.h("schedulers.0.LinearLR.end_factor"), 1.0);
    let warmup = c.u("schedulers.0.LinearLR.total_iters");
    let t_max = c.u("schedulers.1.CosineAnnealingLR.T_max");
    let eta_min = c.h("schedulers.1.CosineAnnealingLR.eta_min");
    assert_eq!(c.u("milestones.0"), warmup);
    let s = Schedule::warmup_cosine_torch(base, start, warmup, t_max, eta_min).unwrap();
    c.check_through_end("warmup_cosine_torch", &s);
    // T_max excludes the warmup: the optax-style constructor needs total = warmup + T_max.
    let optax_style =
        Schedule::warmup_cosine(base * start, base, warmup, warmup + t_max, eta_min).unwrap();
    c.check(
        "warmup_cosine with total = warmup + T_max",
        &optax_style,
        &c.lr,
    );
}

#[test]
fn torch_cosine() {
    let c = load("sched_torch_cosine");
    let s = Schedule::cosine(c.h("base_lr"), c.h("eta_min"), c.u("T_max")).unwrap();
    c.check_through_end("cosine", &s);
}

#[test]
fn torch_steplr() {
    let c = load("sched_torch_steplr");
    let s = Schedule::step(c.h("base_lr"), c.h("gamma"), c.u("step_size")).unwrap();
    c.check_through_end("step", &s);
    // StepLR is MultiStepLR with milestones every step_size, and optax's staircase decay.
    let every: Vec<u64> = (1..10).map(|k| k * c.u("step_size")).collect();
    c.check(
        "multi_step",
        &Schedule::multi_step(c.h("base_lr"), c.h("gamma"), every).unwrap(),
        &c.lr,
    );
    c.check(
        "exponential staircase",
        &Schedule::exponential(c.h("base_lr"), c.h("gamma"), c.u("step_size"), true, None).unwrap(),
        &c.lr,
    );
}

#[test]
fn torch_onecycle_lr_and_momentum() {
    let c = load("sched_torch_onecycle");
    assert_eq!(c.hyperparameters["anneal_strategy"], "cos");
    assert_eq!(c.hyperparameters["three_phase"], false);
    let total = c.u("total_steps");
    let pct = c.h("pct_start");
    let lr = Schedule::one_cycle(
        c.h("max_lr"),
        total,
        pct,
        Anneal::Cosine,
        c.h("div_factor"),
        c.h("final_div_factor"),
        false,
    )
    .unwrap();
    c.check("one_cycle", &lr, &c.lr);
    let m = Schedule::one_cycle_momentum(
        c.h("base_momentum"),
        c.h("max_momentum"),
        total,
        pct,
        Anneal::Cosine,
        false,
    )
    .unwrap();
    c.check("one_cycle_momentum", &m, c.momentum.as_ref().unwrap());
    // PyTorch raises past total_steps (its recorded "after" value is the cosine continued);
    // we hold the minimum.
    assert_eq!(lr.value(total), lr.value(total - 1));
}

#[test]
fn pytorch_optimizer_wsd_linear() {
    let c = load("sched_pto_wsd_linear");
    assert_eq!(c.hyperparameters["cooldown_type"], "linear");
    let base = c.h("base_lr");
    let (w, s, d) = (
        c.u("num_warmup_steps"),
        c.u("num_stable_steps"),
        c.u("num_decay_steps"),
    );
    let r = c.h("min_lr_ratio");
    // pytorch-optimizer's linear cool-down ignores min_lr_ratio (it heads to 0) ...
    let wsd = Schedule::wsd(0.0, base, 0.0, w, s, d, Cooldown::Linear).unwrap();
    c.check("wsd(end = 0)", &wsd, &c.lr);
    // ... and jumps to min_lr_ratio * lr after the decay: a join reproduces that too.
    let quirk = Schedule::join(
        vec![wsd, Schedule::constant(base * r).unwrap()],
        vec![w + s + d],
    )
    .unwrap();
    c.check_through_end("wsd joined with the floor", &quirk);
}

#[test]
fn optax_warmup_cosine() {
    let c = load("sched_optax_warmup_cosine");
    assert_eq!(c.h("exponent"), 1.0);
    let s = Schedule::warmup_cosine(
        c.h("init_value"),
        c.h("peak_value"),
        c.u("warmup_steps"),
        c.u("decay_steps"),
        c.h("end_value"),
    )
    .unwrap();
    c.check("warmup_cosine", &s, &c.lr);
    c.check_one("count 50", s.value(50), c.value_at_count_50.unwrap());
}

#[test]
fn optax_wsd() {
    let c = load("sched_optax_wsd");
    let (peak, end) = (c.h("peak"), c.h("end"));
    let (w, until, d) = (c.u("warmup_steps"), c.u("stable_until"), c.u("decay_steps"));
    let s = Schedule::wsd(0.0, peak, end, w, until - w, d, Cooldown::Linear).unwrap();
    c.check("wsd", &s, &c.lr);
    c.check_one("count 50", s.value(50), c.value_at_count_50.unwrap());
    // The file's own construction, as a join.
    let join = Schedule::join(
        vec![
            Schedule::linear(0.0, peak, w).unwrap(),
            Schedule::constant(peak).unwrap(),
            Schedule::linear(peak, end, d).unwrap(),
        ],
        vec![w, until],
    )
    .unwrap();
    c.check("join_schedules", &join, &c.lr);
}

// ---- conventions that have no reference file: checked against their defining formulas

#[test]
fn optax_one_cycle_phases_end_one_step_later_than_torch() {
    let torch = Schedule::one_cycle(0.1, 50, 0.3, Anneal::Cosine, 25.0, 1e4, false).unwrap();
    let optax = Schedule::one_cycle_optax_cosine(50, 0.1, 0.3, 25.0, 1e4).unwrap();
    assert!((torch.value(14) - 0.1).abs() < 1e-15);
    assert!((optax.value(15) - 0.1).abs() < 1e-15);
    assert!(optax.value(14) < 0.1);
    assert!((torch.value(49) - 4e-7).abs() < 1e-18);
    assert!(optax.value(49) > 4e-7);
    assert!((optax.value(50) - 4e-7).abs() < 1e-18);
    // optax linear one-cycle: up, back down to the initial value, then to the minimum.
    let lin = Schedule::one_cycle_optax_linear(100, 1.0, 0.3, 0.85, 25.0, 1e4).unwrap();
    assert!((lin.value(30) - 1.0).abs() < 1e-15);
    assert!((lin.value(85) - 0.04).abs() < 1e-15);
    assert!((lin.value(100) - 4e-6).abs() < 1e-18);
    assert!((lin.value(15) - (0.04 + 0.96 * 0.5)).abs() < 1e-12);
}

#[test]
fn torch_three_phase_one_cycle() {
    // Phase ends 14, 28, 49 for pct_start 0.3 of 50 steps.
    let s = Schedule::one_cycle(1.0, 50, 0.3, Anneal::Linear, 10.0, 100.0, true).unwrap();
    assert!((s.value(0) - 0.1).abs() < 1e-15);
    assert!((s.value(14) - 1.0).abs() < 1e-15);
    assert!((s.value(28) - 0.1).abs() < 1e-15);
    assert!((s.value(49) - 1e-3).abs() < 1e-15);
    assert!((s.value(7) - 0.55).abs() < 1e-12);
    let m = Schedule::one_cycle_momentum(0.85, 0.95, 50, 0.3, Anneal::Linear, true).unwrap();
    assert!((m.value(14) - 0.85).abs() < 1e-15);
    assert!((m.value(28) - 0.95).abs() < 1e-15);
    assert!((m.value(40) - 0.95).abs() < 1e-15);
}

#[test]
fn cosine_restarts_matches_torch_closed_form() {
    // torch CosineAnnealingWarmRestarts(T_0 = 5, T_mult = 2, eta_min = 0.01) on lr 1.0:
    // cycles [0, 5), [5, 15), [15, 35), ...
    let s = Schedule::cosine_restarts(1.0, 0.01, 5, 2).unwrap();
    let torch = |i: u64| -> f64 {
        let (t0, tm) = (5.0f64, 2.0f64);
        let e = i as f64;
        let (t_cur, t_i) = if e >= t0 {
            let n = ((e / t0 * (tm - 1.0) + 1.0).ln() / tm.ln()).floor();
            (e - t0 * (tm.powf(n) - 1.0) / (tm - 1.0), t0 * tm.powf(n))
        } else {
            (e, t0)
        };
        0.01 + (1.0 - 0.01) * (1.0 + (std::f64::consts::PI * t_cur / t_i).cos()) / 2.0
    };
    for i in 0..100 {
        assert!((s.value(i) - torch(i)).abs() < 1e-12, "step {i}");
    }
    assert_eq!(s.value(5), s.value(0));
    assert_eq!(s.value(15), s.value(0));
    let flat = Schedule::cosine_restarts(1.0, 0.0, 10, 1).unwrap();
    assert_eq!(flat.value(3), flat.value(23));
}

#[test]
fn inverse_sqrt_matches_fairseq() {
    // fairseq: warmup from 0 to lr over W updates, then lr * sqrt(W) / sqrt(num_updates).
    let s = Schedule::inverse_sqrt(0.0, 1e-3, 100).unwrap();
    assert_eq!(s.value(0), 0.0);
    assert!((s.value(50) - 5e-4).abs() < 1e-18);
    for i in [100u64, 150, 400, 10_000] {
        let want = 1e-3 * (100.0f64).sqrt() / (i as f64).sqrt();
        assert!((s.value(i) - want).abs() < 1e-15, "step {i}");
    }
}

#[test]
fn polynomial_and_exponential_match_torch() {
    // PolynomialLR(total_iters = 4, power = 2) on lr 1: (1 - i/4)^2, then 0.
    let p = Schedule::polynomial(1.0, 0.0, 2.0, 4).unwrap();
    for (i, want) in [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0].iter().enumerate() {
        assert!((p.value(i as u64) - want).abs() < 1e-15);
    }
    // ExponentialLR(gamma = 0.9): 0.9^i.
    let e = Schedule::exponential(1.0, 0.9, 1, false, None).unwrap();
    assert!((e.value(7) - 0.9f64.powi(7)).abs() < 1e-15);
    // optax exponential_decay with end_value bounds the decay (and the growth).
    assert_eq!(
        Schedule::exponential(1.0, 0.5, 1, false, Some(0.3))
            .unwrap()
            .value(10),
        0.3
    );
    assert_eq!(
        Schedule::exponential(1.0, 2.0, 1, false, Some(5.0))
            .unwrap()
            .value(10),
        5.0
    );
    // piecewise_constant: scales multiply at their boundaries.
    let pc = Schedule::piecewise_constant(1.0, &[(3, 0.5), (6, 0.1)]).unwrap();
    assert_eq!(pc.value(2), 1.0);
    assert_eq!(pc.value(3), 0.5);
    assert!((pc.value(6) - 0.05).abs() < 1e-16);
}

// ---- serde

#[test]
fn custom_schedules_refuse_serialisation_with_their_name() {
    let s = Schedule::join(
        vec![
            Schedule::constant(1.0).unwrap(),
            Schedule::from_fn("my_warmup", |i| i as f64),
        ],
        vec![3],
    )
    .unwrap();
    assert!(s.contains_custom());
    let err = serde_json::to_string(&s).unwrap_err().to_string();
    assert!(err.contains("my_warmup"), "{err}");
    assert!(err.contains("cannot be serialised"), "{err}");
    // and JSON can never produce one
    assert!(serde_json::from_str::<Schedule>(r#"{"custom": null}"#).is_err());
}

#[test]
fn non_finite_values_survive_json() {
    // plain data (the constructors refuse non-finite values, serde keeps them)
    let s = Schedule::Join {
        parts: vec![
            Schedule::Constant {
                value: f64::INFINITY,
            },
            Schedule::Constant {
                value: f64::NEG_INFINITY,
            },
        ],
        boundaries: vec![1],
    };
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        json.contains("\"inf\"") && json.contains("\"-inf\""),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
    let nan: Schedule = serde_json::from_str(r#"{"constant": {"value": "nan"}}"#).unwrap();
    assert!(nan.value(0).is_nan());
    let text = serde_json::to_string(&Schedule::cosine(0.1, 0.0, 50).unwrap()).unwrap();
    assert_eq!(text, r#"{"cosine":{"init":0.1,"end":0.0,"steps":50}}"#);
}

// ---- property tests

/// Largest jump between consecutive steps a continuous phase may make: `|dv/di|` is at most
/// `|a - b| / n` for a linear ramp over `n` steps and `pi/2 |a - b| / n` for a half cosine.
fn cosine_slope(a: f64, b: f64, n: u64) -> f64 {
    std::f64::consts::FRAC_PI_2 * (a - b).abs() / n.max(1) as f64
}

fn linear_slope(a: f64, b: f64, n: u64) -> f64 {
    (a - b).abs() / n.max(1) as f64
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
}

fn non_increasing(s: &Schedule, from: u64, to: u64) -> bool {
    (from..to).all(|i| s.value(i + 1) <= s.value(i) + 1e-15)
}

fn non_decreasing(s: &Schedule, from: u64, to: u64) -> bool {
    (from..to).all(|i| s.value(i + 1) >= s.value(i) - 1e-15)
}

fn cooldown() -> impl Strategy<Value = Cooldown> {
    prop_oneof![
        Just(Cooldown::Linear),
        Just(Cooldown::Cosine),
        Just(Cooldown::OneMinusSqrt)
    ]
}

fn any_schedule() -> impl Strategy<Value = Schedule> {
    let v = -10.0f64..10.0;
    let n = 0u64..200;
    // lengths that divide (step sizes, transition lengths, periods) are at least 1
    let n1 = 1u64..200;
    let leaf = prop_oneof![
        v.clone().prop_map(|x| Schedule::constant(x).unwrap()),
        (v.clone(), v.clone(), n.clone()).prop_map(|(a, b, s)| Schedule::linear(a, b, s).unwrap()),
        (v.clone(), v.clone(), n.clone()).prop_map(|(a, b, s)| Schedule::cosine(a, b, s).unwrap()),
        (
            v.clone(),
            v.clone(),
            v.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            cooldown()
        )
            .prop_map(|(a, b, c, w, s, d, k)| Schedule::wsd(a, b, c, w, s, d, k).unwrap()),
        (v.clone(), 0.0f64..1.0, n1.clone()).prop_map(|(a, g, s)| Schedule::step(a, g, s).unwrap()),
        (
            v.clone(),
            0.0f64..1.0,
            prop::collection::vec(n.clone(), 0..4)
        )
            .prop_map(|(a, g, mut m)| {
                m.sort_unstable();
                Schedule::multi_step(a, g, m).unwrap()
            }),
        (
            v.clone(),
            0.1f64..2.0,
            n1.clone(),
            any::<bool>(),
            prop::option::of(v.clone())
        )
            .prop_map(|(a, r, s, st, e)| Schedule::exponential(a, r, s, st, e).unwrap()),
        (v.clone(), v.clone(), 0.5f64..3.0, n.clone())
            .prop_map(|(a, b, p, s)| Schedule::polynomial(a, b, p, s).unwrap()),
        (
            0.01f64..1.0,
            2u64..500,
            0.05f64..0.9,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(m, t, p, lin, three)| {
                let a = if lin { Anneal::Linear } else { Anneal::Cosine };
                Schedule::one_cycle(m, t, p, a, 25.0, 1e4, three).unwrap()
            }),
        (v.clone(), v.clone(), n.clone())
            .prop_map(|(i, p, w)| Schedule::inverse_sqrt(i, p, w).unwrap()),
        (v.clone(), v.clone(), n1.clone(), 1u64..4)
            .prop_map(|(a, b, p, m)| Schedule::cosine_restarts(a, b, p, m).unwrap()),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        // one boundary fewer than parts, strictly increasing
        prop::collection::vec(inner, 1..4).prop_flat_map(|parts| {
            let n = parts.len() - 1;
            prop::collection::btree_set(0u64..300, n)
                .prop_map(move |b| Schedule::join(parts.clone(), b.into_iter().collect()).unwrap())
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every built-in schedule is plain data: JSON round trip gives an equal schedule with the
    /// same values.
    #[test]
    fn serde_round_trip(s in any_schedule()) {
        let json = serde_json::to_string(&s).unwrap();
        let back: Schedule = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &s);
        for i in [0u64, 1, 7, 50, 199, 1000] {
            prop_assert_eq!(back.value(i).to_bits(), s.value(i).to_bits());
        }
    }

    /// Warmup + cosine (optax convention): starts at init, reaches peak at the milestone with
    /// no jump larger than either phase's slope, rises then falls, and holds end.
    #[test]
    fn warmup_cosine_properties(
        init in 0.0f64..1.0, peak in 1.0f64..2.0, end in 0.0f64..1.0,
        warmup in 1u64..50, decay in 1u64..200,
    ) {
        let total = warmup + decay;
        let s = Schedule::warmup_cosine(init, peak, warmup, total, end).unwrap();
        prop_assert!(approx(s.value(0), init));
        prop_assert!(approx(s.value(warmup), peak));
        prop_assert!(approx(s.value(total), end));
        prop_assert!(approx(s.value(total + 1000), end));
        let bound = linear_slope(init, peak, warmup).max(cosine_slope(peak, end, decay)) + 1e-12;
        for i in 0..total + 3 {
            prop_assert!((s.value(i + 1) - s.value(i)).abs() <= bound, "jump at {}", i);
        }
        prop_assert!(non_decreasing(&s, 0, warmup));
        prop_assert!(non_increasing(&s, warmup, total + 5));
        // torch convention: the same curve with t_max = total - warmup and a start factor.
        let t = Schedule::warmup_cosine_torch(peak, init / peak, warmup, decay, end).unwrap();
        for i in 0..total + 3 {
            prop_assert!(approx(t.value(i), s.value(i)));
        }
    }

    /// Warmup-stable-decay with every cool-down: continuous at all three milestones (jumps
    /// bounded by the phase slopes), constant in the stable phase, monotone phases, ends at end.
    #[test]
    fn wsd_properties(
        init in 0.0f64..1.0, peak in 1.0f64..2.0, end in 0.0f64..1.0,
        w in 1u64..30, st in 0u64..30, d in 1u64..100, c in cooldown(),
    ) {
        let s = Schedule::wsd(init, peak, end, w, st, d, c).unwrap();
        prop_assert!(approx(s.value(0), init));
        prop_assert_eq!(s.value(w), peak);
        prop_assert_eq!(s.value(w + st), peak);
        prop_assert!(approx(s.value(w + st + d), end));
        prop_assert_eq!(s.value(w + st + d + 77), end);
        let cool = match c {
            Cooldown::Linear => linear_slope(peak, end, d),
            Cooldown::Cosine => cosine_slope(peak, end, d),
            // 1 - sqrt(q) is steepest at its start: one step drops by sqrt(1/d).
            Cooldown::OneMinusSqrt => (peak - end).abs() * (1.0 / d as f64).sqrt(),
        };
        let bound = linear_slope(init, peak, w).max(cool) + 1e-12;
        for i in 0..w + st + d + 3 {
            prop_assert!((s.value(i + 1) - s.value(i)).abs() <= bound, "jump at {}", i);
        }
        prop_assert!(non_decreasing(&s, 0, w + st));
        prop_assert!(non_increasing(&s, w, w + st + d + 3));
    }

    /// PyTorch one-cycle: starts at max/div, peaks at the end of phase 1, ends at the minimum
    /// at total - 1 and holds it; rises then falls; momentum moves the other way.
    #[test]
    fn one_cycle_properties(
        max in 0.01f64..1.0, total in 10u64..400, pct in 0.1f64..0.9, linear in any::<bool>(),
    ) {
        let a = if linear { Anneal::Linear } else { Anneal::Cosine };
        let s = Schedule::one_cycle(max, total, pct, a, 25.0, 1e4, false).unwrap();
        let m = Schedule::one_cycle_momentum(0.85, 0.95, total, pct, a, false).unwrap();
        let p1 = pct * total as f64 - 1.0;
        let p2 = total as f64 - 1.0 - p1;
        prop_assume!(p1 >= 1.0 && p2 >= 1.0);
        prop_assert!(approx(s.value(0), max / 25.0));
        prop_assert!(approx(s.value(total - 1), max / 25.0 / 1e4));
        prop_assert!(approx(s.value(total + 5), s.value(total - 1)));
        prop_assert!((0..total).all(|i| s.value(i) <= max * (1.0 + 1e-12)));
        if p1.fract() == 0.0 && p1 >= 0.0 {
            prop_assert!(approx(s.value(p1 as u64), max));
            prop_assert!(approx(m.value(p1 as u64), 0.85));
        }
        let up = p1.floor().max(0.0) as u64;
        prop_assert!(non_decreasing(&s, 0, up));
        prop_assert!(non_increasing(&s, up + 1, total + 2));
        prop_assert!(non_increasing(&m, 0, up));
        prop_assert!(non_decreasing(&m, up + 1, total + 2));
        let slope = if linear { 1.0 } else { std::f64::consts::FRAC_PI_2 };
        let (initial, min) = (max / 25.0, max / 25.0 / 1e4);
        let bound = slope * ((max - initial) / p1).max((max - min) / p2) + 1e-12;
        for i in 0..total {
            prop_assert!((s.value(i + 1) - s.value(i)).abs() <= bound, "jump at {}", i);
        }
    }

    /// Step-like schedules with a factor <= 1 never increase; exponential decay stays above its
    /// floor and reaches it; staircase is constant within a stair.
    #[test]
    fn decays_are_monotone(
        init in 0.0f64..10.0, gamma in 0.0f64..1.0, k in 1u64..20,
        ms in prop::collection::vec(0u64..100, 0..5), floor in 0.0f64..1.0,
    ) {
        prop_assert!(non_increasing(&Schedule::step(init, gamma, k).unwrap(), 0, 150));
        let mut ms = ms;
        ms.sort_unstable();
        prop_assert!(non_increasing(&Schedule::multi_step(init, gamma, ms).unwrap(), 0, 150));
        let e = Schedule::exponential(init, gamma.max(1e-3), k, false, Some(floor)).unwrap();
        prop_assert!(non_increasing(&e, 0, 150));
        prop_assert!((0..150).all(|i| e.value(i) >= floor));
        let st = Schedule::exponential(init, gamma, k, true, None).unwrap();
        prop_assert!((0..k).all(|i| st.value(i) == init));
        prop_assert!(non_increasing(&Schedule::polynomial(init + 1.0, init, 1.5, k).unwrap(), 0, 150));
        prop_assert_eq!(Schedule::polynomial(init + 1.0, init, 1.5, k).unwrap().value(k), init);
    }

    /// Inverse square root: continuous at the end of the warmup (value peak), non-increasing
    /// after it, and peak / sqrt(2) one timescale later.
    #[test]
    fn inverse_sqrt_properties(peak in 0.001f64..1.0, w in 1u64..200) {
        let s = Schedule::inverse_sqrt(0.0, peak, w).unwrap();
        prop_assert_eq!(s.value(w), peak);
        prop_assert!(non_decreasing(&s, 0, w));
        prop_assert!(non_increasing(&s, w, 5 * w));
        prop_assert!(approx(s.value(2 * w), peak / 2f64.sqrt()));
        for i in 0..3 * w {
            prop_assert!((s.value(i + 1) - s.value(i)).abs() <= peak / w as f64 + 1e-12);
        }
    }

    /// Cosine with restarts: every cycle starts at init and decreases until the next restart,
    /// the cycle lengths growing by mult.
    #[test]
    fn cosine_restart_cycles(
        init in 1.0f64..2.0, end in 0.0f64..1.0, period in 1u64..20, mult in 1u64..4,
    ) {
        let s = Schedule::cosine_restarts(init, end, period, mult).unwrap();
        let (mut start, mut len) = (0u64, period);
        for _ in 0..4 {
            prop_assert!(approx(s.value(start), init));
            prop_assert!(non_increasing(&s, start, start + len - 1));
            prop_assert!(s.value(start + len - 1) >= end - 1e-12);
            start += len;
            len *= mult;
        }
    }

    /// A join evaluates each part on its own count from its boundary: at a boundary it takes
    /// the next part's first value, just before it the previous part's value there.
    #[test]
    fn join_switches_at_milestones(a in any_schedule(), b in any_schedule(), at in 0u64..100) {
        let j = Schedule::join(vec![a.clone(), b.clone()], vec![at]).unwrap();
        prop_assert_eq!(j.value(at).to_bits(), b.value(0).to_bits());
        prop_assert_eq!(j.value(at + 9).to_bits(), b.value(9).to_bits());
        if at > 0 {
            prop_assert_eq!(j.value(at - 1).to_bits(), a.value(at - 1).to_bits());
        }
    }
}
