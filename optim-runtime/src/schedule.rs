//! Schedules: hyperparameter values as a function of the optimizer's global step.
//!
//! Convention: `value(i)` is the value in effect for the update with 0-based index `i`, i.e. the
//! `(i+1)`-th call of `update` — PyTorch's `lr[i]` after `i` calls of `scheduler.step()`, optax's
//! `schedule(count = i)`. Arithmetic is `f64`.

use std::fmt;
use std::sync::Arc;

/// A hyperparameter schedule. Plain data (`Clone`, `Debug`, `PartialEq`), composable with
/// [`Schedule::join`].
///
/// ```
/// use optim_runtime::Schedule;
/// // 5 steps of linear warmup from 1e-3 to 1e-2, then cosine to 1e-4 over 15 steps
/// // (= torch SequentialLR(LinearLR(0.1, 1.0, 5), CosineAnnealingLR(15, 1e-4), [5]) on lr 1e-2).
/// let s = Schedule::join(vec![Schedule::linear(1e-3, 1e-2, 5), Schedule::cosine(1e-2, 1e-4, 15)], vec![5]);
/// assert!((s.value(0) - 1e-3).abs() < 1e-15);
/// assert!((s.value(5) - 1e-2).abs() < 1e-15);
/// assert!((s.value(20) - 1e-4).abs() < 1e-15);
/// ```
#[derive(Clone, PartialEq)]
pub enum Schedule {
    /// Always `value`.
    Constant {
        /// The value.
        value: f64,
    },
    /// `start + (end - start) * min(i, steps) / steps` (optax `linear_schedule`, torch `LinearLR`
    /// on a base value). `steps = 0` gives `end`.
    Linear {
        /// Value at `i = 0`.
        start: f64,
        /// Value for `i >= steps`.
        end: f64,
        /// Length of the ramp in steps.
        steps: u64,
    },
    /// `end + (init - end) * (1 + cos(pi * min(i, steps) / steps)) / 2` (torch
    /// `CosineAnnealingLR` closed form with `eta_min = end`; optax `cosine_decay_schedule` with
    /// `alpha = end / init`). `steps = 0` gives `end`.
    Cosine {
        /// Value at `i = 0`.
        init: f64,
        /// Value for `i >= steps`.
        end: f64,
        /// Length of the decay in steps.
        steps: u64,
    },
    /// Piecewise: `parts[0]` before `boundaries[0]`, then `parts[k+1].value(i - boundaries[k])`
    /// for `i >= boundaries[k]` (optax `join_schedules`; torch `SequentialLR`).
    Join {
        /// The pieces, `boundaries.len() + 1` of them.
        parts: Vec<Schedule>,
        /// Strictly increasing global steps at which the next piece starts.
        boundaries: Vec<u64>,
    },
    /// A user function of the step. Not serialisable; compared by identity.
    Custom(CustomSchedule),
}

impl Schedule {
    /// A constant schedule.
    pub fn constant(value: f64) -> Self {
        Schedule::Constant { value }
    }

    /// Linear interpolation from `start` to `end` over `steps` steps, then `end`.
    pub fn linear(start: f64, end: f64, steps: u64) -> Self {
        Schedule::Linear { start, end, steps }
    }

    /// Half-cosine from `init` to `end` over `steps` steps, then `end`.
    pub fn cosine(init: f64, end: f64, steps: u64) -> Self {
        Schedule::Cosine { init, end, steps }
    }

    /// Linear warmup from `init` to `peak` over `warmup` steps, then cosine decay to `end` at
    /// step `total` (optax `warmup_cosine_decay_schedule`: `total` includes the warmup).
    pub fn warmup_cosine(init: f64, peak: f64, warmup: u64, total: u64, end: f64) -> Self {
        Schedule::join(
            vec![
                Schedule::linear(init, peak, warmup),
                Schedule::cosine(peak, end, total.saturating_sub(warmup)),
            ],
            vec![warmup],
        )
    }

    /// Joins schedules at global-step `boundaries`; each piece restarts its own count at its
    /// boundary. Extra parts or boundaries are ignored (the shorter list wins).
    pub fn join(parts: Vec<Schedule>, boundaries: Vec<u64>) -> Self {
        Schedule::Join { parts, boundaries }
    }

    /// A schedule computed by `f(step)`.
    pub fn from_fn(name: &'static str, f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> Self {
        Schedule::Custom(CustomSchedule {
            name,
            f: Arc::new(f),
        })
    }

    /// The value for the update with 0-based global index `step`.
    pub fn value(&self, step: u64) -> f64 {
        match self {
            Schedule::Constant { value } => *value,
            Schedule::Linear { start, end, steps } => {
                if *steps == 0 {
                    return *end;
                }
                let frac = step.min(*steps) as f64 / *steps as f64;
                start + (end - start) * frac
            }
            Schedule::Cosine { init, end, steps } => {
                if *steps == 0 {
                    return *end;
                }
                let frac = step.min(*steps) as f64 / *steps as f64;
                end + (init - end) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
            }
            Schedule::Join { parts, boundaries } => {
                let mut start = 0;
                let mut k = 0;
                while k < boundaries.len() && k + 1 < parts.len() && step >= boundaries[k] {
                    start = boundaries[k];
                    k += 1;
                }
                parts.get(k).map_or(f64::NAN, |p| p.value(step - start))
            }
            Schedule::Custom(c) => (c.f)(step),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant { value } => write!(f, "constant({value})"),
            Schedule::Linear { start, end, steps } => {
                write!(f, "linear({start} -> {end}, {steps} steps)")
            }
            Schedule::Cosine { init, end, steps } => {
                write!(f, "cosine({init} -> {end}, {steps} steps)")
            }
            Schedule::Join { parts, boundaries } => f
                .debug_struct("join")
                .field("parts", parts)
                .field("boundaries", boundaries)
                .finish(),
            Schedule::Custom(c) => write!(f, "custom({})", c.name),
        }
    }
}

/// A user-supplied schedule function (see [`Schedule::from_fn`]).
#[derive(Clone)]
pub struct CustomSchedule {
    name: &'static str,
    f: Arc<dyn Fn(u64) -> f64 + Send + Sync>,
}

impl PartialEq for CustomSchedule {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.f, &other.f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_hits_both_ends_and_holds() {
        let s = Schedule::linear(1.0, 3.0, 4);
        assert_eq!(s.value(0), 1.0);
        assert_eq!(s.value(2), 2.0);
        assert_eq!(s.value(4), 3.0);
        assert_eq!(s.value(100), 3.0);
    }

    #[test]
    fn cosine_midpoint_is_mean_of_ends() {
        let s = Schedule::cosine(1.0, 0.0, 10);
        assert_eq!(s.value(0), 1.0);
        assert!((s.value(5) - 0.5).abs() < 1e-15);
        assert!(s.value(10).abs() < 1e-15);
    }

    #[test]
    fn join_restarts_count_at_boundary() {
        let s = Schedule::join(
            vec![Schedule::constant(1.0), Schedule::linear(0.0, 10.0, 10)],
            vec![3],
        );
        assert_eq!(s.value(2), 1.0);
        assert_eq!(s.value(3), 0.0);
        assert_eq!(s.value(8), 5.0);
    }

    #[test]
    fn warmup_cosine_total_includes_warmup() {
        let s = Schedule::warmup_cosine(0.0, 1.0, 10, 110, 0.1);
        assert_eq!(s.value(10), 1.0);
        assert!((s.value(110) - 0.1).abs() < 1e-15);
        assert!((s.value(60) - 0.55).abs() < 1e-12);
    }
}
