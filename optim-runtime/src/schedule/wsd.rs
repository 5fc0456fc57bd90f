//! The warmup-stable-decay schedule's arguments, value and description
//! ([`Schedule::WarmupStableDecay`](super::Schedule::WarmupStableDecay)).

use super::eval::ramp;
use super::Cooldown;
use crate::serde_fin::fin;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The arguments of a warmup-stable-decay schedule ("trapezoidal", MiniCPM / pytorch-optimizer
/// `get_wsd_schedule`; build one with [`Schedule::wsd`](super::Schedule::wsd), which checks
/// them): for the update with 0-based global index `i`,
///
/// ```text
/// i < warmup:                    init + (peak - init) * i / warmup
/// i < warmup + stable:           peak
/// i < warmup + stable + decay:   q = (i - warmup - stable) / decay
///     Linear:        peak + (end - peak) * q
///     Cosine:        end + (peak - end) * (1 + cos(pi q)) / 2
///     OneMinusSqrt:  end + (peak - end) * (1 - sqrt(q))
/// later:                         end
/// ```
///
/// Continuous at every phase boundary; any phase may be empty. Serialised (in checkpoints) as
/// the map of its seven fields, non-finite values as `"nan"`, `"inf"`, `"-inf"`.
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Wsd {
    /// Value at `i = 0` (start of the warmup).
    #[serde(with = "fin")]
    pub init: f64,
    /// Value at the end of the warmup and during the stable phase.
    #[serde(with = "fin")]
    pub peak: f64,
    /// Value at the end of the cool-down and after it.
    #[serde(with = "fin")]
    pub end: f64,
    /// Warmup length in steps.
    pub warmup: u64,
    /// Stable-phase length in steps.
    pub stable: u64,
    /// Cool-down length in steps.
    pub decay: u64,
    /// Shape of the cool-down.
    pub cooldown: Cooldown,
}

impl Wsd {
    /// The first step of the cool-down (`warmup + stable`, saturating).
    pub(super) fn decay_start(&self) -> u64 {
        self.warmup.saturating_add(self.stable)
    }

    /// The value for the update with 0-based global index `step` (see [`Wsd`]).
    pub fn value(&self, step: u64) -> f64 {
        let Wsd {
            init, peak, end, ..
        } = *self;
        if step < self.warmup {
            return ramp(init, peak, step, self.warmup);
        }
        let decay_start = self.decay_start();
        if step < decay_start {
            return peak;
        }
        let into = step - decay_start;
        if into >= self.decay {
            return end;
        }
        if into == 0 {
            return peak; // every cool-down starts exactly at peak
        }
        let q = into as f64 / self.decay as f64;
        match self.cooldown {
            Cooldown::Linear => peak + (end - peak) * q,
            Cooldown::Cosine => end + (peak - end) * 0.5 * (1.0 + (std::f64::consts::PI * q).cos()),
            Cooldown::OneMinusSqrt => end + (peak - end) * (1.0 - q.sqrt()),
        }
    }
}

/// `wsd(init -> peak over warmup, stable stable, Cooldown -> end over decay)`.
impl fmt::Debug for Wsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wsd({} -> {} over {}, {} stable, {:?} -> {} over {})",
            self.init, self.peak, self.warmup, self.stable, self.cooldown, self.end, self.decay
        )
    }
}
