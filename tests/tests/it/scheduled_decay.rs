//! `scheduled_decay(x, lr, weight_decay)` = `x * (1 - eta_t * weight_decay)` with
//! `eta_t = lr_t / peak(lr)` (Loshchilov & Hutter 2019, Alg. 2), against hand-computed values,
//! next to PyTorch's lr-coupled `decoupled_decay` = `x * (1 - lr_t * weight_decay)`.

use optim_dsl::prelude::*;
use optim_dsl::{OptimError, Schedule};
use optim_tests::params::slice;

optimizer! {
    /// Pure decay, the paper's form.
    PaperDecay<lr = 0.1, weight_decay = 0.1> {
        param = scheduled_decay(param, lr, weight_decay);
    }
}

optimizer! {
    /// Pure decay, PyTorch's form.
    TorchDecay<lr = 0.1, weight_decay = 0.1> {
        param = decoupled_decay(param, lr, weight_decay);
    }
}

/// `eta_t` of `warmup_cosine(0, peak, 4, 12, 0)` by hand: the ramp `t / 4` for t < 4, then
/// `(1 + cos(pi (t - 4) / 8)) / 2` (values of the cosine from a table), then 0.
const ETA: [f64; 14] = [
    0.0,
    0.25,
    0.5,
    0.75,
    1.0,
    0.961_939_766_255_643_4, // (1 + cos(pi/8)) / 2
    0.853_553_390_593_273_7, // (1 + 1/sqrt 2) / 2
    0.691_341_716_182_545,   // (1 + cos(3pi/8)) / 2
    0.5,
    0.308_658_283_817_455,
    0.146_446_609_406_726_24,
    0.038_060_233_744_356_6,
    0.0,
    0.0,
];

fn warmup_cosine(peak: f64) -> Schedule {
    Schedule::warmup_cosine(0.0, peak, 4, 12, 0.0).unwrap()
}

/// The parameter after each of `ETA.len()` steps of a pure-decay rule from `p0`.
fn run<O: DslOptimizer<f64>>(mut opt: O, p0: &[f64]) -> Vec<Vec<f64>> {
    let mut p = p0.to_vec();
    let g = vec![0.0; p.len()];
    let mut out = Vec::new();
    for _ in 0..ETA.len() {
        opt.update_slices(&mut [slice("w", &[p.len()], &mut p, &g)])
            .unwrap();
        out.push(p.clone());
    }
    out
}

#[test]
fn eta_follows_the_schedule_over_its_peak() {
    let wd = 0.1;
    let opt = PaperDecay::<f64>::default()
        .with_lr(warmup_cosine(0.5))
        .unwrap()
        .with_weight_decay(wd)
        .unwrap();
    let seq = run(opt, &[1.0, -3.0]);
    let mut want = [1.0, -3.0];
    for (t, p) in seq.iter().enumerate() {
        for (w, got) in want.iter_mut().zip(p) {
            *w *= 1.0 - ETA[t] * wd;
            assert!(
                (got - *w).abs() <= 4e-16 * w.abs(),
                "step {t}: {got} vs hand {w} (eta {})",
                ETA[t]
            );
        }
    }
    // step 0 has eta = 0 (lr_0 = 0): nothing decays; step 4 is the peak: eta = 1 exactly
    assert_eq!(seq[0], vec![1.0, -3.0]);
    assert_eq!(seq[4][0], seq[3][0] * (1.0 - wd));
}

#[test]
fn doubling_the_peak_lr_leaves_the_paper_decay_unchanged() {
    let paper = |peak: f64| {
        run(
            PaperDecay::<f64>::default()
                .with_lr(warmup_cosine(peak))
                .unwrap(),
            &[1.0, 2.5, -0.75],
        )
    };
    // a power of two scales every lr_t exactly, so eta_t and the sequence are bitwise equal
    assert_eq!(paper(0.5), paper(1.0));
    // another factor: equal up to the rounding of lr_t / peak
    for (a, b) in paper(0.5).iter().flatten().zip(paper(0.3).iter().flatten()) {
        assert!((a - b).abs() <= 1e-15 * a.abs(), "{a} vs {b}");
    }
    // PyTorch's form does depend on the peak: after the warmup (sum of lr_t = 0.75 peak) the
    // parameter has decayed by about exp(-0.1 * 0.75 * peak)
    let torch = |peak: f64| {
        run(
            TorchDecay::<f64>::default()
                .with_lr(warmup_cosine(peak))
                .unwrap(),
            &[1.0],
        )
    };
    let (t1, t2) = (torch(0.5), torch(1.0));
    // (1 - 0.1 * 0.5 * eta)... : step 3 product over eta = 0, .25, .5, .75 by hand
    let hand = |peak: f64| (1.0 - 0.025 * peak) * (1.0 - 0.05 * peak) * (1.0 - 0.075 * peak);
    assert!((t1[3][0] - hand(0.5)).abs() < 1e-15);
    assert!((t2[3][0] - hand(1.0)).abs() < 1e-15);
    assert!(t2[3][0] < t1[3][0]);
}

