//! `Schedule::peak`: the largest value over every step, per constructor, against hand values and
//! against a scan of every step of a horizon after which the schedule no longer rises.

use optim_dsl::{Anneal, Cooldown, Schedule};

/// The largest value over steps `0..=n`, by scanning.
fn scan(s: &Schedule, n: u64) -> f64 {
    (0..=n)
        .map(|i| s.value(i))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// `join` of a constant 1, a ramp from 2 to 6 over `ramp` steps and a constant 0.5, at the
/// boundaries `at`.
fn ramp_between(ramp: u64, at: Vec<u64>) -> Schedule {
    let parts = vec![
        Schedule::constant(1.0).unwrap(),
        Schedule::linear(2.0, 6.0, ramp).unwrap(),
        Schedule::constant(0.5).unwrap(),
    ];
    Schedule::join(parts, at).unwrap()
}

#[test]
fn peaks_by_hand() {
    let cases: Vec<(&str, Schedule, f64)> = vec![
        ("constant", Schedule::constant(0.3).unwrap(), 0.3),
        ("linear up", Schedule::linear(0.1, 0.7, 10).unwrap(), 0.7),
        ("linear down", Schedule::linear(0.7, 0.1, 10).unwrap(), 0.7),
        ("cosine", Schedule::cosine(2e-3, 1e-5, 50).unwrap(), 2e-3),
        (
            "warmup_cosine",
            Schedule::warmup_cosine(0.0, 1e-3, 10, 100, 1e-5).unwrap(),
            1e-3,
        ),
        (
            "warmup_cosine, total == warmup",
            Schedule::warmup_cosine(1e-4, 1e-3, 10, 10, 1e-5).unwrap(),
            1e-3,
        ),
        (
            "warmup_cosine_torch",
            Schedule::warmup_cosine_torch(3e-3, 0.1, 5, 20, 0.0).unwrap(),
            3e-3,
        ),
        (
            "wsd",
            Schedule::wsd(0.0, 0.02, 0.002, 5, 10, 5, Cooldown::OneMinusSqrt).unwrap(),
            0.02,
        ),
        ("step, gamma < 1", Schedule::step(0.1, 0.5, 3).unwrap(), 0.1),
        (
            "multi_step, gamma > 1",
            Schedule::multi_step(0.1, 2.0, vec![3, 6]).unwrap(),
            0.4,
        ),
        (
            "piecewise_constant",
            Schedule::piecewise_constant(1.0, &[(2, 3.0), (5, 0.25)]).unwrap(),
            3.0,
        ),
        (
            "exponential, decay",
            Schedule::exponential(0.1, 0.5, 4, false, None).unwrap(),
            0.1,
        ),
        (
            "exponential, growth to end",
            Schedule::exponential(0.1, 2.0, 4, true, Some(0.35)).unwrap(),
            0.35,
        ),
        (
            "polynomial",
            Schedule::polynomial(0.5, 0.0, 2.0, 30).unwrap(),
            0.5,
        ),
        (
            "one_cycle",
            Schedule::one_cycle(0.8, 50, 0.3, Anneal::Cosine, 25.0, 1e4, false).unwrap(),
            0.8,
        ),
        (
            "one_cycle_optax_linear",
            Schedule::one_cycle_optax_linear(50, 0.8, 0.3, 0.85, 25.0, 1e4).unwrap(),
            0.8,
        ),
        (
            "inverse_sqrt",
            Schedule::inverse_sqrt(1e-7, 5e-4, 40).unwrap(),
            5e-4,
        ),
        (
            "cosine_restarts",
            Schedule::cosine_restarts(0.1, 0.001, 7, 2).unwrap(),
            0.1,
        ),
        // a join is cut: the ramp to 9 stops at step 3 (value 4); then a constant 2
        (
            "join cut",
            Schedule::join(
                vec![
                    Schedule::linear(1.0, 9.0, 8).unwrap(),
                    Schedule::constant(2.0).unwrap(),
                ],
                vec![4],
            )
            .unwrap(),
            4.0,
        ),
        // the second part counts its own steps: its peak 6 at its step 2 = global step 7
        ("join shifted", ramp_between(2, vec![5, 8]), 6.0),
        // the middle part runs its local steps 0 and 1 only (values 2 and 3)
        (
            "join cuts before the peak",
            ramp_between(4, vec![5, 7]),
            3.0,
        ),
    ];
    for (what, s, want) in cases {
        let got = s.peak().unwrap();
        assert!(
            (got - want).abs() <= 1e-15 * want.abs(),
            "{what}: {got} vs {want}"
        );
        // and it is the largest value the schedule returns, bitwise (each settles by step 400)
        assert_eq!(got, scan(&s, 400), "{what}: against a scan");
    }
}

#[test]
fn peaks_that_need_the_whole_horizon() {
    // a decaying step schedule that starts negative rises towards 0 and reaches it (underflow)
    let s = Schedule::step(-1.0, 0.5, 1).unwrap();
    assert_eq!(s.peak().unwrap(), 0.0);
    // growth without a bound overflows to inf
    assert_eq!(
        Schedule::step(0.1, 2.0, 10).unwrap().peak().unwrap(),
        f64::INFINITY
    );
    assert_eq!(
        Schedule::exponential(0.1, 1.5, 1, false, None)
            .unwrap()
            .peak()
            .unwrap(),
        f64::INFINITY
    );
    // a negative factor alternates the sign: the largest is init * gamma
    let s = Schedule::step(-1.0, -0.5, 2).unwrap();
    assert_eq!(s.peak().unwrap(), 0.5);
    assert_eq!(s.peak().unwrap(), scan(&s, 200));
    // warm restarts rising within each cycle: cycles of 3, 6, 12, ... steps, each ends higher;
    // within the first 21 steps the highest is the last step of the 12-step cycle (step 20)
    let s = Schedule::cosine_restarts(0.0, 1.0, 3, 2).unwrap();
    let cut = Schedule::join(vec![s.clone(), Schedule::constant(0.0).unwrap()], vec![21]).unwrap();
    let hand = 0.5 * (1.0 - (std::f64::consts::PI * 11.0 / 12.0).cos());
    assert!((cut.peak().unwrap() - hand).abs() < 1e-15);
    assert_eq!(cut.peak().unwrap(), scan(&cut, 100));
    // uncut, the cycles approach `end` = 1
    assert!((s.peak().unwrap() - 1.0).abs() < 1e-15);
}

#[test]
fn custom_schedules_need_a_declared_peak() {
    let err = Schedule::from_fn("mine", |_| 0.1).peak().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argument `peak` of `Schedule::from_fn`: custom schedule `mine` has no known \
         peak; build it with `Schedule::from_fn_with_peak` to use it where its peak is needed \
         (`scheduled_decay`)"
    );
    let s = Schedule::from_fn_with_peak("mine", 0.25, |_| 0.1).unwrap();
    assert_eq!(s.peak().unwrap(), 0.25);
    // inside a join too
    let j = Schedule::join(
        vec![
            Schedule::constant(0.5).unwrap(),
            Schedule::from_fn("mine", |_| 0.1),
        ],
        vec![3],
    )
    .unwrap();
    assert!(j.peak().is_err());
}
