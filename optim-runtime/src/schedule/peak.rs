//! The peak of a schedule: its largest value over every step (`scheduled_decay`'s `eta_t =
//! lr_t / peak(lr)`).
//!
//! Every built-in schedule is monotone between a few known steps (its phase ends, milestones,
//! knots, restarts), so its largest value over a window of steps is its value at one of them or
//! at an end of the window. The peak is therefore computed exactly, as the largest of the values
//! [`Schedule::value`] itself returns at those steps: it is bitwise one of the schedule's values
//! (the one it reaches at its phase end, e.g. exactly `peak` at the end of a warmup), never a
//! formula's approximation.

use super::eval::restart_position;
use super::Schedule;
use crate::error::OptimError;

impl Schedule {
    /// The largest value the schedule takes over its whole horizon: every step `0 ..= u64::MAX`
    /// (a schedule that holds its end value forever has that as its last value).
    ///
    /// For each built-in schedule:
    ///
    /// | schedule | peak |
    /// |---|---|
    /// | `constant(v)` | `v` |
    /// | `linear`, `cosine`, `polynomial` | the larger of the start and end values |
    /// | `warmup_cosine`, `warmup_cosine_torch`, `wsd`, `inverse_sqrt` | the value at the end of the warmup (`peak`), unless `init` or `end` is larger |
    /// | `step`, `multi_step`, `piecewise_constant` | the largest of the constant pieces (`init` when the factors are `<= 1`) |
    /// | `exponential` | `init` when decaying; the bound `end` (or `inf`) when growing |
    /// | `interpolate`, the one-cycle schedules | the largest knot value (`max_lr` for one-cycle) |
    /// | `cosine_restarts` | `init` (every restart returns to it), or the last step of a cycle if `end > init` |
    /// | `join` | the largest peak of its parts, each over the steps it is in effect |
    /// | `from_fn` | unknown: an error; [`Schedule::from_fn_with_peak`] declares it |
    ///
    /// The value is computed from [`Schedule::value`] at the steps where the schedule can peak,
    /// so it is one of the schedule's own values, bitwise (up to rounding, a cosine or a linear
    /// ramp might be one ulp above it at a neighbouring step).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] for a [`Schedule::from_fn`] schedule (or a
    /// [`Schedule::join`] holding one), whose peak cannot be known.
    ///
    /// ```
    /// use optim_runtime::Schedule;
    /// let s = Schedule::warmup_cosine(0.0, 1e-3, 10, 100, 1e-5)?;
    /// assert_eq!(s.peak()?, 1e-3);
    /// let s = Schedule::join(vec![Schedule::linear(1.0, 9.0, 8)?, Schedule::constant(2.0)?], vec![4])?;
    /// assert_eq!(s.peak()?, 4.0); // the ramp is cut at step 4: its value at step 3 is 4
    /// # Ok::<(), optim_runtime::OptimError>(())
    /// ```
    pub fn peak(&self) -> Result<f64, OptimError> {
        self.max_in(0, u64::MAX)
    }

    /// The largest value over steps `a ..= b` (`a <= b`).
    fn max_in(&self, a: u64, b: u64) -> Result<f64, OptimError> {
        // the values at `steps` and the step before each, moved into the window, and at its ends
        let at = |steps: &[u64]| {
            steps
                .iter()
                .flat_map(|&s| [s, s.saturating_sub(1)])
                .chain([a, b])
                .map(|s| self.value(s.clamp(a, b)))
                .fold(f64::NEG_INFINITY, nan_max)
        };
        Ok(match self {
            Schedule::Constant { .. } | Schedule::Exponential(_) => at(&[]),
            Schedule::Linear { steps, .. }
            | Schedule::Cosine { steps, .. }
            | Schedule::Polynomial { steps, .. } => at(&[*steps]),
            Schedule::WarmupStableDecay(wsd) => {
                let decay_start = wsd.decay_start();
                at(&[
                    wsd.warmup,
                    decay_start,
                    decay_start.saturating_add(wsd.decay),
                ])
            }
            Schedule::InverseSqrt { warmup, .. } => at(&[*warmup]),
            Schedule::Step { step_size, .. } => {
                // init * gamma^k for k = 0 ..= K: monotone over even and over odd k
                let size = (*step_size).max(1);
                let (k0, k1) = (a / size, b / size);
                let ks = [k0, k0 + 1, k1.saturating_sub(1), k1];
                at(&ks.map(|k| k.saturating_mul(size)))
            }
            Schedule::MultiStep { milestones, .. } => at(milestones),
            Schedule::PiecewiseConstant { boundaries, .. } => at(boundaries),
            Schedule::Interpolate { knots, .. } => {
                // monotone between knots: the integer steps around each knot (casts saturate)
                let steps: Vec<u64> = knots
                    .iter()
                    .flat_map(|k| [k.step.floor() as u64, k.step.ceil() as u64])
                    .collect();
                at(&steps)
            }
            Schedule::CosineRestarts {
                init,
                end,
                period,
                mult,
            } => at(&[restart_peak(init >= end, *period, *mult, a, b)]),
            Schedule::Join { parts, boundaries } => join_max(parts, boundaries, a, b)?,
            Schedule::Custom(c) => c.peak.ok_or_else(|| OptimError::InvalidSchedule {
                schedule: "from_fn",
                argument: "peak",
                detail: format!(
                    "custom schedule `{}` has no known peak; build it with \
                     `Schedule::from_fn_with_peak` to use it where its peak is needed \
                     (`scheduled_decay`)",
                    c.name
                ),
            })?,
        })
    }
}

/// The step of steps `a ..= b` where cosine restarts of cycles `period · mult^k` (each at
/// least 1) peak, besides the window's ends: where a cycle starts (`falls`: every cycle falls
/// from the same value), or where the last complete cycle ends (it rises; cycles grow, so the
/// last ends highest).
fn restart_peak(falls: bool, period: u64, mult: u64, a: u64, b: u64) -> u64 {
    let (period, mult) = (period.max(1), mult.max(1));
    if falls {
        let (t, len) = restart_position(a, period, mult);
        if t == 0 {
            a
        } else {
            (a - t).saturating_add(len)
        }
    } else {
        let (t, _) = restart_position(b, period, mult);
        (b - t).saturating_sub(1)
    }
}

/// The largest value of a [`Schedule::Join`] over steps `a ..= b`: each part over the global
/// steps it is in effect (as [`Schedule::value`] routes them), shifted to its own count.
fn join_max(parts: &[Schedule], boundaries: &[u64], a: u64, b: u64) -> Result<f64, OptimError> {
    let mut best = f64::NEG_INFINITY;
    let mut reached = 0u64; // steps before this are routed to earlier parts
    for (k, part) in parts.iter().enumerate() {
        let start = if k == 0 { 0 } else { boundaries[k - 1] };
        let last_part = k >= boundaries.len() || k + 1 >= parts.len();
        // global steps routed to part k: [reached, boundaries[k]) (all later ones if last)
        let lo = reached.max(a);
        let hi = if last_part {
            Some(b)
        } else {
            boundaries[k].checked_sub(1).map(|h| h.min(b))
        };
        if let Some(hi) = hi.filter(|&hi| lo <= hi) {
            best = nan_max(best, part.max_in(lo - start, hi - start)?);
        }
        if last_part {
            break;
        }
        reached = reached.max(boundaries[k]);
    }
    Ok(best)
}

/// The larger of two values, `NaN` if either is.
fn nan_max(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else {
        x.max(y)
    }
}
