//! Schedule constructors check their arguments: one test per rule, each asserting the error
//! (`OptimError::InvalidSchedule` naming the constructor and the bad argument) and the values
//! of the accepted edge cases.

use optim_dsl::schedule::{Anneal, Cooldown};
use optim_dsl::{OptimError, Schedule};

/// `r` is an `InvalidSchedule` error of constructor `schedule` naming `argument`.
#[track_caller]
fn refused(r: Result<Schedule, OptimError>, schedule: &str, argument: &str) {
    match r {
        Err(OptimError::InvalidSchedule {
            schedule: s,
            argument: a,
            detail,
        }) => {
            assert_eq!((s, a), (schedule, argument), "{detail}");
            assert!(!detail.is_empty());
        }
        Err(other) => panic!("expected InvalidSchedule for `{argument}`, got {other}"),
        Ok(s) => panic!("expected InvalidSchedule for `{argument}`, got Ok({s:?})"),
    }
}

#[test]
fn the_error_names_the_constructor_and_the_argument() {
    let err = Schedule::warmup_cosine(0.0, 1.0, 11, 10, 0.0).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`Schedule::warmup_cosine`"), "{text}");
    assert!(text.contains("`warmup`"), "{text}");
    assert!(text.contains("11") && text.contains("10"), "{text}");
}

#[test]
fn values_must_be_finite() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        refused(Schedule::constant(bad), "constant", "value");
        refused(Schedule::linear(bad, 1.0, 5), "linear", "start");
        refused(Schedule::linear(1.0, bad, 5), "linear", "end");
        refused(Schedule::cosine(bad, 0.0, 5), "cosine", "init");
        refused(Schedule::cosine(1.0, bad, 5), "cosine", "end");
        refused(
            Schedule::warmup_cosine(bad, 1.0, 2, 5, 0.0),
            "warmup_cosine",
            "init",
        );
        refused(
            Schedule::warmup_cosine(0.0, bad, 2, 5, 0.0),
            "warmup_cosine",
            "peak",
        );
        refused(
            Schedule::warmup_cosine(0.0, 1.0, 2, 5, bad),
            "warmup_cosine",
            "end",
        );
        refused(
            Schedule::warmup_cosine_torch(bad, 0.1, 2, 5, 0.0),
            "warmup_cosine_torch",
            "lr",
        );
        refused(
            Schedule::warmup_cosine_torch(1.0, 0.1, 2, 5, bad),
            "warmup_cosine_torch",
            "end",
        );
        refused(
            Schedule::wsd(0.0, bad, 0.0, 1, 1, 1, Cooldown::Linear),
            "wsd",
            "peak",
        );
        refused(Schedule::step(1.0, bad, 3), "step", "gamma");
        refused(
            Schedule::multi_step(bad, 0.1, vec![3]),
            "multi_step",
            "init",
        );
        refused(
            Schedule::piecewise_constant(bad, &[(3, 0.5)]),
            "piecewise_constant",
            "init",
        );
        refused(
            Schedule::exponential(1.0, 0.5, 2, false, Some(bad)),
            "exponential",
            "end",
        );
        refused(Schedule::polynomial(1.0, bad, 2.0, 4), "polynomial", "end");
        refused(
            Schedule::interpolate(&[(0.0, 1.0), (bad, 0.5)], Anneal::Linear),
            "interpolate",
            "knots",
        );
        refused(
            Schedule::one_cycle(bad, 50, 0.3, Anneal::Cosine, 25.0, 1e4, false),
            "one_cycle",
            "max",
        );
        refused(
            Schedule::one_cycle_momentum(0.85, bad, 50, 0.3, Anneal::Cosine, false),
            "one_cycle_momentum",
            "max",
        );
        refused(
            Schedule::one_cycle_optax_cosine(50, bad, 0.3, 25.0, 1e4),
            "one_cycle_optax_cosine",
            "peak",
        );
        refused(
            Schedule::one_cycle_optax_linear(50, bad, 0.3, 0.85, 25.0, 1e4),
            "one_cycle_optax_linear",
            "peak",
        );
        refused(Schedule::inverse_sqrt(bad, 1.0, 10), "inverse_sqrt", "init");
        refused(Schedule::inverse_sqrt(0.0, bad, 10), "inverse_sqrt", "peak");
        refused(
            Schedule::cosine_restarts(1.0, bad, 5, 2),
            "cosine_restarts",
            "end",
        );
    }
    // finite values build, and evaluate to themselves
    assert_eq!(Schedule::constant(2.5).unwrap().value(7), 2.5);
    assert_eq!(Schedule::linear(-1.0, 3.0, 4).unwrap().value(2), 1.0);
}

