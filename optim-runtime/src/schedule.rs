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
//! # Serialisation
//!
//! A `Schedule` is plain data and implements serde's `Serialize`/`Deserialize` (externally
//! tagged, `snake_case` variant names, e.g. `{"cosine": {"init": 0.1, "end": 0.0, "steps": 50}}`).
//! Non-finite floats are written as the strings `"nan"`, `"inf"` and `"-inf"` so that they
//! survive JSON. [`Schedule::Custom`] holds a closure and cannot be serialised: serialising it
//! returns an error naming the custom schedule, and it never appears in deserialised data.

use crate::serde_fin::{fin, fin_opt, fin_vec};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A hyperparameter schedule. Plain data (`Clone`, `Debug`, `PartialEq`, serde), composable
/// with [`Schedule::join`]. See the [module docs](self) for the catalogue and for where PyTorch
/// and optax conventions differ.
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
    /// Continuous at every phase boundary. pytorch-optimizer's linear and `1-sqrt` cool-downs
    /// head to `0` regardless of `min_lr_ratio` and then jump to `min_lr_ratio * lr` after the
    /// decay; reproduce that with `end = 0` joined to a constant (see [`Schedule::wsd`]).
    WarmupStableDecay {
        /// Value at `i = 0` (start of the warmup).
        #[serde(with = "fin")]
        init: f64,
        /// Value at the end of the warmup and during the stable phase.
        #[serde(with = "fin")]
        peak: f64,
        /// Value at the end of the cool-down and after it.
        #[serde(with = "fin")]
        end: f64,
        /// Warmup length in steps.
        warmup: u64,
        /// Stable-phase length in steps.
        stable: u64,
        /// Cool-down length in steps.
        decay: u64,
        /// Shape of the cool-down.
        cooldown: Cooldown,
    },
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
        /// Global steps at which the factor is applied (any order).
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
    /// `ExponentialLR(gamma)` is `rate = gamma, steps = 1`). `steps = 0` gives `init`.
    Exponential {
        /// Value at `i = 0`.
        #[serde(with = "fin")]
        init: f64,
        /// Decay factor per `steps` steps.
        #[serde(with = "fin")]
        rate: f64,
        /// Steps over which the value is multiplied by `rate`.
        steps: u64,
        /// Whether the exponent is `floor(i / steps)`.
        staircase: bool,
        /// Optional bound the value never passes.
        #[serde(with = "fin_opt", default)]
        end: Option<f64>,
    },
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

impl Schedule {
    /// A constant schedule.
    pub fn constant(value: f64) -> Self {
        Schedule::Constant { value }
    }

    /// Linear interpolation from `start` to `end` over `steps` steps, then `end`.
    ///
    /// As a warmup: PyTorch `LinearLR(start_factor, end_factor, total_iters)` on base `lr` is
    /// `linear(lr * start_factor, lr * end_factor, total_iters)`.
    pub fn linear(start: f64, end: f64, steps: u64) -> Self {
        Schedule::Linear { start, end, steps }
    }

    /// Half-cosine from `init` to `end` over `steps` steps, then `end`.
    pub fn cosine(init: f64, end: f64, steps: u64) -> Self {
        Schedule::Cosine { init, end, steps }
    }

    /// Linear warmup from `init` to `peak` over `warmup` steps, then cosine decay to `end` at
    /// step `total` (optax `warmup_cosine_decay_schedule(init, peak, warmup, decay_steps =
    /// total, end)`: `total` **includes** the warmup; Hugging Face's
    /// `get_cosine_schedule_with_warmup` is `init = 0, end = 0`). For PyTorch's convention use
    /// [`Schedule::warmup_cosine_torch`].
    pub fn warmup_cosine(init: f64, peak: f64, warmup: u64, total: u64, end: f64) -> Self {
        Schedule::join(
            vec![
                Schedule::linear(init, peak, warmup),
                Schedule::cosine(peak, end, total.saturating_sub(warmup)),
            ],
            vec![warmup],
        )
    }

