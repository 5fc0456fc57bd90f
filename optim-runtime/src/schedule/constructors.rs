//! The constructors: each checks its arguments and names the first bad one.

use super::{Anneal, Cooldown, CustomSchedule, ExponentialDecay, Knot, Schedule, Wsd};
use crate::error::OptimError;
use std::sync::Arc;

/// One argument's rule: the argument's name, its value and what the value must be.
#[derive(Clone, Copy)]
enum Rule<'a> {
    /// Finite.
    Finite(&'static str, &'a f64),
    /// Finite and `> 0`.
    Positive(&'static str, &'a f64),
    /// Finite and `>= 0`.
    NonNegative(&'static str, &'a f64),
    /// In `[0, 1]`.
    Fraction(&'static str, &'a f64),
    /// A count of steps that divides: at least 1.
    Steps(&'static str, &'a u64),
    /// Global steps in ascending order (a step may repeat).
    Ascending(&'static str, &'a [u64]),
    /// Global steps in strictly increasing order.
    Increasing(&'static str, &'a [u64]),
}

/// `check!("constructor", Rule(arg, ...), ...)`: [`check`] of the constructor's rules in the
/// order written, each argument named as it is spelled (`Finite(init, end)` is
/// `[Rule::Finite("init", &init), Rule::Finite("end", &end)]`).
macro_rules! check {
    ($schedule:expr, $($rule:ident($($arg:ident),+)),+ $(,)?) => {
        check($schedule, &[$($(Rule::$rule(stringify!($arg), &$arg)),+),+])
    };
}

/// The error of constructor `schedule` naming `argument`.
fn error(schedule: &'static str, argument: &'static str, detail: impl Into<String>) -> OptimError {
    OptimError::InvalidSchedule {
        schedule,
        argument,
        detail: detail.into(),
    }
}

/// Applies `rules` in order; the error of constructor `schedule` names the first argument
/// that breaks its rule.
fn check(schedule: &'static str, rules: &[Rule<'_>]) -> Result<(), OptimError> {
    for &rule in rules {
        let (argument, detail) = match rule {
            Rule::Finite(a, &v) | Rule::Positive(a, &v) | Rule::NonNegative(a, &v)
                if !v.is_finite() =>
            {
                (a, format!("is {v}; expected a finite number"))
            }
            Rule::Positive(a, &v) if v <= 0.0 => (a, format!("is {v}; expected a number > 0")),
            Rule::NonNegative(a, &v) if v < 0.0 => (a, format!("is {v}; expected a number >= 0")),
            Rule::Fraction(a, &v) if !(0.0..=1.0).contains(&v) => {
                (a, format!("is {v}; expected a number in [0, 1]"))
            }
            Rule::Steps(a, &0) => (a, "is 0; expected at least 1 step".to_string()),
            Rule::Ascending(a, xs) | Rule::Increasing(a, xs) => {
                let strict = matches!(rule, Rule::Increasing(..));
                match out_of_order(xs, strict) {
                    Some(detail) => (a, detail),
                    None => continue,
                }
            }
            _ => continue,
        };
        return Err(error(schedule, argument, detail));
    }
    Ok(())
}

/// Why `xs` is not in ascending order (`strict`: strictly increasing), if it is not.
fn out_of_order(xs: &[u64], strict: bool) -> Option<String> {
    let w = xs
        .windows(2)
        .find(|w| w[1] < w[0] || (strict && w[1] == w[0]))?;
    let how = if strict {
        "strictly increasing"
    } else {
        "ascending"
    };
    Some(format!(
        "{xs:?} is not {how} ({} then {}); expected {how} global steps",
        w[0], w[1]
    ))
}

impl Schedule {
    /// Always `value`.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `value` is not finite.
    pub fn constant(value: f64) -> Result<Self, OptimError> {
        check!("constant", Finite(value))?;
        Ok(Schedule::Constant { value })
    }

    /// Linear interpolation from `start` to `end` over `steps` steps, then `end`; `steps = 0` is
    /// `end` from step 0.
    ///
    /// As a warmup: PyTorch `LinearLR(start_factor, end_factor, total_iters)` on base `lr` is
    /// `linear(lr * start_factor, lr * end_factor, total_iters)`.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `start` or `end` is not finite.
    pub fn linear(start: f64, end: f64, steps: u64) -> Result<Self, OptimError> {
        check!("linear", Finite(start, end))?;
        Ok(Schedule::Linear { start, end, steps })
    }

