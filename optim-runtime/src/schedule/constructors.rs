//! The constructors.

use super::{Anneal, Cooldown, CustomSchedule, Knot, Schedule};
use std::sync::Arc;

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
