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