    /// Half-cosine from `init` to `end` over `steps` steps, then `end`; `steps = 0` is `end`
    /// from step 0.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `end` is not finite.
    pub fn cosine(init: f64, end: f64, steps: u64) -> Result<Self, OptimError> {
        check!("cosine", Finite(init, end))?;
        Ok(Schedule::Cosine { init, end, steps })
    }

    /// Linear warmup from `init` to `peak` over `warmup` steps, then cosine decay to `end` at
    /// step `total` (optax `warmup_cosine_decay_schedule(init, peak, warmup, decay_steps =
    /// total, end)`: `total` **includes** the warmup; Hugging Face's
    /// `get_cosine_schedule_with_warmup` is `init = 0, end = 0`). For PyTorch's convention use
    /// [`Schedule::warmup_cosine_torch`].
    ///
    /// The value at step `warmup` is exactly `peak`. When `total == warmup` (where optax raises)
    /// the decay takes one step: `peak` at step `warmup`, `end` after it.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init`, `peak` or `end` is not finite, or `warmup >
    /// total`.
    pub fn warmup_cosine(
        init: f64,
        peak: f64,
        warmup: u64,
        total: u64,
        end: f64,
    ) -> Result<Self, OptimError> {
        check!("warmup_cosine", Finite(init, peak, end))?;
        if warmup > total {
            return Err(error(
                "warmup_cosine",
                "warmup",
                format!("is {warmup}, longer than `total` ({total}), which includes the warmup"),
            ));
        }
        Ok(Schedule::warmup_then_cosine(
            init,
            peak,
            warmup,
            total - warmup,
            end,
        ))
    }

    /// PyTorch's warmup + cosine: `SequentialLR([LinearLR(start_factor, 1.0, warmup),
    /// CosineAnnealingLR(T_max = t_max, eta_min = end)], milestones = [warmup])` on base `lr`.
    /// `t_max` counts only the cosine part (it **excludes** the warmup), and the warmup starts at
    /// `lr * start_factor`. Equal to `warmup_cosine(lr * start_factor, lr, warmup, warmup +
    /// t_max, end)`. Past `warmup + t_max` this holds `end`, where PyTorch's cosine rises again.
    ///
    /// The value at step `warmup` is exactly `lr`. `t_max = 0` (where PyTorch divides by zero)
    /// decays in one step: `lr` at step `warmup`, `end` after it. PyTorch requires
    /// `0 < start_factor <= 1`; `start_factor = 0` (a warmup from 0) is accepted here.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `lr` or `end` is not finite or `start_factor` is not
    /// in `[0, 1]`.
    pub fn warmup_cosine_torch(
        lr: f64,
        start_factor: f64,
        warmup: u64,
        t_max: u64,
        end: f64,
    ) -> Result<Self, OptimError> {
        check!(
            "warmup_cosine_torch",
            Finite(lr),
            Fraction(start_factor),
            Finite(end)
        )?;
        Ok(Schedule::warmup_then_cosine(
            lr * start_factor,
            lr,
            warmup,
            t_max,
            end,
        ))
    }

    /// `linear(init, peak, warmup)` joined at `warmup` to `cosine(peak, end, max(decay, 1))`.
    fn warmup_then_cosine(init: f64, peak: f64, warmup: u64, decay: u64, end: f64) -> Self {
        Schedule::Join {
            parts: vec![
                Schedule::Linear {
                    start: init,
                    end: peak,
                    steps: warmup,
                },
                Schedule::Cosine {
                    init: peak,
                    end,
                    steps: decay.max(1),
                },
            ],
            boundaries: vec![warmup],
        }
    }