#[test]
fn warmup_cannot_be_longer_than_total() {
    refused(
        Schedule::warmup_cosine(0.0, 1.0, 11, 10, 0.0),
        "warmup_cosine",
        "warmup",
    );
    // warmup == total is allowed (see the next test), and so is no warmup at all
    let s = Schedule::warmup_cosine(0.5, 1.0, 0, 10, 0.0).unwrap();
    assert_eq!(s.value(0), 1.0);
    assert!((s.value(5) - 0.5).abs() < 1e-15);
    assert_eq!(s.value(10), 0.0);
}

/// The value at the end of the warmup is exactly the peak, whatever the lengths, in both
/// conventions; with no decay phase (`total == warmup`, `t_max == 0`) the decay takes one step.
#[test]
fn warmup_cosine_reaches_the_peak_at_the_end_of_warmup() {
    let peak = 0.3; // not a power of two: exactness is not a rounding accident
    for warmup in [0u64, 1, 3, 7] {
        for decay in [0u64, 1, 2, 9] {
            let optax = Schedule::warmup_cosine(0.01, peak, warmup, warmup + decay, 1e-3).unwrap();
            let torch =
                Schedule::warmup_cosine_torch(peak, 0.01 / peak, warmup, decay, 1e-3).unwrap();
            for s in [&optax, &torch] {
                assert_eq!(
                    s.value(warmup),
                    peak,
                    "warmup {warmup}, decay {decay}: {s:?}"
                );
                let after = warmup + decay.max(1);
                assert_eq!(s.value(after), 1e-3, "end at step {after}");
                assert_eq!(s.value(after + 100), 1e-3);
                if warmup > 0 {
                    assert!((s.value(0) - 0.01).abs() < 1e-15, "starts at init");
                }
            }
        }
    }
    // total == warmup, spelled out: warmup 0.1 -> 1.0 over 4 steps, then the end value.
    let s = Schedule::warmup_cosine(0.1, 1.0, 4, 4, 0.01).unwrap();
    let t = Schedule::warmup_cosine_torch(1.0, 0.1, 4, 0, 0.01).unwrap();
    for (i, want) in [0.1, 0.325, 0.55, 0.775, 1.0, 0.01, 0.01]
        .iter()
        .enumerate()
    {
        assert!((s.value(i as u64) - want).abs() < 1e-15, "optax, step {i}");
        assert!((t.value(i as u64) - want).abs() < 1e-15, "torch, step {i}");
    }
}

#[test]
fn start_factor_is_a_fraction() {
    for bad in [-0.1, 1.5, f64::NAN] {
        refused(
            Schedule::warmup_cosine_torch(1.0, bad, 5, 10, 0.0),
            "warmup_cosine_torch",
            "start_factor",
        );
    }
    // 0 (a warmup from 0, which PyTorch refuses) is the user asking for a start at 0
    let s = Schedule::warmup_cosine_torch(2.0, 0.0, 4, 10, 0.0).unwrap();
    assert_eq!(s.value(0), 0.0);
    assert_eq!(s.value(2), 1.0);
    assert_eq!(s.value(4), 2.0);
}

#[test]
fn step_size_cannot_be_zero() {
    refused(Schedule::step(1.0, 0.5, 0), "step", "step_size");
    let s = Schedule::step(1.0, 0.5, 3).unwrap();
    assert_eq!(
        [s.value(0), s.value(2), s.value(3), s.value(6)],
        [1.0, 1.0, 0.5, 0.25]
    );
}

#[test]
fn milestones_must_be_sorted() {
    refused(
        Schedule::multi_step(1.0, 0.1, vec![5, 3]),
        "multi_step",
        "milestones",
    );
    // a milestone listed twice applies twice, as in PyTorch
    let s = Schedule::multi_step(1.0, 0.5, vec![3, 3, 7]).unwrap();
    assert_eq!([s.value(2), s.value(3), s.value(7)], [1.0, 0.25, 0.125]);
}

#[test]
fn piecewise_constant_boundaries_increase_and_scales_are_non_negative() {
    let name = "piecewise_constant";
    let arg = "boundaries_and_scales";
    refused(
        Schedule::piecewise_constant(1.0, &[(6, 0.5), (3, 0.1)]),
        name,
        arg,
    );
    refused(
        Schedule::piecewise_constant(1.0, &[(3, 0.5), (3, 0.1)]),
        name,
        arg,
    );
    refused(Schedule::piecewise_constant(1.0, &[(3, -0.5)]), name, arg);
    refused(
        Schedule::piecewise_constant(1.0, &[(3, f64::NAN)]),
        name,
        arg,
    );
    let s = Schedule::piecewise_constant(2.0, &[(3, 0.5), (6, 0.0)]).unwrap();
    assert_eq!([s.value(2), s.value(3), s.value(6)], [2.0, 1.0, 0.0]);
}

