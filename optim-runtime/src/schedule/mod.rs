//! Schedules: hyperparameter values as a function of the optimizer's global step.
//!
//! Convention: `value(i)` is the value in effect for the update with 0-based index `i`, i.e. the
//! `(i+1)`-th call of `update` — PyTorch's `lr[i]` after `i` calls of `scheduler.step()`, optax's
//! `schedule(count = i)`. Arithmetic is `f64`.
//!
//! # The schedules
//!
//! | schedule | constructor | PyTorch | optax |
//! |---|---|---|---|
//! | constant | [`Schedule::constant`] | `ConstantLR(factor=1)` | `constant_schedule` |
//! | linear ramp / warmup | [`Schedule::linear`] | `LinearLR` | `linear_schedule` |
//! | cosine decay | [`Schedule::cosine`] | `CosineAnnealingLR` (first half period) | `cosine_decay_schedule` |
//! | warmup + cosine | [`Schedule::warmup_cosine`], [`Schedule::warmup_cosine_torch`] | `SequentialLR(LinearLR, CosineAnnealingLR)` | `warmup_cosine_decay_schedule` |
//! | warmup-stable-decay | [`Schedule::wsd`] | pytorch-optimizer `get_wsd_schedule` | `join_schedules` |
//! | step | [`Schedule::step`] | `StepLR` | `exponential_decay(staircase=True)` |
//! | multi-step | [`Schedule::multi_step`], [`Schedule::piecewise_constant`] | `MultiStepLR` | `piecewise_constant_schedule` |
//! | exponential | [`Schedule::exponential`] | `ExponentialLR` | `exponential_decay` |
//! | polynomial | [`Schedule::polynomial`] | `PolynomialLR` | `polynomial_schedule` |
//! | one-cycle | [`Schedule::one_cycle`], [`Schedule::one_cycle_momentum`], [`Schedule::one_cycle_optax_cosine`], [`Schedule::one_cycle_optax_linear`] | `OneCycleLR` | `cosine_onecycle_schedule`, `linear_onecycle_schedule` |
//! | piecewise interpolation | [`Schedule::interpolate`] | — | `piecewise_interpolate_schedule` |
//! | inverse square root | [`Schedule::inverse_sqrt`] | fairseq `inverse_sqrt`, HF `get_inverse_sqrt_schedule` | — |
//! | cosine with warm restarts | [`Schedule::cosine_restarts`] | `CosineAnnealingWarmRestarts` | — |
//! | composition | [`Schedule::join`] | `SequentialLR` | `join_schedules` |
//!
//! # Where PyTorch and optax differ
//!
//! - **Absolute values vs factors.** PyTorch schedulers multiply the optimizer's base `lr` by a
//!   factor; optax schedules return the value itself. Here every schedule returns the value, so a
//!   PyTorch `LinearLR(start_factor = 0.01)` on `lr = 0.1` is `linear(0.001, 0.1, n)`.
//! - **Warmup start value.** optax's `warmup_cosine_decay_schedule` (and Hugging Face's
//!   `get_cosine_schedule_with_warmup`, and pytorch-optimizer's WSD) start the warmup at an
//!   absolute `init_value`, usually `0`, so the first update has `lr = 0`. PyTorch's `LinearLR`
//!   starts at `start_factor * lr` with `start_factor > 0` (default `1/3`): the first update
//!   moves the parameters. Both are `linear(init, peak, warmup)`; only `init` differs.
//! - **Does the decay length include the warmup?** optax's `decay_steps` (and HF's
//!   `num_training_steps`) count from step 0, warmup included: [`Schedule::warmup_cosine`] takes
//!   that `total`. In PyTorch's `SequentialLR(LinearLR, CosineAnnealingLR(T_max))`, `T_max`
//!   counts only the cosine part: [`Schedule::warmup_cosine_torch`] takes that `t_max`.
//! - **After the end.** optax schedules and these hold their end value forever. PyTorch's
//!   `CosineAnnealingLR` keeps following the cosine past `T_max` (the value rises again, period
//!   `2 T_max`), and `OneCycleLR` raises an error past `total_steps`.
//! - **One-cycle phase boundaries.** PyTorch's `OneCycleLR` reaches its peak at step
//!   `pct_start * total_steps - 1` (a real number, e.g. 14 for 0.3 × 50) and its minimum at
//!   `total_steps - 1`, the last step it allows. optax's `cosine_onecycle_schedule` reaches the
//!   peak at `floor(pct_start * transition_steps)` (15) and the minimum at `transition_steps`
//!   (50), one step later. [`Schedule::one_cycle`] is PyTorch's, [`Schedule::one_cycle_optax_cosine`]
//!   optax's; both are [`Schedule::Interpolate`] with different knots. optax's
//!   `linear_onecycle_schedule` is a three-phase schedule (up, down to the initial value, then
//!   down to the minimum): [`Schedule::one_cycle_optax_linear`].
//! - **Chained vs closed form.** PyTorch computes most schedulers recursively from the previous
//!   value; these are closed forms. The two agree to about `1e-15` relative in `f64`.
//!
//! # Arguments are checked
//!
//! Every constructor checks its arguments and returns
//! [`OptimError::InvalidSchedule`](crate::error::OptimError::InvalidSchedule) naming the first
//! bad one: a value that is not finite, a warmup longer than the whole schedule, a step size,
//! period or transition length of 0, milestones or boundaries out of order, a
//! [`Schedule::join`] whose boundary count is not one fewer than its parts, a fraction outside
//! `[0, 1]`, … (each constructor lists its rules). No constructor starts a schedule at 0 unless
//! asked to: every start value is an argument. The variants are public plain data: a value
//! built from them directly, or deserialised, is not checked, and evaluates as each variant
//! documents.
//!
//! # Serialisation
//!
//! A `Schedule` is plain data and implements serde's `Serialize`/`Deserialize` (externally
//! tagged, `snake_case` variant names, e.g. `{"cosine": {"init": 0.1, "end": 0.0, "steps": 50}}`).
//! Non-finite floats are written as the strings `"nan"`, `"inf"` and `"-inf"` so that they
//! survive JSON. [`Schedule::Custom`] holds a closure and cannot be serialised: serialising it
//! returns an error naming the custom schedule, and it never appears in deserialised data.