#[test]
fn constant_lr_decays_by_one_minus_weight_decay_whatever_its_value() {
    for lr in [1e-4, 0.1, 3.0] {
        let opt = PaperDecay::<f64>::default()
            .with_lr(lr)
            .unwrap()
            .with_weight_decay(0.25)
            .unwrap();
        let seq = run(opt, &[2.0]);
        // 2 * 0.75^t exactly (0.75 and its powers up to 14 are exact in f64)
        for (t, p) in seq.iter().enumerate() {
            assert_eq!(p[0], 2.0 * 0.75f64.powi(t as i32 + 1), "lr {lr}, step {t}");
        }
    }
}

#[test]
fn zero_weight_decay_keeps_infinite_parameters_infinite() {
    let opt = PaperDecay::<f64>::default()
        .with_lr(warmup_cosine(0.5))
        .unwrap()
        .with_weight_decay(0.0)
        .unwrap();
    let seq = run(opt, &[f64::INFINITY, f64::NEG_INFINITY, 1.5]);
    for p in seq {
        assert_eq!(p, vec![f64::INFINITY, f64::NEG_INFINITY, 1.5]);
    }
}

#[test]
fn an_lr_that_is_zero_everywhere_decays_nothing() {
    let opt = PaperDecay::<f64>::default().with_lr(0.0).unwrap();
    let seq = run(opt, &[1.0]);
    assert!(seq.iter().all(|p| p[0] == 1.0));
}

#[test]
fn an_lr_without_a_known_peak_is_refused_when_set() {
    let mut opt = PaperDecay::<f64>::default();
    let err = opt
        .set_lr(Schedule::from_fn("halving", |t| {
            0.1 * 0.5f64.powi(t as i32)
        }))
        .unwrap_err();
    assert!(matches!(err, OptimError::InvalidSchedule { .. }));
    let text = err.to_string();
    assert!(
        text.contains("custom schedule `halving` has no known peak")
            && text.contains("from_fn_with_peak"),
        "{text}"
    );
    assert_eq!(opt.config().lr, 0.1.into(), "the old value is kept");

    // declared: eta_t = lr_t / 0.1 = 0.5^t, so p = prod (1 - 0.1 * 0.5^t)
    let s = Schedule::from_fn_with_peak("halving", 0.1, |t| 0.1 * 0.5f64.powi(t as i32)).unwrap();
    let seq = run(PaperDecay::<f64>::default().with_lr(s).unwrap(), &[1.0]);
    let want = (1.0 - 0.1) * (1.0 - 0.05) * (1.0 - 0.025);
    assert!((seq[2][0] - want).abs() < 1e-16);
    assert!(Schedule::from_fn_with_peak("x", f64::NAN, |_| 0.0).is_err());
}

#[test]
fn an_lr_that_grows_without_bound_is_refused() {
    let err = PaperDecay::<f64>::default()
        .with_lr(Schedule::step(0.1, 2.0, 10).unwrap())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("invalid hyperparameter `lr` of `PaperDecay`: inf at step 0")
            && text.contains("peak"),
        "{text}"
    );
    // PyTorch's form has no peak to divide by: the same schedule is accepted
    assert!(TorchDecay::<f64>::default()
        .with_lr(Schedule::step(0.1, 2.0, 10).unwrap())
        .is_ok());
}

#[test]
fn explain_names_the_multiplier() {
    let plan = PaperDecay::<f64>::default().explain().to_string();
    assert!(plan.contains("(lr / peak(lr))"), "{plan}");
}