    /// PyTorch's warmup + cosine: `SequentialLR([LinearLR(start_factor, 1.0, warmup),
    /// CosineAnnealingLR(T_max = t_max, eta_min = end)], milestones = [warmup])` on base `lr`.
    /// `t_max` counts only the cosine part (it **excludes** the warmup), and the warmup starts at
    /// `lr * start_factor`. Equal to `warmup_cosine(lr * start_factor, lr, warmup, warmup +
    /// t_max, end)`. Past `warmup + t_max` this holds `end`, where PyTorch's cosine rises again.
    pub fn warmup_cosine_torch(
        lr: f64,
        start_factor: f64,
        warmup: u64,
        t_max: u64,
        end: f64,
    ) -> Self {
        Schedule::join(
            vec![
                Schedule::linear(lr * start_factor, lr, warmup),
                Schedule::cosine(lr, end, t_max),
            ],
            vec![warmup],
        )
    }

    /// Warmup-stable-decay: linear warmup from `init` to `peak` over `warmup` steps, `peak` for
    /// `stable` steps, then a `cooldown` to `end` over `decay` steps, then `end` (see
    /// [`Schedule::WarmupStableDecay`]).
    ///
    /// pytorch-optimizer's `get_wsd_schedule(num_warmup_steps = w, num_stable_steps = s,
    /// num_decay_steps = d, min_lr_ratio = r, cooldown_type)` on base `lr`:
    /// - `"cosine"`: `wsd(0, lr, lr * r, w, s, d, Cooldown::Cosine)`;
    /// - `"linear"` / `"1-sqrt"` ignore `r` during the cool-down (they reach 0) and jump to
    ///   `lr * r` afterwards: `join(vec![wsd(0, lr, 0, w, s, d, c), constant(lr * r)], vec![w + s + d])`.
    ///
    /// optax has no WSD; `join_schedules([linear_schedule(init, peak, w), constant_schedule(peak),
    /// linear_schedule(peak, end, d)], [w, w + s])` equals `wsd(init, peak, end, w, s, d,
    /// Cooldown::Linear)`.
    pub fn wsd(
        init: f64,
        peak: f64,
        end: f64,
        warmup: u64,
        stable: u64,
        decay: u64,
        cooldown: Cooldown,
    ) -> Self {
        Schedule::WarmupStableDecay {
            init,
            peak,
            end,
            warmup,
            stable,
            decay,
            cooldown,
        }
    }

    /// `init * gamma^floor(i / step_size)` (torch `StepLR(step_size, gamma)` on base `init`).
    pub fn step(init: f64, gamma: f64, step_size: u64) -> Self {
        Schedule::Step {
            init,
            gamma,
            step_size,
        }
    }

    /// `init * gamma^(number of milestones <= i)` (torch `MultiStepLR(milestones, gamma)`).
    pub fn multi_step(init: f64, gamma: f64, milestones: Vec<u64>) -> Self {
        Schedule::MultiStep {
            init,
            gamma,
            milestones,
        }
    }

    /// `init` times the product of `scale` over every `(boundary, scale)` with `boundary <= i`
    /// (optax `piecewise_constant_schedule(init, boundaries_and_scales)`).
    pub fn piecewise_constant(init: f64, boundaries_and_scales: &[(u64, f64)]) -> Self {
        Schedule::PiecewiseConstant {
            init,
            boundaries: boundaries_and_scales.iter().map(|b| b.0).collect(),
            scales: boundaries_and_scales.iter().map(|b| b.1).collect(),
        }
    }

    /// `init * rate^(i / steps)` (exponent floored when `staircase`), clipped at `end` when given
    /// (optax `exponential_decay(init, transition_steps = steps, decay_rate = rate, staircase,
    /// end_value = end)`). PyTorch `ExponentialLR(gamma)` on base `lr` is
    /// `exponential(lr, gamma, 1, false, None)`.
    pub fn exponential(
        init: f64,
        rate: f64,
        steps: u64,
        staircase: bool,
        end: Option<f64>,
    ) -> Self {
        Schedule::Exponential {
            init,
            rate,
            steps,
            staircase,
            end,
        }
    }