use crate::serde_fin::{fin, fin_vec};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

mod constructors;
mod debug;
mod eval;
mod exponential;
mod peak;
mod wsd;

pub use exponential::ExponentialDecay;
pub use wsd::Wsd;
#[cfg(test)]
mod tests;

/// A hyperparameter schedule. Plain data (`Clone`, `Debug`, `PartialEq`, serde), composable
/// with [`Schedule::join`]. See the [module docs](self) for the catalogue and for where PyTorch
/// and optax conventions differ.
///
/// ```
/// use optim_runtime::Schedule;
/// // 5 steps of linear warmup from 1e-3 to 1e-2, then cosine to 1e-4 over 15 steps
/// // (= torch SequentialLR(LinearLR(0.1, 1.0, 5), CosineAnnealingLR(15, 1e-4), [5]) on lr 1e-2).
/// let s = Schedule::join(
///     vec![Schedule::linear(1e-3, 1e-2, 5)?, Schedule::cosine(1e-2, 1e-4, 15)?],
///     vec![5],
/// )?;
/// assert!((s.value(0) - 1e-3).abs() < 1e-15);
/// assert_eq!(s.value(5), 1e-2); // each phase starts and ends exactly
/// assert_eq!(s.value(20), 1e-4);
/// // arguments are checked: here a warmup longer than the whole schedule
/// assert!(Schedule::warmup_cosine(0.0, 1e-2, 20, 10, 0.0).is_err());
/// # Ok::<(), optim_runtime::OptimError>(())
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Always `value`.
    Constant {
        /// The value.
        #[serde(with = "fin")]
        value: f64,
    },
    /// `start + (end - start) * min(i, steps) / steps` (optax `linear_schedule`, torch `LinearLR`
    /// on a base value). `steps = 0` gives `end`.
    Linear {
        /// Value at `i = 0`.
        #[serde(with = "fin")]
        start: f64,
        /// Value for `i >= steps`.
        #[serde(with = "fin")]
        end: f64,
        /// Length of the ramp in steps.
        steps: u64,
    },
    /// `end + (init - end) * (1 + cos(pi * min(i, steps) / steps)) / 2` (torch
    /// `CosineAnnealingLR` closed form with `eta_min = end`; optax `cosine_decay_schedule` with
    /// `alpha = end / init`). `steps = 0` gives `end`. Holds `end` after `steps` (PyTorch's
    /// `CosineAnnealingLR` would rise again).
    Cosine {
        /// Value at `i = 0`.
        #[serde(with = "fin")]
        init: f64,
        /// Value for `i >= steps`.
        #[serde(with = "fin")]
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
    /// Warmup-stable-decay ("trapezoidal", MiniCPM / pytorch-optimizer `get_wsd_schedule`):
    /// linear warmup from `init` to `peak`, `peak` for the stable phase, then a cool-down to
    /// `end` (the rule and the arguments: [`Wsd`]).
    ///
    /// Continuous at every phase boundary. pytorch-optimizer's linear and `1-sqrt` cool-downs
    /// head to `0` regardless of `min_lr_ratio` and then jump to `min_lr_ratio * lr` after the
    /// decay; reproduce that with `end = 0` joined to a constant (see [`Schedule::wsd`]).
    /// Serialised exactly as the struct variant it was before issue 9 (the map of [`Wsd`]'s
    /// fields under `"warmup_stable_decay"`), so older checkpoints load.
    WarmupStableDecay(Wsd),
    /// `init * gamma^floor(i / step_size)` (torch `StepLR`; optax `exponential_decay` with
    /// `staircase = True`). `step_size = 0` gives `init`.
    Step {
        /// Value for `i < step_size`.
        #[serde(with = "fin")]
        init: f64,
        /// Factor applied every `step_size` steps.
        #[serde(with = "fin")]
        gamma: f64,
        /// Steps between decays.
        step_size: u64,
    },
    /// `init * gamma^(number of milestones <= i)` (torch `MultiStepLR`; a milestone listed twice
    /// applies twice, as in PyTorch).
    MultiStep {
        /// Value before the first milestone.
        #[serde(with = "fin")]
        init: f64,
        /// Factor applied at each milestone.
        #[serde(with = "fin")]
        gamma: f64,
        /// Global steps at which the factor is applied, ascending ([`Schedule::multi_step`]
        /// requires it; evaluation counts them in any order).
        milestones: Vec<u64>,
    },
    /// `init * product of scales[k] over boundaries[k] <= i` (optax
    /// `piecewise_constant_schedule`). Extra boundaries or scales are ignored.
    PiecewiseConstant {
        /// Value before the first boundary.
        #[serde(with = "fin")]
        init: f64,
        /// Global steps at which each scale starts to apply.
        boundaries: Vec<u64>,
        /// Multiplicative scale for each boundary.
        #[serde(with = "fin_vec")]
        scales: Vec<f64>,
    },
    /// `init * rate^(i / steps)`, with `floor(i / steps)` when `staircase`, clipped at `end`
    /// (a floor when `rate < 1`, a ceiling when `rate > 1`) (optax `exponential_decay`; torch
    /// `ExponentialLR(gamma)` is `rate = gamma, steps = 1`). `steps = 0` gives `init` (the
    /// arguments: [`ExponentialDecay`]). Serialised exactly as the struct variant it was before
    /// (the map of [`ExponentialDecay`]'s fields under `"exponential"`), so older checkpoints
    /// load.
    Exponential(ExponentialDecay),
    /// `end + (init - end) * (1 - min(i, steps) / steps)^power` (optax `polynomial_schedule`;
    /// torch `PolynomialLR(total_iters = steps, power)` with `end = 0`). `steps = 0` gives `end`.
    Polynomial {
        /// Value at `i = 0`.
        #[serde(with = "fin")]
        init: f64,
        /// Value for `i >= steps`.
        #[serde(with = "fin")]
        end: f64,
        /// Exponent (1 is linear).
        #[serde(with = "fin")]
        power: f64,
        /// Length of the decay in steps.
        steps: u64,
    },
    /// Interpolation between knots `(step, value)` sorted by step: before the first knot its
    /// value, between knots `s0 < i <= s1` the anneal from `v0` to `v1` at
    /// `pct = (i - s0) / (s1 - s0)`, after the last knot its value. Knot steps are real numbers
    /// because PyTorch's `OneCycleLR` puts its phase ends at `pct_start * total_steps - 1`.
    /// The one-cycle schedules are built from this; so is optax's `piecewise_interpolate_schedule`.
    /// No knots gives `NaN`.
    Interpolate {
        /// The knots, sorted by `step`.
        knots: Vec<Knot>,
        /// How values are interpolated between knots.
        anneal: Anneal,
    },
    /// Inverse square root decay after a linear warmup (fairseq `inverse_sqrt`, Hugging Face
    /// `get_inverse_sqrt_schedule`, T5's `rsqrt`):
    ///
    /// ```text
    /// i < warmup:  init + (peak - init) * i / warmup
    /// later:       peak * sqrt(timescale / (i - warmup + timescale))
    /// ```
    ///
    /// Continuous at `i = warmup` (value `peak`). fairseq's form `peak * sqrt(warmup / i)` is
    /// `timescale = warmup`. `timescale = 0` is treated as 1.
    InverseSqrt {
        /// Value at `i = 0`.
        #[serde(with = "fin")]
        init: f64,
        /// Value at the end of the warmup.
        #[serde(with = "fin")]
        peak: f64,
        /// Warmup length in steps.
        warmup: u64,
        /// Steps after the warmup until the value has fallen to `peak / sqrt(2)`.
        timescale: u64,
    },
    /// Cosine annealing with warm restarts (SGDR; torch `CosineAnnealingWarmRestarts(T_0 =
    /// period, T_mult = mult, eta_min = end)`): cycle `k` has length `period * mult^k`; inside a
    /// cycle at position `t` of `T`, the value is `end + (init - end) * (1 + cos(pi t / T)) / 2`.
    /// Restarts jump back to `init` (the only discontinuities). `period = 0` is treated as 1 and
    /// `mult = 0` as 1.
    CosineRestarts {
        /// Value at the start of every cycle.
        #[serde(with = "fin")]
        init: f64,
        /// Value approached at the end of every cycle.
        #[serde(with = "fin")]
        end: f64,
        /// Length of the first cycle in steps.
        period: u64,
        /// Factor by which each cycle is longer than the previous one.
        mult: u64,
    },
    /// A user function of the step. Not serialisable (serialising returns an error naming it;
    /// deserialisation never produces it); compared by identity.
    #[serde(serialize_with = "ser_custom", skip_deserializing)]
    Custom(CustomSchedule),
}