    /// Warmup-stable-decay: linear warmup from `init` to `peak` over `warmup` steps, `peak` for
    /// `stable` steps, then a `cooldown` to `end` over `decay` steps, then `end` (see
    /// [`Schedule::WarmupStableDecay`]). Any phase may be empty.
    ///
    /// pytorch-optimizer's `get_wsd_schedule(num_warmup_steps = w, num_stable_steps = s,
    /// num_decay_steps = d, min_lr_ratio = r, cooldown_type)` on base `lr`:
    /// - `"cosine"`: `wsd(0, lr, lr * r, w, s, d, Cooldown::Cosine)`;
    /// - `"linear"` / `"1-sqrt"` ignore `r` during the cool-down (they reach 0) and jump to
    ///   `lr * r` afterwards: `join(vec![wsd(0, lr, 0, w, s, d, c)?, constant(lr * r)?], vec![w + s + d])`.
    ///
    /// optax has no WSD; `join_schedules([linear_schedule(init, peak, w), constant_schedule(peak),
    /// linear_schedule(peak, end, d)], [w, w + s])` equals `wsd(init, peak, end, w, s, d,
    /// Cooldown::Linear)`.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init`, `peak` or `end` is not finite.
    pub fn wsd(
        init: f64,
        peak: f64,
        end: f64,
        warmup: u64,
        stable: u64,
        decay: u64,
        cooldown: Cooldown,
    ) -> Result<Self, OptimError> {
        check!("wsd", Finite(init, peak, end))?;
        Ok(Schedule::WarmupStableDecay(Wsd {
            init,
            peak,
            end,
            warmup,
            stable,
            decay,
            cooldown,
        }))
    }

    /// `init * gamma^floor(i / step_size)` (torch `StepLR(step_size, gamma)` on base `init`).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `gamma` is not finite or `step_size` is 0.
    pub fn step(init: f64, gamma: f64, step_size: u64) -> Result<Self, OptimError> {
        check!("step", Finite(init, gamma), Steps(step_size))?;
        Ok(Schedule::Step {
            init,
            gamma,
            step_size,
        })
    }

    /// `init * gamma^(number of milestones <= i)` (torch `MultiStepLR(milestones, gamma)`; a
    /// milestone listed twice applies twice, as in PyTorch).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `gamma` is not finite or `milestones` is
    /// not in ascending order.
    pub fn multi_step(init: f64, gamma: f64, milestones: Vec<u64>) -> Result<Self, OptimError> {
        check!("multi_step", Finite(init, gamma), Ascending(milestones))?;
        Ok(Schedule::MultiStep {
            init,
            gamma,
            milestones,
        })
    }

    /// `init` times the product of `scale` over every `(boundary, scale)` with `boundary <= i`
    /// (optax `piecewise_constant_schedule(init, boundaries_and_scales)`).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` is not finite, a scale is negative or not
    /// finite (optax also refuses negative scales), or the boundaries are not strictly
    /// increasing.
    pub fn piecewise_constant(
        init: f64,
        boundaries_and_scales: &[(u64, f64)],
    ) -> Result<Self, OptimError> {
        let boundaries: Vec<u64> = boundaries_and_scales.iter().map(|b| b.0).collect();
        let scales: Vec<f64> = boundaries_and_scales.iter().map(|b| b.1).collect();
        let name = "boundaries_and_scales";
        let mut rules = vec![
            Rule::Finite("init", &init),
            Rule::Increasing(name, &boundaries),
        ];
        rules.extend(scales.iter().map(|s| Rule::NonNegative(name, s)));
        check("piecewise_constant", &rules)?;
        Ok(Schedule::PiecewiseConstant {
            init,
            boundaries,
            scales,
        })
    }

    /// `init * rate^(i / steps)` (exponent floored when `staircase`), clipped at `end` when given
    /// (optax `exponential_decay(init, transition_steps = steps, decay_rate = rate, staircase,
    /// end_value = end)`). PyTorch `ExponentialLR(gamma)` on base `lr` is
    /// `exponential(lr, gamma, 1, false, None)`.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `end` is not finite, `rate` is negative or
    /// not finite, or `steps` is 0.
    pub fn exponential(
        init: f64,
        rate: f64,
        steps: u64,
        staircase: bool,
        end: Option<f64>,
    ) -> Result<Self, OptimError> {
        check!("exponential", Finite(init), NonNegative(rate), Steps(steps))?;
        if let Some(end) = end {
            check!("exponential", Finite(end))?;
        }
        Ok(Schedule::Exponential(ExponentialDecay {
            init,
            rate,
            steps,
            staircase,
            end,
        }))
    }

    /// `end + (init - end) * (1 - min(i, steps) / steps)^power` (optax `polynomial_schedule`;
    /// torch `PolynomialLR(total_iters, power)` on base `lr` is `polynomial(lr, 0, power,
    /// total_iters)`); `steps = 0` is `end` from step 0.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `end` is not finite or `power` is not a
    /// finite number `> 0` (with `power = 0` the value would never leave `init`).
    pub fn polynomial(init: f64, end: f64, power: f64, steps: u64) -> Result<Self, OptimError> {
        check!("polynomial", Finite(init, end), Positive(power))?;
        Ok(Schedule::Polynomial {
            init,
            end,
            power,
            steps,
        })
    }