    /// `end + (init - end) * (1 - min(i, steps) / steps)^power` (optax `polynomial_schedule`;
    /// torch `PolynomialLR(total_iters, power)` on base `lr` is `polynomial(lr, 0, power,
    /// total_iters)`).
    pub fn polynomial(init: f64, end: f64, power: f64, steps: u64) -> Self {
        Schedule::Polynomial {
            init,
            end,
            power,
            steps,
        }
    }

    /// Interpolation through `knots` (`(step, value)` pairs; sorted here by step) with `anneal`
    /// (see [`Schedule::Interpolate`]). optax `piecewise_interpolate_schedule(type, init,
    /// boundaries_and_scales)` is the knots `(0, init)`, `(b_1, init * s_1)`,
    /// `(b_2, init * s_1 * s_2)`, ….
    pub fn interpolate(knots: &[(f64, f64)], anneal: Anneal) -> Self {
        let mut knots: Vec<Knot> = knots
            .iter()
            .map(|&(step, value)| Knot { step, value })
            .collect();
        knots.sort_by(|a, b| a.step.total_cmp(&b.step));
        Schedule::Interpolate { knots, anneal }
    }

    /// PyTorch's `OneCycleLR(max_lr = max, total_steps, pct_start, anneal_strategy = anneal,
    /// div_factor, final_div_factor, three_phase)` learning rate.
    ///
    /// `initial = max / div_factor`, `min = initial / final_div_factor`. Two phases: `initial`
    /// → `max` ending at step `pct_start * total_steps - 1`, then → `min` ending at step
    /// `total_steps - 1`. Three phases: `initial` → `max` (end `pct_start * total_steps - 1`),
    /// → `initial` (end `2 * pct_start * total_steps - 2`), → `min` (end `total_steps - 1`).
    /// PyTorch's defaults: `pct_start = 0.3`, `Anneal::Cosine`, `div_factor = 25`,
    /// `final_div_factor = 1e4`, `three_phase = false`. PyTorch raises past `total_steps`; this
    /// holds `min`.
    pub fn one_cycle(
        max: f64,
        total_steps: u64,
        pct_start: f64,
        anneal: Anneal,
        div_factor: f64,
        final_div_factor: f64,
        three_phase: bool,
    ) -> Self {
        let initial = max / div_factor;
        let min = initial / final_div_factor;
        let ends = torch_one_cycle_ends(total_steps, pct_start, three_phase);
        let mut knots = vec![(0.0, initial), (ends[0], max)];
        if three_phase {
            knots.push((ends[1], initial));
            knots.push((ends[2], min));
        } else {
            knots.push((ends[1], min));
        }
        Schedule::torch_knots(knots, anneal)
    }

    /// The momentum (or Adam `beta1`) that PyTorch's `OneCycleLR(cycle_momentum = True,
    /// base_momentum = base, max_momentum = max)` sets alongside [`Schedule::one_cycle`] with the
    /// same `total_steps`, `pct_start`, `anneal` and `three_phase`: `max` → `base` in phase 1,
    /// `base` → `max` in phase 2, and `max` held in phase 3 of a three-phase cycle. PyTorch's
    /// defaults: `base = 0.85`, `max = 0.95`.
    pub fn one_cycle_momentum(
        base: f64,
        max: f64,
        total_steps: u64,
        pct_start: f64,
        anneal: Anneal,
        three_phase: bool,
    ) -> Self {
        let ends = torch_one_cycle_ends(total_steps, pct_start, three_phase);
        let mut knots = vec![(0.0, max), (ends[0], base), (ends[1], max)];
        if three_phase {
            knots.push((ends[2], max));
        }
        Schedule::torch_knots(knots, anneal)
    }

