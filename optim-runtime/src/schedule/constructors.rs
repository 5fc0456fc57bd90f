//! The constructors: each checks its arguments and names the first bad one.

use super::{Anneal, Cooldown, CustomSchedule, Knot, Schedule};
use crate::error::OptimError;
use std::sync::Arc;

/// The argument checks of one constructor (`schedule` is its name, e.g. `"warmup_cosine"`).
struct Args {
    schedule: &'static str,
}

impl Args {
    fn error(&self, argument: &'static str, detail: impl Into<String>) -> OptimError {
        OptimError::InvalidSchedule {
            schedule: self.schedule,
            argument,
            detail: detail.into(),
        }
    }

    /// `value` is finite.
    fn finite(&self, argument: &'static str, value: f64) -> Result<(), OptimError> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(self.error(argument, format!("is {value}; expected a finite number")))
        }
    }

    /// `value` is finite and `> 0`.
    fn positive(&self, argument: &'static str, value: f64) -> Result<(), OptimError> {
        self.finite(argument, value)?;
        if value > 0.0 {
            Ok(())
        } else {
            Err(self.error(argument, format!("is {value}; expected a number > 0")))
        }
    }

    /// `value` is finite and `>= 0`.
    fn non_negative(&self, argument: &'static str, value: f64) -> Result<(), OptimError> {
        self.finite(argument, value)?;
        if value >= 0.0 {
            Ok(())
        } else {
            Err(self.error(argument, format!("is {value}; expected a number >= 0")))
        }
    }

    /// `value` is in `[0, 1]`.
    fn fraction(&self, argument: &'static str, value: f64) -> Result<(), OptimError> {
        if (0.0..=1.0).contains(&value) {
            Ok(())
        } else {
            Err(self.error(argument, format!("is {value}; expected a number in [0, 1]")))
        }
    }

    /// A count of steps that divides: at least 1.
    fn steps(&self, argument: &'static str, steps: u64) -> Result<(), OptimError> {
        if steps >= 1 {
            Ok(())
        } else {
            Err(self.error(argument, "is 0; expected at least 1 step"))
        }
    }

    /// Global steps in ascending order; `strict` also refuses a step listed twice.
    fn ascending(
        &self,
        argument: &'static str,
        xs: &[u64],
        strict: bool,
    ) -> Result<(), OptimError> {
        for w in xs.windows(2) {
            if w[1] < w[0] || (strict && w[1] == w[0]) {
                let how = if strict {
                    "strictly increasing"
                } else {
                    "ascending"
                };
                return Err(self.error(
                    argument,
                    format!(
                        "{xs:?} is not {how} ({} then {}); expected {how} global steps",
                        w[0], w[1]
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Schedule {
    /// Always `value`.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `value` is not finite.
    pub fn constant(value: f64) -> Result<Self, OptimError> {
        Args {
            schedule: "constant",
        }
        .finite("value", value)?;
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
        let a = Args { schedule: "linear" };
        a.finite("start", start)?;
        a.finite("end", end)?;
        Ok(Schedule::Linear { start, end, steps })
    }

    /// Half-cosine from `init` to `end` over `steps` steps, then `end`; `steps = 0` is `end`
    /// from step 0.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `end` is not finite.
    pub fn cosine(init: f64, end: f64, steps: u64) -> Result<Self, OptimError> {
        let a = Args { schedule: "cosine" };
        a.finite("init", init)?;
        a.finite("end", end)?;
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
        let a = Args {
            schedule: "warmup_cosine",
        };
        a.finite("init", init)?;
        a.finite("peak", peak)?;
        a.finite("end", end)?;
        if warmup > total {
            return Err(a.error(
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
        let a = Args {
            schedule: "warmup_cosine_torch",
        };
        a.finite("lr", lr)?;
        a.fraction("start_factor", start_factor)?;
        a.finite("end", end)?;
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
        let a = Args { schedule: "wsd" };
        a.finite("init", init)?;
        a.finite("peak", peak)?;
        a.finite("end", end)?;
        Ok(Schedule::WarmupStableDecay {
            init,
            peak,
            end,
            warmup,
            stable,
            decay,
            cooldown,
        })
    }

    /// `init * gamma^floor(i / step_size)` (torch `StepLR(step_size, gamma)` on base `init`).
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `gamma` is not finite or `step_size` is 0.
    pub fn step(init: f64, gamma: f64, step_size: u64) -> Result<Self, OptimError> {
        let a = Args { schedule: "step" };
        a.finite("init", init)?;
        a.finite("gamma", gamma)?;
        a.steps("step_size", step_size)?;
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
        let a = Args {
            schedule: "multi_step",
        };
        a.finite("init", init)?;
        a.finite("gamma", gamma)?;
        a.ascending("milestones", &milestones, false)?;
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
        let a = Args {
            schedule: "piecewise_constant",
        };
        a.finite("init", init)?;
        let boundaries: Vec<u64> = boundaries_and_scales.iter().map(|b| b.0).collect();
        let scales: Vec<f64> = boundaries_and_scales.iter().map(|b| b.1).collect();
        a.ascending("boundaries_and_scales", &boundaries, true)?;
        for &s in &scales {
            a.non_negative("boundaries_and_scales", s)?;
        }
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
        let a = Args {
            schedule: "exponential",
        };
        a.finite("init", init)?;
        a.non_negative("rate", rate)?;
        a.steps("steps", steps)?;
        if let Some(e) = end {
            a.finite("end", e)?;
        }
        Ok(Schedule::Exponential {
            init,
            rate,
            steps,
            staircase,
            end,
        })
    }

    /// `end + (init - end) * (1 - min(i, steps) / steps)^power` (optax `polynomial_schedule`;
    /// torch `PolynomialLR(total_iters, power)` on base `lr` is `polynomial(lr, 0, power,
    /// total_iters)`); `steps = 0` is `end` from step 0.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `end` is not finite or `power` is not a
    /// finite number `> 0` (with `power = 0` the value would never leave `init`).
    pub fn polynomial(init: f64, end: f64, power: f64, steps: u64) -> Result<Self, OptimError> {
        let a = Args {
            schedule: "polynomial",
        };
        a.finite("init", init)?;
        a.finite("end", end)?;
        a.positive("power", power)?;
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
        let a = Args {
            schedule: "interpolate",
        };
        if knots.is_empty() {
            return Err(a.error("knots", "is empty; expected at least one (step, value)"));
        }
        for &(step, value) in knots {
            a.finite("knots", step)?;
            a.finite("knots", value)?;
        }
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
        let a = Args {
            schedule: "one_cycle",
        };
        a.finite("max", max)?;
        a.steps("total_steps", total_steps)?;
        a.fraction("pct_start", pct_start)?;
        a.positive("div_factor", div_factor)?;
        a.positive("final_div_factor", final_div_factor)?;
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
        Ok(Schedule::torch_knots(knots, anneal))
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
        let a = Args {
            schedule: "one_cycle_momentum",
        };
        a.finite("base", base)?;
        a.finite("max", max)?;
        a.steps("total_steps", total_steps)?;
        a.fraction("pct_start", pct_start)?;
        let ends = torch_one_cycle_ends(total_steps, pct_start, three_phase);
        let mut knots = vec![(0.0, max), (ends[0], base), (ends[1], max)];
        if three_phase {
            knots.push((ends[2], max));
        }
        Ok(Schedule::torch_knots(knots, anneal))
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
        let a = Args {
            schedule: "one_cycle_optax_cosine",
        };
        a.steps("transition_steps", transition_steps)?;
        a.finite("peak", peak)?;
        a.fraction("pct_start", pct_start)?;
        a.positive("div_factor", div_factor)?;
        a.positive("final_div_factor", final_div_factor)?;
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
        let a = Args {
            schedule: "one_cycle_optax_linear",
        };
        a.steps("transition_steps", transition_steps)?;
        a.finite("peak", peak)?;
        a.fraction("pct_start", pct_start)?;
        a.fraction("pct_final", pct_final)?;
        if pct_final < pct_start {
            return Err(a.error(
                "pct_final",
                format!("is {pct_final}, before `pct_start` ({pct_start})"),
            ));
        }
        a.positive("div_factor", div_factor)?;
        a.positive("final_div_factor", final_div_factor)?;
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

    /// Linear warmup from `init` to `peak` over `warmup` steps, then `peak * sqrt(timescale / (i -
    /// warmup + timescale))` with `timescale = max(warmup, 1)` (fairseq `inverse_sqrt` with
    /// `warmup_init_lr = init`; Hugging Face `get_inverse_sqrt_schedule` with the default
    /// `timescale`, which has no warmup start: `init = 0`). Use [`Schedule::InverseSqrt`]
    /// directly for another timescale.
    ///
    /// # Errors
    /// [`OptimError::InvalidSchedule`] when `init` or `peak` is not finite.
    pub fn inverse_sqrt(init: f64, peak: f64, warmup: u64) -> Result<Self, OptimError> {
        let a = Args {
            schedule: "inverse_sqrt",
        };
        a.finite("init", init)?;
        a.finite("peak", peak)?;
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
        let a = Args {
            schedule: "cosine_restarts",
        };
        a.finite("init", init)?;
        a.finite("end", end)?;
        a.steps("period", period)?;
        if mult == 0 {
            return Err(a.error(
                "mult",
                "is 0; expected at least 1 (1 keeps every cycle `period` long)",
            ));
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
        let a = Args { schedule: "join" };
        if parts.is_empty() {
            return Err(a.error("parts", "is empty; expected at least one schedule"));
        }
        if boundaries.len() + 1 != parts.len() {
            return Err(a.error(
                "boundaries",
                format!(
                    "has {} elements for {} parts; expected {} (one fewer than the parts)",
                    boundaries.len(),
                    parts.len(),
                    parts.len() - 1
                ),
            ));
        }
        a.ascending("boundaries", &boundaries, true)?;
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
        Args {
            schedule: "from_fn_with_peak",
        }
        .finite("peak", peak)?;
        Ok(Schedule::Custom(CustomSchedule {
            name,
            f: Arc::new(f),
            peak: Some(peak),
        }))
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
