//! Evaluation: the value of a schedule at a step.

use super::Schedule;

impl Schedule {
    /// Whether this schedule (or any part of a [`Schedule::Join`]) is a [`Schedule::Custom`]
    /// closure, which cannot be serialised.
    pub fn contains_custom(&self) -> bool {
        match self {
            Schedule::Custom(_) => true,
            Schedule::Join { parts, .. } => parts.iter().any(Schedule::contains_custom),
            _ => false,
        }
    }

    /// The value for the update with 0-based global index `step`.
    pub fn value(&self, step: u64) -> f64 {
        match self {
            Schedule::Constant { value } => *value,
            Schedule::Linear { start, end, steps } => {
                // both ends exactly (`start + (end - start)` can differ from `end` by an ulp)
                if step >= *steps {
                    return *end;
                }
                ramp(*start, *end, step, *steps)
            }
            Schedule::Cosine { init, end, steps } => {
                if step >= *steps {
                    return *end;
                }
                if step == 0 {
                    return *init; // exactly: a warmup-cosine reaches its peak exactly
                }
                let frac = step as f64 / *steps as f64;
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
            Schedule::WarmupStableDecay(wsd) => wsd.value(step),
            Schedule::Step {
                init,
                gamma,
                step_size,
            } => {
                if *step_size == 0 {
                    return *init;
                }
                init * gamma.powf((step / step_size) as f64)
            }
            Schedule::MultiStep {
                init,
                gamma,
                milestones,
            } => {
                let n = milestones.iter().filter(|&&m| m <= step).count();
                init * gamma.powf(n as f64)
            }
            Schedule::PiecewiseConstant {
                init,
                boundaries,
                scales,
            } => boundaries
                .iter()
                .zip(scales)
                .filter(|(&b, _)| b <= step)
                .fold(*init, |v, (_, &s)| v * s),
            Schedule::Exponential(e) => e.value(step),
            Schedule::Polynomial {
                init,
                end,
                power,
                steps,
            } => {
                if *steps == 0 {
                    return *end;
                }
                let frac = 1.0 - step.min(*steps) as f64 / *steps as f64;
                (init - end) * frac.powf(*power) + end
            }
            Schedule::Interpolate { knots, anneal } => {
                let Some(first) = knots.first() else {
                    return f64::NAN;
                };
                let x = step as f64;
                if x <= first.step {
                    return first.value;
                }
                for w in knots.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    if x == b.step {
                        return b.value; // exactly the knot (PyTorch: its anneal at pct = 1)
                    }
                    if x < b.step {
                        let span = b.step - a.step;
                        if span <= 0.0 {
                            return b.value;
                        }
                        return anneal.apply(a.value, b.value, (x - a.step) / span);
                    }
                }
                knots[knots.len() - 1].value
            }
            Schedule::InverseSqrt {
                init,
                peak,
                warmup,
                timescale,
            } => {
                let ts = (*timescale).max(1) as f64;
                if step < *warmup {
                    return ramp(*init, *peak, step, *warmup);
                }
                peak * (ts / ((step - warmup) as f64 + ts)).sqrt()
            }
            Schedule::CosineRestarts {
                init,
                end,
                period,
                mult,
            } => {
                let (t, len) = restart_position(step, (*period).max(1), (*mult).max(1));
                end + (init - end)
                    * 0.5
                    * (1.0 + (std::f64::consts::PI * t as f64 / len as f64).cos())
            }
            Schedule::Custom(c) => (c.f)(step),
        }
    }
}

/// The straight line from `from` (at step 0) to `to` (at step `steps`), at `step < steps`: the
/// linear schedule and the linear warmups of WSD and inverse-sqrt.
pub(super) fn ramp(from: f64, to: f64, step: u64, steps: u64) -> f64 {
    from + (to - from) * (step as f64 / steps as f64)
}

/// Position `t` inside the current cycle and that cycle's length, for cycles of length
/// `period * mult^k`.
pub(super) fn restart_position(step: u64, period: u64, mult: u64) -> (u64, u64) {
    if mult == 1 {
        return (step % period, period);
    }
    let (mut t, mut len) = (step, period);
    while t >= len {
        t -= len;
        len = len.saturating_mul(mult);
    }
    (t, len)
}
