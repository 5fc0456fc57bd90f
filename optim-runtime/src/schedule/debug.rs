//! `Debug`: a one-line description of a schedule (also how a custom schedule is recorded in
//! checkpoints).

use super::Schedule;
use std::fmt;

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
            Schedule::WarmupStableDecay(wsd) => wsd.fmt(f),
            Schedule::Step {
                init,
                gamma,
                step_size,
            } => write!(f, "step({init} x {gamma} every {step_size} steps)"),
            Schedule::MultiStep {
                init,
                gamma,
                milestones,
            } => write!(f, "multi_step({init} x {gamma} at {milestones:?})"),
            Schedule::PiecewiseConstant {
                init,
                boundaries,
                scales,
            } => write!(
                f,
                "piecewise_constant({init}, at {boundaries:?} x {scales:?})"
            ),
            Schedule::Exponential(e) => e.fmt(f),
            Schedule::Polynomial {
                init,
                end,
                power,
                steps,
            } => write!(
                f,
                "polynomial({init} -> {end}, power {power}, {steps} steps)"
            ),
            Schedule::Interpolate { knots, anneal } => {
                write!(f, "interpolate({anneal:?}")?;
                for k in knots {
                    write!(f, ", {} @ {}", k.value, k.step)?;
                }
                write!(f, ")")
            }
            Schedule::InverseSqrt {
                init,
                peak,
                warmup,
                timescale,
            } => write!(
                f,
                "inverse_sqrt({init} -> {peak} over {warmup}, timescale {timescale})"
            ),
            Schedule::CosineRestarts {
                init,
                end,
                period,
                mult,
            } => write!(
                f,
                "cosine_restarts({init} -> {end}, period {period}, x{mult})"
            ),
            Schedule::Custom(c) => write!(f, "custom({})", c.name),
        }
    }
}