    /// Interpolation through `knots` (`(step, value)` pairs; sorted here by step) with `anneal`
    /// (see [`Schedule::Interpolate`]). optax `piecewise_interpolate_schedule(type, init,
    /// boundaries_and_scales)` is the knots `(0, init)`, `(b_1, init * s_1)`,
    /// `(b_2, init * s_1 * s_2)`, ….
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `knots` is empty or holds a step or value that is not
    /// finite.
    pub fn interpolate(knots: &[(f64, f64)], anneal: Anneal) -> Result<Self, OptimError> {
        if knots.is_empty() {
            let detail = "is empty; expected at least one (step, value)";
            return Err(error("interpolate", "knots", detail));
        }
        let values = knots.iter().flat_map(|(step, value)| [step, value]);
        let rules: Vec<Rule<'_>> = values.map(|v| Rule::Finite("knots", v)).collect();
        check("interpolate", &rules)?;
        let mut knots: Vec<Knot> = knots
            .iter()
            .map(|&(step, value)| Knot { step, value })
            .collect();
        knots.sort_by(|a, b| a.step.total_cmp(&b.step));
        Ok(Schedule::Interpolate { knots, anneal })
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
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `max` is not finite, `total_steps` is 0, `pct_start`
    /// is not in `[0, 1]`, or `div_factor` or `final_div_factor` is not a finite number `> 0`
    /// (PyTorch's checks).
    pub fn one_cycle(
        max: f64,
        total_steps: u64,
        pct_start: f64,
        anneal: Anneal,
        div_factor: f64,
        final_div_factor: f64,
        three_phase: bool,
    ) -> Result<Self, OptimError> {
        check!("one_cycle", Finite(max))?;
        let ends = torch_one_cycle_ends("one_cycle", total_steps, pct_start, three_phase)?;
        let (initial, min) = one_cycle_range("one_cycle", max, div_factor, final_div_factor)?;
        let values = [initial, max, initial, min];
        Ok(Schedule::torch_knots(ends, three_phase, values, anneal))
    }

    /// The momentum (or Adam `beta1`) that PyTorch's `OneCycleLR(cycle_momentum = True,
    /// base_momentum = base, max_momentum = max)` sets alongside [`Schedule::one_cycle`] with the
    /// same `total_steps`, `pct_start`, `anneal` and `three_phase`: `max` → `base` in phase 1,
    /// `base` → `max` in phase 2, and `max` held in phase 3 of a three-phase cycle. PyTorch's
    /// defaults: `base = 0.85`, `max = 0.95`.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `base` or `max` is not finite, `total_steps` is 0 or
    /// `pct_start` is not in `[0, 1]`.
    pub fn one_cycle_momentum(
        base: f64,
        max: f64,
        total_steps: u64,
        pct_start: f64,
        anneal: Anneal,
        three_phase: bool,
    ) -> Result<Self, OptimError> {
        let name = "one_cycle_momentum";
        check!(name, Finite(base, max))?;
        let ends = torch_one_cycle_ends(name, total_steps, pct_start, three_phase)?;
        Ok(Schedule::torch_knots(
            ends,
            three_phase,
            [max, base, max, max],
            anneal,
        ))
    }

    /// optax's `cosine_onecycle_schedule(transition_steps, peak_value, pct_start, div_factor,
    /// final_div_factor)`: cosine from `peak / div_factor` up to `peak` at step
    /// `floor(pct_start * transition_steps)`, then down to `peak / (div_factor *
    /// final_div_factor)` at step `transition_steps`, then held. Defaults: `pct_start = 0.3`,
    /// `div_factor = 25`, `final_div_factor = 1e4`. Its phases end one step later than
    /// PyTorch's [`Schedule::one_cycle`].
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `transition_steps` is 0, `peak` is not finite,
    /// `pct_start` is not in `[0, 1]`, or `div_factor` or `final_div_factor` is not a finite
    /// number `> 0`.
    pub fn one_cycle_optax_cosine(
        transition_steps: u64,
        peak: f64,
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Result<Self, OptimError> {
        optax_one_cycle(
            "one_cycle_optax_cosine",
            transition_steps,
            peak,
            pct_start,
            None,
            [div_factor, final_div_factor],
            Anneal::Cosine,
        )
    }

    /// optax's `linear_onecycle_schedule(transition_steps, peak_value, pct_start, pct_final,
    /// div_factor, final_div_factor)`: three linear phases, `peak / div_factor` → `peak` at
    /// `floor(pct_start * transition_steps)`, → `peak / div_factor` at
    /// `floor(pct_final * transition_steps)`, → `peak / (div_factor * final_div_factor)` at
    /// `transition_steps`. Defaults: `pct_start = 0.3`, `pct_final = 0.85`, `div_factor = 25`,
    /// `final_div_factor = 1e4`.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `transition_steps` is 0, `peak` is not finite,
    /// `pct_start` or `pct_final` is not in `[0, 1]`, `pct_final < pct_start`, or `div_factor`
    /// or `final_div_factor` is not a finite number `> 0`.
    pub fn one_cycle_optax_linear(
        transition_steps: u64,
        peak: f64,
        pct_start: f64,
        pct_final: f64,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Result<Self, OptimError> {
        optax_one_cycle(
            "one_cycle_optax_linear",
            transition_steps,
            peak,
            pct_start,
            Some(pct_final),
            [div_factor, final_div_factor],
            Anneal::Linear,
        )
    }

    /// PyTorch's one-cycle knots through the phase values `[start, top, middle, last]`:
    /// `start` at step 0, `top` at `ends[0]`, then `middle` at `ends[1]` and `last` at `ends[2]`
    /// (`three_phase`), or `last` at `ends[1]` (two phases: no middle). In the given order
    /// (PyTorch's phases are already ordered; sorting could reorder degenerate phases).
    fn torch_knots(ends: [f64; 3], three_phase: bool, values: [f64; 4], anneal: Anneal) -> Self {
        let [start, top, middle, last] = values;
        let mut knots = vec![(0.0, start), (ends[0], top)];
        if three_phase {
            knots.extend([(ends[1], middle), (ends[2], last)]);
        } else {
            knots.push((ends[1], last));
        }
        Schedule::Interpolate {
            knots: knots
                .into_iter()
                .map(|(step, value)| Knot { step, value })
                .collect(),
            anneal,
        }
    }

    /// Linear warmup from `init` to `peak` over `warmup` steps, then `peak * sqrt(timescale / (i -
    /// warmup + timescale))` with `timescale = max(warmup, 1)` (fairseq `inverse_sqrt` with
    /// `warmup_init_lr = init`; Hugging Face `get_inverse_sqrt_schedule` with the default
    /// `timescale`, which has no warmup start: `init = 0`). Use [`Schedule::InverseSqrt`]
    /// directly for another timescale.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `peak` is not finite.
    pub fn inverse_sqrt(init: f64, peak: f64, warmup: u64) -> Result<Self, OptimError> {
        check!("inverse_sqrt", Finite(init, peak))?;
        Ok(Schedule::InverseSqrt {
            init,
            peak,
            warmup,
            timescale: warmup.max(1),
        })
    }

    /// Cosine annealing from `init` to `end` with warm restarts, the first cycle `period` steps
    /// long and each next one `mult` times longer (torch `CosineAnnealingWarmRestarts(T_0 =
    /// period, T_mult = mult, eta_min = end)` on base `init`).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `end` is not finite, or `period` or `mult`
    /// is 0 (PyTorch's checks).
    pub fn cosine_restarts(
        init: f64,
        end: f64,
        period: u64,
        mult: u64,
    ) -> Result<Self, OptimError> {
        check!("cosine_restarts", Finite(init, end), Steps(period))?;
        if mult == 0 {
            let detail = "is 0; expected at least 1 (1 keeps every cycle `period` long)";
            return Err(error("cosine_restarts", "mult", detail));
        }
        Ok(Schedule::CosineRestarts {
            init,
            end,
            period,
            mult,
        })
    }

    /// Joins schedules at global-step `boundaries`: `parts[0]` before `boundaries[0]`, then
    /// `parts[k + 1]` from `boundaries[k]` on, each part counting its own steps from its
    /// boundary (optax `join_schedules`, torch `SequentialLR`).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `parts` is empty, `boundaries` does not have one
    /// element fewer than `parts`, or `boundaries` is not strictly increasing.
    pub fn join(parts: Vec<Schedule>, boundaries: Vec<u64>) -> Result<Self, OptimError> {
        if parts.is_empty() {
            return Err(error(
                "join",
                "parts",
                "is empty; expected at least one schedule",
            ));
        }
        if boundaries.len() + 1 != parts.len() {
            return Err(error(
                "join",
                "boundaries",
                format!(
                    "has {} elements for {} parts; expected {} (one fewer than the parts)",
                    boundaries.len(),
                    parts.len(),
                    parts.len() - 1
                ),
            ));
        }
        check!("join", Increasing(boundaries))?;
        Ok(Schedule::Join { parts, boundaries })
    }

    /// A schedule computed by `f(step)`. It has no argument to check, so it cannot fail; the
    /// values are checked where every value is, by the hyperparameter's domain at each step.
    pub fn from_fn(name: &'static str, f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> Self {
        Schedule::Custom(CustomSchedule {
            name,
            f: Arc::new(f),
            peak: None,
        })
    }

    /// [`Schedule::from_fn`] with its largest value over every step declared as `peak`, which
    /// [`Schedule::peak`] returns (taken as given: a closure cannot be searched). Needed where a
    /// custom learning rate feeds `scheduled_decay` (`eta_t = lr_t / peak`).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `peak` is not finite.
    pub fn from_fn_with_peak(
        name: &'static str,
        peak: f64,
        f: impl Fn(u64) -> f64 + Send + Sync + 'static,
    ) -> Result<Self, OptimError> {
        check!("from_fn_with_peak", Finite(peak))?;
        Ok(Schedule::Custom(CustomSchedule {
            name,
            f: Arc::new(f),
            peak: Some(peak),
        }))
    }
}

/// PyTorch `OneCycleLR` phase end steps: `[p1, total - 1]` or `[p1, 2 p1 + ... , total - 1]`
/// with `p1 = pct_start * total - 1` (three-phase middle end: `2 * pct_start * total - 2`), once
/// `total_steps` (at least 1) and `pct_start` (in `[0, 1]`) are checked for constructor
/// `schedule`.
fn torch_one_cycle_ends(
    schedule: &'static str,
    total_steps: u64,
    pct_start: f64,
    three_phase: bool,
) -> Result<[f64; 3], OptimError> {
    check!(schedule, Steps(total_steps), Fraction(pct_start))?;
    let total = total_steps as f64;
    let p1 = pct_start * total - 1.0;
    Ok(if three_phase {
        [p1, 2.0 * pct_start * total - 2.0, total - 1.0]
    } else {
        [p1, total - 1.0, total - 1.0]
    })
}

/// The one-cycle schedules' start and end values: `peak / div_factor` and that divided by
/// `final_div_factor`, once both factors are checked (finite and `> 0`) for constructor
/// `schedule`.
fn one_cycle_range(
    schedule: &'static str,
    peak: f64,
    div_factor: f64,
    final_div_factor: f64,
) -> Result<(f64, f64), OptimError> {
    check!(schedule, Positive(div_factor, final_div_factor))?;
    let start = peak / div_factor;
    Ok((start, start / final_div_factor))
}

/// optax's one-cycle schedules (constructor `schedule`): from `peak / div_factor` at step 0 to
/// `peak` at `floor(pct_start * transition_steps)`, back to `peak / div_factor` at
/// `floor(pct_final * transition_steps)` when given, to `peak / (div_factor * final_div_factor)`
/// at `transition_steps`, interpolated with `anneal`. The arguments are checked in the
/// constructors' documented order (`factors` is `[div_factor, final_div_factor]`).
fn optax_one_cycle(
    schedule: &'static str,
    transition_steps: u64,
    peak: f64,
    pct_start: f64,
    pct_final: Option<f64>,
    [div_factor, final_div_factor]: [f64; 2],
    anneal: Anneal,
) -> Result<Schedule, OptimError> {
    check!(
        schedule,
        Steps(transition_steps),
        Finite(peak),
        Fraction(pct_start)
    )?;
    if let Some(pct_final) = pct_final {
        check!(schedule, Fraction(pct_final))?;
        if pct_final < pct_start {
            let detail = format!("is {pct_final}, before `pct_start` ({pct_start})");
            return Err(error(schedule, "pct_final", detail));
        }
    }
    let (init, end) = one_cycle_range(schedule, peak, div_factor, final_div_factor)?;
    let t = transition_steps as f64;
    let mut knots = vec![(0.0, init), ((pct_start * t).floor(), peak)];
    knots.extend(pct_final.map(|pct_final| ((pct_final * t).floor(), init)));
    knots.push((t, end));
    Schedule::interpolate(&knots, anneal)
}