/// The shape of a warmup-stable-decay cool-down (see [`Schedule::WarmupStableDecay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cooldown {
    /// Straight line from `peak` to `end`.
    Linear,
    /// Half cosine from `peak` to `end`.
    Cosine,
    /// `1 - sqrt(q)`: falls fast at first, then slowly (Hägele et al. 2024, "Scaling Laws and
    /// Compute-Optimal Training Beyond Fixed Training Durations").
    OneMinusSqrt,
}

/// How [`Schedule::Interpolate`] moves between two knots, at fraction `pct` in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    /// `end + (start - end) / 2 * (cos(pi * pct) + 1)` (torch `anneal_strategy = "cos"`).
    Cosine,
    /// `(end - start) * pct + start` (torch `anneal_strategy = "linear"`).
    Linear,
}

impl Anneal {
    /// The value at fraction `pct` of the way from `start` to `end`, with PyTorch's formulas.
    pub fn apply(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cosine => {
                end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
            }
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// One knot of a [`Schedule::Interpolate`]: the value `value` at (real-valued) step `step`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Knot {
    /// Global step (0-based update index; may be fractional).
    #[serde(with = "fin")]
    pub step: f64,
    /// Value at that step.
    #[serde(with = "fin")]
    pub value: f64,
}

/// A user-supplied schedule function (see [`Schedule::from_fn`]).
#[derive(Clone)]
pub struct CustomSchedule {
    name: &'static str,
    f: Arc<dyn Fn(u64) -> f64 + Send + Sync>,
    /// The declared largest value ([`Schedule::from_fn_with_peak`]), if any.
    peak: Option<f64>,
}

impl CustomSchedule {
    /// The name given to [`Schedule::from_fn`].
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The peak declared with [`Schedule::from_fn_with_peak`] (`None` for
    /// [`Schedule::from_fn`]).
    pub fn declared_peak(&self) -> Option<f64> {
        self.peak
    }
}

impl PartialEq for CustomSchedule {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.f, &other.f)
    }
}

fn ser_custom<S: serde::Serializer>(c: &CustomSchedule, _s: S) -> Result<S::Ok, S::Error> {
    Err(serde::ser::Error::custom(format!(
        "custom schedule `{}` (Schedule::from_fn) holds a closure and cannot be serialised; \
         use a built-in Schedule variant",
        c.name
    )))
}
