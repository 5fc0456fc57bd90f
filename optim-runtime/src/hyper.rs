//! Hyperparameters: a constant or a [`Schedule`], with a validated domain.

use crate::{OptimError, Schedule};

/// The value of one hyperparameter: a constant or a schedule over the optimizer's global step.
///
/// Every numeric hyperparameter of a DSL optimizer is a `Hyper`, so any of them — not only `lr` —
/// can be scheduled. Values are `f64`; they are evaluated once per step (at the number of
/// completed `update` calls, 0-based, like PyTorch's `scheduler.last_epoch`) and checked against
/// the hyperparameter's [`Domain`] before anything is written.
///
/// ```
/// use optim_runtime::{Hyper, Schedule};
/// let lr: Hyper = 3e-4.into();
/// assert_eq!(lr.value_at(10), 3e-4);
/// let lr: Hyper = Schedule::linear(0.0, 1.0, 10).unwrap().into();
/// assert_eq!(lr.value_at(5), 0.5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Hyper {
    /// A fixed value.
    Const(f64),
    /// A value that depends on the global step.
    Schedule(Schedule),
}

impl Hyper {
    /// The value in effect for the update with 0-based global index `step`.
    pub fn value_at(&self, step: u64) -> f64 {
        match self {
            Hyper::Const(v) => *v,
            Hyper::Schedule(s) => s.value(step),
        }
    }

    /// The largest value over every step: the constant itself, or [`Schedule::peak`].
    ///
    /// # Errors
    /// As [`Schedule::peak`]: a custom schedule without a declared peak.
    pub fn peak(&self) -> Result<f64, OptimError> {
        match self {
            Hyper::Const(v) => Ok(*v),
            Hyper::Schedule(s) => s.peak(),
        }
    }
}

impl From<f64> for Hyper {
    fn from(v: f64) -> Self {
        Hyper::Const(v)
    }
}

impl From<f32> for Hyper {
    fn from(v: f32) -> Self {
        Hyper::Const(f64::from(v))
    }
}

impl From<Schedule> for Hyper {
    fn from(s: Schedule) -> Self {
        Hyper::Schedule(s)
    }
}

pub use optim_abi::Domain;

/// Evaluates `h` at `step` and checks it against `domain`.
///
/// # Errors
/// [`OptimError::InvalidHyperparameter`] naming `optimizer` and `name` when the value is outside
/// `domain` (or not finite).
pub fn eval_hyper(
    optimizer: &'static str,
    name: &'static str,
    h: &Hyper,
    domain: Domain,
    step: u64,
) -> Result<f64, OptimError> {
    let value = h.value_at(step);
    if domain.contains(value) {
        Ok(value)
    } else {
        Err(OptimError::InvalidHyperparameter {
            optimizer,
            name,
            value,
            step,
            expected: domain.describe(),
        })
    }
}

/// The schedule multiplier `eta_t = value / peak(h)` of hyperparameter `h` at `step`, where
/// `value` is `h`'s value at `step` (already checked by [`eval_hyper`]) and `peak(h)` its
/// largest value over every step ([`Hyper::peak`]): `1` for a constant, `lr_t / max lr` for a
/// learning-rate schedule. The DSL word `scheduled_decay(x, lr, weight_decay)` computes
/// `x * (1 - eta_t * weight_decay)` with it (Loshchilov & Hutter 2019, Alg. 2), once per step.
///
/// A peak of exactly `0` (the value is 0 at every step) gives `eta_t = 0`: nothing decays, as
/// PyTorch's AdamW at `lr = 0`.
///
/// # Errors
/// [`OptimError::InvalidHyperparameter`] naming `optimizer` and `name`, with the peak as the
/// value, when the peak is negative or not finite (a schedule that grows without bound, e.g.
/// `Schedule::step` with `gamma > 1`); [`OptimError::InvalidSchedule`] when the peak is unknown
/// (a [`Schedule::from_fn`] closure: use [`Schedule::from_fn_with_peak`]).
pub fn eval_schedule_multiplier(
    optimizer: &'static str,
    name: &'static str,
    h: &Hyper,
    value: f64,
    step: u64,
) -> Result<f64, OptimError> {
    let peak = h.peak()?;
    if peak.is_finite() && peak > 0.0 {
        Ok(value / peak)
    } else if peak == 0.0 {
        Ok(0.0)
    } else {
        Err(OptimError::InvalidHyperparameter {
            optimizer,
            name,
            value: peak,
            step,
            expected: "a schedule whose peak (its largest value over every step) is finite and \
                       >= 0, as `scheduled_decay` divides by it",
        })
    }
}