#[test]
fn exponential_needs_a_transition_length_and_a_non_negative_rate() {
    refused(
        Schedule::exponential(1.0, 0.5, 0, false, None),
        "exponential",
        "steps",
    );
    refused(
        Schedule::exponential(1.0, -0.5, 2, false, None),
        "exponential",
        "rate",
    );
    refused(
        Schedule::exponential(1.0, f64::INFINITY, 2, false, None),
        "exponential",
        "rate",
    );
    refused(
        Schedule::exponential(f64::NAN, 0.5, 2, false, None),
        "exponential",
        "init",
    );
    let s = Schedule::exponential(8.0, 0.5, 2, true, None).unwrap();
    assert_eq!([s.value(1), s.value(2), s.value(5)], [8.0, 4.0, 2.0]);
    // rate 0 with a staircase: init for the first stair, then 0
    let z = Schedule::exponential(8.0, 0.0, 2, true, None).unwrap();
    assert_eq!([z.value(1), z.value(2)], [8.0, 0.0]);
}

#[test]
fn polynomial_power_is_positive() {
    refused(
        Schedule::polynomial(1.0, 0.0, 0.0, 4),
        "polynomial",
        "power",
    );
    refused(
        Schedule::polynomial(1.0, 0.0, -1.0, 4),
        "polynomial",
        "power",
    );
    refused(
        Schedule::polynomial(1.0, 0.0, f64::NAN, 4),
        "polynomial",
        "power",
    );
    let s = Schedule::polynomial(1.0, 0.0, 2.0, 4).unwrap();
    assert_eq!([s.value(0), s.value(2), s.value(4)], [1.0, 0.25, 0.0]);
}

#[test]
fn interpolate_needs_knots() {
    refused(
        Schedule::interpolate(&[], Anneal::Linear),
        "interpolate",
        "knots",
    );
    // given out of order, the knots are sorted
    let s = Schedule::interpolate(&[(10.0, 0.0), (0.0, 1.0)], Anneal::Linear).unwrap();
    assert_eq!([s.value(0), s.value(5), s.value(10)], [1.0, 0.5, 0.0]);
}

#[test]
fn one_cycle_checks_follow_pytorch() {
    let n = "one_cycle";
    let c = Anneal::Cosine;
    refused(
        Schedule::one_cycle(0.1, 0, 0.3, c, 25.0, 1e4, false),
        n,
        "total_steps",
    );
    refused(
        Schedule::one_cycle(0.1, 50, 1.5, c, 25.0, 1e4, false),
        n,
        "pct_start",
    );
    refused(
        Schedule::one_cycle(0.1, 50, -0.1, c, 25.0, 1e4, false),
        n,
        "pct_start",
    );
    refused(
        Schedule::one_cycle(0.1, 50, 0.3, c, 0.0, 1e4, false),
        n,
        "div_factor",
    );
    refused(
        Schedule::one_cycle(0.1, 50, 0.3, c, 25.0, -1.0, false),
        n,
        "final_div_factor",
    );
    let m = "one_cycle_momentum";
    refused(
        Schedule::one_cycle_momentum(0.85, 0.95, 0, 0.3, c, false),
        m,
        "total_steps",
    );
    refused(
        Schedule::one_cycle_momentum(0.85, 0.95, 50, 2.0, c, false),
        m,
        "pct_start",
    );
    refused(
        Schedule::one_cycle_momentum(f64::NAN, 0.95, 50, 0.3, c, false),
        m,
        "base",
    );
    // PyTorch's first value is max / div_factor, its last min = initial / final_div_factor
    let s = Schedule::one_cycle(0.1, 50, 0.3, c, 25.0, 1e4, false).unwrap();
    assert!((s.value(0) - 0.004).abs() < 1e-18);
    assert!((s.value(49) - 4e-7).abs() < 1e-20);
}

