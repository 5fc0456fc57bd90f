//! The exponential schedule's arguments, value and description
//! ([`Schedule::Exponential`](super::Schedule::Exponential)).

use crate::serde_fin::{fin, fin_opt};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The arguments of an exponential schedule (optax `exponential_decay(init, transition_steps =
/// steps, decay_rate = rate, staircase, end_value = end)`; torch `ExponentialLR(gamma)` is
/// `rate = gamma, steps = 1`; build one with
/// [`Schedule::exponential`](super::Schedule::exponential), which checks them): for the update
/// with 0-based global index `i`,
///
/// ```text
/// init * rate^(i / steps)          (floor(i / steps) when staircase)
/// ```
///
/// clipped at `end` when given (a floor when `rate < 1`, a ceiling when `rate > 1`). `steps = 0`
/// gives `init`. Serialised (in checkpoints) as the map of its five fields, as the struct
/// variant it was before, non-finite values as `"nan"`, `"inf"`, `"-inf"`.
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExponentialDecay {
    /// Value at `i = 0`.
    #[serde(with = "fin")]
    pub init: f64,
    /// Decay factor per `steps` steps.
    #[serde(with = "fin")]
    pub rate: f64,
    /// Steps over which the value is multiplied by `rate`.
    pub steps: u64,
    /// Whether the exponent is `floor(i / steps)`.
    pub staircase: bool,
    /// Optional bound the value never passes.
    #[serde(with = "fin_opt", default)]
    pub end: Option<f64>,
}

impl ExponentialDecay {
    /// The value for the update with 0-based global index `step` (see [`ExponentialDecay`]).
    pub fn value(&self, step: u64) -> f64 {
        if self.steps == 0 {
            return self.init;
        }
        let p = if self.staircase {
            (step / self.steps) as f64
        } else {
            step as f64 / self.steps as f64
        };
        let v = self.init * self.rate.powf(p);
        match self.end {
            Some(e) if self.rate < 1.0 => v.max(e),
            Some(e) => v.min(e),
            None => v,
        }
    }
}

/// `exponential(init x rate per steps steps[, staircase][, bound end])`.
impl fmt::Debug for ExponentialDecay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exponential({} x {} per {} steps{}{})",
            self.init,
            self.rate,
            self.steps,
            if self.staircase { ", staircase" } else { "" },
            self.end.map_or(String::new(), |e| format!(", bound {e}"))
        )
    }
}
