//! Unit checks of the closed forms (conformance with PyTorch and optax is in
//! `tests/tests/it/schedules.rs`).

use super::eval::restart_position;
use super::Schedule;

/// `s.value(step) == value` exactly for every `(step, value)`.
fn assert_values(s: &Schedule, expected: &[(u64, f64)]) {
    for &(step, value) in expected {
        assert_eq!(s.value(step), value, "{s:?} at step {step}");
    }
}

#[test]
fn linear_hits_both_ends_and_holds() {
    let s = Schedule::linear(1.0, 3.0, 4).unwrap();
    assert_values(&s, &[(0, 1.0), (2, 2.0), (4, 3.0), (100, 3.0)]);
}

#[test]
fn cosine_midpoint_is_mean_of_ends() {
    let s = Schedule::cosine(1.0, 0.0, 10).unwrap();
    assert_eq!(s.value(0), 1.0);
    assert!((s.value(5) - 0.5).abs() < 1e-15);
    assert!(s.value(10).abs() < 1e-15);
}

#[test]
fn join_restarts_count_at_boundary() {
    let s = Schedule::join(
        vec![
            Schedule::constant(1.0).unwrap(),
            Schedule::linear(0.0, 10.0, 10).unwrap(),
        ],
        vec![3],
    )
    .unwrap();
    assert_eq!(s.value(2), 1.0);
    assert_eq!(s.value(3), 0.0);
    assert_eq!(s.value(8), 5.0);
}

#[test]
fn warmup_cosine_total_includes_warmup() {
    let s = Schedule::warmup_cosine(0.0, 1.0, 10, 110, 0.1).unwrap();
    assert_eq!(s.value(10), 1.0);
    assert!((s.value(110) - 0.1).abs() < 1e-15);
    assert!((s.value(60) - 0.55).abs() < 1e-12);
}

#[test]
fn warmup_cosine_torch_excludes_warmup() {
    let s = Schedule::warmup_cosine_torch(1.0, 0.1, 10, 100, 0.1).unwrap();
    assert!((s.value(0) - 0.1).abs() < 1e-15);
    assert_eq!(s.value(10), 1.0);
    assert!((s.value(110) - 0.1).abs() < 1e-15);
    assert!((s.value(60) - 0.55).abs() < 1e-12);
}

#[test]
fn restarts_lengthen_cycles() {
    assert_eq!(restart_position(0, 10, 2), (0, 10));
    assert_eq!(restart_position(9, 10, 2), (9, 10));
    assert_eq!(restart_position(10, 10, 2), (0, 20));
    assert_eq!(restart_position(29, 10, 2), (19, 20));
    assert_eq!(restart_position(30, 10, 2), (0, 40));
    assert_eq!(restart_position(25, 10, 1), (5, 10));
}

#[test]
fn step_and_multistep() {
    let s = Schedule::step(1.0, 0.5, 10).unwrap();
    assert_values(&s, &[(9, 1.0), (10, 0.5), (25, 0.25)]);
    let m = Schedule::multi_step(1.0, 0.1, vec![3, 7, 7]).unwrap();
    assert_eq!(m.value(2), 1.0);
    assert!((m.value(3) - 0.1).abs() < 1e-15);
    assert!((m.value(7) - 1e-3).abs() < 1e-15);
}

#[test]
fn exponential_is_bounded_by_end() {
    let s = Schedule::exponential(1.0, 0.5, 2, false, Some(0.2)).unwrap();
    assert_eq!(s.value(0), 1.0);
    assert!((s.value(1) - 0.5f64.sqrt()).abs() < 1e-15);
    assert_eq!(s.value(100), 0.2);
    let st = Schedule::exponential(1.0, 0.5, 2, true, None).unwrap();
    assert_eq!(st.value(1), 1.0);
    assert_eq!(st.value(2), 0.5);
}

/// The checkpoint form of a warmup-stable-decay schedule is the one written before its fields
/// became [`super::Wsd`] (issue 9): the same JSON text, and that text loads back.
#[test]
fn wsd_serialises_as_the_former_struct_variant() {
    let s = Schedule::wsd(0.0, 1.0, 0.1, 5, 25, 20, super::Cooldown::OneMinusSqrt).unwrap();
    let old = r#"{"warmup_stable_decay":{"init":0.0,"peak":1.0,"end":0.1,"warmup":5,"stable":25,"decay":20,"cooldown":"one_minus_sqrt"}}"#;
    assert_eq!(serde_json::to_string(&s).unwrap(), old);
    let back: Schedule = serde_json::from_str(old).unwrap();
    assert_eq!(format!("{back:?}"), format!("{s:?}"));
    assert_eq!(
        format!("{s:?}"),
        "wsd(0 -> 1 over 5, 25 stable, OneMinusSqrt -> 0.1 over 20)"
    );
    assert_eq!(back.value(17), 1.0);
}

/// The exponential schedule's own struct serialises and prints as its former struct variant,
/// and a non-finite `end` survives JSON.
#[test]
fn exponential_serialises_as_the_former_struct_variant() {
    let s = Schedule::exponential(2.0, 0.5, 4, true, Some(0.25)).unwrap();
    let old = r#"{"exponential":{"init":2.0,"rate":0.5,"steps":4,"staircase":true,"end":0.25}}"#;
    assert_eq!(serde_json::to_string(&s).unwrap(), old);
    let back: Schedule = serde_json::from_str(old).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        format!("{s:?}"),
        "exponential(2 x 0.5 per 4 steps, staircase, bound 0.25)"
    );
    // staircase: floor(9 / 4) = 2 halvings; then the floor 0.25 from step 12 on
    assert_eq!(back.value(9), 0.5);
    assert_eq!(back.value(40), 0.25);
    // `end` may be absent in old data, and non-finite values are strings
    let bare = r#"{"exponential":{"init":"inf","rate":1.0,"steps":1,"staircase":false}}"#;
    let b: Schedule = serde_json::from_str(bare).unwrap();
    assert_eq!(format!("{b:?}"), "exponential(inf x 1 per 1 steps)");
    assert_eq!(b.value(3), f64::INFINITY);
}