    /// optax's `cosine_onecycle_schedule(transition_steps, peak_value, pct_start, div_factor,
    /// final_div_factor)`: cosine from `peak / div_factor` up to `peak` at step
    /// `floor(pct_start * transition_steps)`, then down to `peak / (div_factor *
    /// final_div_factor)` at step `transition_steps`, then held. Defaults: `pct_start = 0.3`,
    /// `div_factor = 25`, `final_div_factor = 1e4`. Its phases end one step later than
    /// PyTorch's [`Schedule::one_cycle`].
    pub fn one_cycle_optax_cosine(
        transition_steps: u64,
        peak: f64,
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Self {
        let init = peak / div_factor;
        let t = transition_steps as f64;
        Schedule::interpolate(
            &[
                (0.0, init),
                ((pct_start * t).floor(), peak),
                (t, init / final_div_factor),
            ],
            Anneal::Cosine,
        )
    }

    /// optax's `linear_onecycle_schedule(transition_steps, peak_value, pct_start, pct_final,
    /// div_factor, final_div_factor)`: three linear phases, `peak / div_factor` → `peak` at
    /// `floor(pct_start * transition_steps)`, → `peak / div_factor` at
    /// `floor(pct_final * transition_steps)`, → `peak / (div_factor * final_div_factor)` at
    /// `transition_steps`. Defaults: `pct_start = 0.3`, `pct_final = 0.85`, `div_factor = 25`,
    /// `final_div_factor = 1e4`.
    pub fn one_cycle_optax_linear(
        transition_steps: u64,
        peak: f64,
        pct_start: f64,
        pct_final: f64,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Self {
        let init = peak / div_factor;
        let t = transition_steps as f64;
        Schedule::interpolate(
            &[
                (0.0, init),
                ((pct_start * t).floor(), peak),
                ((pct_final * t).floor(), init),
                (t, init / final_div_factor),
            ],
            Anneal::Linear,
        )
    }

    /// Knots in the given order (PyTorch's phases are already ordered; sorting could reorder
    /// degenerate phases).
    fn torch_knots(knots: Vec<(f64, f64)>, anneal: Anneal) -> Self {
        Schedule::Interpolate {
            knots: knots
                .into_iter()
                .map(|(step, value)| Knot { step, value })
                .collect(),
            anneal,
        }
    }

    /// Linear warmup from `0` to `peak` over `warmup` steps, then `peak * sqrt(timescale / (i -
    /// warmup + timescale))` with `timescale = max(warmup, 1)` (fairseq `inverse_sqrt` with
    /// `warmup_init_lr = 0`; Hugging Face `get_inverse_sqrt_schedule` with the default
    /// `timescale`). Use [`Schedule::InverseSqrt`] directly for another start or timescale.
    pub fn inverse_sqrt(peak: f64, warmup: u64) -> Self {
        Schedule::InverseSqrt {
            init: 0.0,
            peak,
            warmup,
            timescale: warmup.max(1),
        }
    }

    /// Cosine annealing from `init` to `end` with warm restarts, the first cycle `period` steps
    /// long and each next one `mult` times longer (torch `CosineAnnealingWarmRestarts(T_0 =
    /// period, T_mult = mult, eta_min = end)` on base `init`).
    pub fn cosine_restarts(init: f64, end: f64, period: u64, mult: u64) -> Self {
        Schedule::CosineRestarts {
            init,
            end,
            period,
            mult,
        }
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
            Schedule::WarmupStableDecay {
                init,
                peak,
                end,
                warmup,
                stable,
                decay,
                cooldown,
            } => {
                if step < *warmup {
                    return init + (peak - init) * (step as f64 / *warmup as f64);
                }
                let decay_start = warmup.saturating_add(*stable);
                if step < decay_start {
                    return *peak;
                }
                let into = step - decay_start;
                if into >= *decay {
                    return *end;
                }
                if into == 0 {
                    return *peak; // every cool-down starts exactly at peak
                }
                let q = into as f64 / *decay as f64;
                match cooldown {
                    Cooldown::Linear => peak + (end - peak) * q,
                    Cooldown::Cosine => {
                        end + (peak - end) * 0.5 * (1.0 + (std::f64::consts::PI * q).cos())
                    }
                    Cooldown::OneMinusSqrt => end + (peak - end) * (1.0 - q.sqrt()),
                }
            }
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
            Schedule::Exponential {
                init,
                rate,
                steps,
                staircase,
                end,
            } => {
                if *steps == 0 {
                    return *init;
                }
                let p = if *staircase {
                    (step / steps) as f64
                } else {
                    step as f64 / *steps as f64
                };
                let v = init * rate.powf(p);
                match end {
                    Some(e) if *rate < 1.0 => v.max(*e),
                    Some(e) => v.min(*e),
                    None => v,
                }
            }
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
                if step < *warmup {
                    return init + (peak - init) * (step as f64 / *warmup as f64);
                }
                let ts = (*timescale).max(1) as f64;
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

/// PyTorch `OneCycleLR` phase end steps: `[p1, total - 1]` or `[p1, 2 p1 + ... , total - 1]`
/// with `p1 = pct_start * total - 1` (three-phase middle end: `2 * pct_start * total - 2`).
fn torch_one_cycle_ends(total_steps: u64, pct_start: f64, three_phase: bool) -> [f64; 3] {
    let total = total_steps as f64;
    let p1 = pct_start * total - 1.0;
    if three_phase {
        [p1, 2.0 * pct_start * total - 2.0, total - 1.0]
    } else {
        [p1, total - 1.0, total - 1.0]
    }
}

/// Position `t` inside the current cycle and that cycle's length, for cycles of length
/// `period * mult^k`.
fn restart_position(step: u64, period: u64, mult: u64) -> (u64, u64) {
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
            Schedule::WarmupStableDecay {
                init,
                peak,
                end,
                warmup,
                stable,
                decay,
                cooldown,
            } => write!(
                f,
                "wsd({init} -> {peak} over {warmup}, {stable} stable, {cooldown:?} -> {end} over {decay})"
            ),
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
            } => write!(f, "piecewise_constant({init}, at {boundaries:?} x {scales:?})"),
            Schedule::Exponential {
                init,
                rate,
                steps,
                staircase,
                end,
            } => write!(
                f,
                "exponential({init} x {rate} per {steps} steps{}{})",
                if *staircase { ", staircase" } else { "" },
                end.map_or(String::new(), |e| format!(", bound {e}"))
            ),
            Schedule::Polynomial {
                init,
                end,
                power,
                steps,
            } => write!(f, "polynomial({init} -> {end}, power {power}, {steps} steps)"),
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

/// A user-supplied schedule function (see [`Schedule::from_fn`]).
#[derive(Clone)]
pub struct CustomSchedule {
    name: &'static str,
    f: Arc<dyn Fn(u64) -> f64 + Send + Sync>,
}

impl CustomSchedule {
    /// The name given to [`Schedule::from_fn`].
    pub fn name(&self) -> &'static str {
        self.name
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

    #[test]
    fn warmup_cosine_torch_excludes_warmup() {
        let s = Schedule::warmup_cosine_torch(1.0, 0.1, 10, 100, 0.1);
        assert!((s.value(0) - 0.1).abs() < 1e-15);
        assert_eq!(s.value(10), 1.0);
        assert!((s.value(110) - 0.1).abs() < 1e-15);
        assert!((s.value(60) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn restarts_lengthen_cycles() {
        assert_eq!(restart_position(0, 10, 2), (0, 10));
        assert_eq!(restart_position(9, 10, 2), (9, 10));
        assert_eq!(restart_position(10, 10, 2), (0, 20));
        assert_eq!(restart_position(29, 10, 2), (19, 20));
        assert_eq!(restart_position(30, 10, 2), (0, 40));
        assert_eq!(restart_position(25, 10, 1), (5, 10));
    }

    #[test]
    fn step_and_multistep() {
        let s = Schedule::step(1.0, 0.5, 10);
        assert_eq!(s.value(9), 1.0);
        assert_eq!(s.value(10), 0.5);
        assert_eq!(s.value(25), 0.25);
        let m = Schedule::multi_step(1.0, 0.1, vec![3, 7, 7]);
        assert_eq!(m.value(2), 1.0);
        assert!((m.value(3) - 0.1).abs() < 1e-15);
        assert!((m.value(7) - 1e-3).abs() < 1e-15);
    }

    #[test]
    fn exponential_is_bounded_by_end() {
        let s = Schedule::exponential(1.0, 0.5, 2, false, Some(0.2));
        assert_eq!(s.value(0), 1.0);
        assert!((s.value(1) - 0.5f64.sqrt()).abs() < 1e-15);
        assert_eq!(s.value(100), 0.2);
        let st = Schedule::exponential(1.0, 0.5, 2, true, None);
        assert_eq!(st.value(1), 1.0);
        assert_eq!(st.value(2), 0.5);
    }
}