#[test]
fn optax_one_cycles_check_their_phases() {
    let n = "one_cycle_optax_cosine";
    refused(
        Schedule::one_cycle_optax_cosine(0, 0.1, 0.3, 25.0, 1e4),
        n,
        "transition_steps",
    );
    refused(
        Schedule::one_cycle_optax_cosine(50, 0.1, 1.2, 25.0, 1e4),
        n,
        "pct_start",
    );
    refused(
        Schedule::one_cycle_optax_cosine(50, 0.1, 0.3, -25.0, 1e4),
        n,
        "div_factor",
    );
    refused(
        Schedule::one_cycle_optax_cosine(50, 0.1, 0.3, 25.0, 0.0),
        n,
        "final_div_factor",
    );
    let l = "one_cycle_optax_linear";
    refused(
        Schedule::one_cycle_optax_linear(0, 1.0, 0.3, 0.85, 25.0, 1e4),
        l,
        "transition_steps",
    );
    refused(
        Schedule::one_cycle_optax_linear(100, 1.0, 0.9, 0.85, 25.0, 1e4),
        l,
        "pct_final",
    );
    refused(
        Schedule::one_cycle_optax_linear(100, 1.0, 0.3, 1.85, 25.0, 1e4),
        l,
        "pct_final",
    );
    let s = Schedule::one_cycle_optax_linear(100, 1.0, 0.3, 0.85, 25.0, 1e4).unwrap();
    assert_eq!(s.value(0), 0.04);
    assert_eq!(s.value(30), 1.0);
}

/// No constructor starts at 0 unless asked: the inverse square root's warmup start is an
/// argument.
#[test]
fn inverse_sqrt_starts_where_asked() {
    let s = Schedule::inverse_sqrt(1e-4, 1e-3, 100).unwrap();
    assert_eq!(s.value(0), 1e-4);
    assert!((s.value(50) - 5.5e-4).abs() < 1e-18);
    assert_eq!(s.value(100), 1e-3);
    assert!((s.value(400) - 1e-3 * (100.0f64 / 400.0).sqrt()).abs() < 1e-18);
    let zero = Schedule::inverse_sqrt(0.0, 1e-3, 100).unwrap();
    assert_eq!(zero.value(0), 0.0);
}

#[test]
fn restart_period_and_mult_are_at_least_one() {
    let n = "cosine_restarts";
    refused(Schedule::cosine_restarts(1.0, 0.0, 0, 2), n, "period");
    refused(Schedule::cosine_restarts(1.0, 0.0, 5, 0), n, "mult");
    refused(Schedule::cosine_restarts(f64::NAN, 0.0, 5, 2), n, "init");
    let s = Schedule::cosine_restarts(1.0, 0.0, 2, 1).unwrap();
    assert_eq!([s.value(0), s.value(1), s.value(2)], [1.0, 0.5, 1.0]);
}

#[test]
fn join_has_one_boundary_fewer_than_parts() {
    let a = || Schedule::constant(1.0).unwrap();
    let b = || Schedule::constant(2.0).unwrap();
    refused(Schedule::join(vec![a(), b()], vec![]), "join", "boundaries");
    refused(
        Schedule::join(vec![a(), b()], vec![3, 5]),
        "join",
        "boundaries",
    );
    refused(Schedule::join(vec![a()], vec![3]), "join", "boundaries");
    refused(Schedule::join(vec![], vec![]), "join", "parts");
    let s = Schedule::join(vec![a(), b()], vec![3]).unwrap();
    assert_eq!([s.value(2), s.value(3)], [1.0, 2.0]);
    // one part, no boundary: the part itself
    assert_eq!(Schedule::join(vec![b()], vec![]).unwrap().value(9), 2.0);
}

#[test]
fn join_boundaries_increase_strictly() {
    let c = |v: f64| Schedule::constant(v).unwrap();
    refused(
        Schedule::join(vec![c(1.0), c(2.0), c(3.0)], vec![5, 3]),
        "join",
        "boundaries",
    );
    refused(
        Schedule::join(vec![c(1.0), c(2.0), c(3.0)], vec![4, 4]),
        "join",
        "boundaries",
    );
    let s = Schedule::join(vec![c(1.0), c(2.0), c(3.0)], vec![3, 5]).unwrap();
    assert_eq!([s.value(2), s.value(4), s.value(5)], [1.0, 2.0, 3.0]);
}

#[test]
fn wsd_accepts_empty_phases() {
    let s = Schedule::wsd(0.5, 1.0, 0.0, 0, 0, 4, Cooldown::Linear).unwrap();
    assert_eq!([s.value(0), s.value(2), s.value(4)], [1.0, 0.5, 0.0]);
    refused(
        Schedule::wsd(f64::NAN, 1.0, 0.0, 1, 1, 1, Cooldown::Cosine),
        "wsd",
        "init",
    );
    refused(
        Schedule::wsd(0.0, 1.0, f64::INFINITY, 1, 1, 1, Cooldown::Cosine),
        "wsd",
        "end",
    );
}
