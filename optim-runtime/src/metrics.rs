//! Opt-in step metrics: what the last step measured (global gradient norm, the global norms the
//! rule's `global_norm` / `clip_global_norm` computed and the clip factor, Kronecker refreshes
//! and refused refreshes, per-parameter update RMS), read with
//! [`DslOptimizer::metrics`](crate::DslOptimizer::metrics).
//!
//! Off by default. When off, a step does no metrics work at all (one branch per step). When on
//! ([`DslOptimizer::set_metrics`](crate::DslOptimizer::set_metrics)), a step additionally reads
//! every gradient once (the gradient norms), copies every parameter before the update and reads
//! both copies once after it (the update RMS): one extra read of the gradients, one extra copy of
//! the parameters (memory: one parameter-sized buffer per parameter, freed after the step) and
//! one extra read of old and new parameters. Everything else (global norms, refresh counts) is
//! taken from what the step computes anyway. Metrics are not saved in checkpoints.

use crate::float::Float;
use crate::kernel::{GlobalContribution, MAX_GLOBALS};
use crate::matrix::MatrixStats;
use std::collections::BTreeMap;

/// What one completed step measured (see [`DslOptimizer::metrics`](crate::DslOptimizer::metrics)).
///
/// Norms and RMS values are accumulated in `f64` in the step's parameter order, from the `f32` or
/// `f64` buffers; they are NaN or infinite when the gradients or updates are (no value is
/// filtered). In a data-parallel step ([`DslOptimizer::update_slices_synced`](crate::DslOptimizer::update_slices_synced))
/// `grad_norm`, the refresh counts and `params` cover this process's parameters only (combine
/// `grad_norm` over processes as the square root of the sum of squares), while `global_norms`
/// are the totals over every process, as the update used them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepMetrics {
    /// The global step this update ran at (0 for the first update: the step schedules were
    /// evaluated at).
    pub step: u64,
    /// `‖g‖₂` over every gradient element of the step (all parameters together), as PyTorch's
    /// `clip_grad_norm_` returns it (before any clipping).
    pub grad_norm: f64,
    /// The norms the rule's global reductions computed, by reduction id: index `i` is the rule's
    /// `i`-th `global_norm(x)` / `clip_global_norm(x, max)` in source order, `‖x‖₂` over every
    /// parameter of the step (every process of a data-parallel step). Empty when the optimizer
    /// has none. Free: the step computes them anyway.
    pub global_norms: Vec<f64>,
    /// Inverse-root, eigenbasis and damped-inverse refreshes the matrix primitives computed in
    /// this step (all parameters; [`crate::matrix::Report::refreshes`]).
    pub refreshes: u64,
    /// Refreshes refused in this step because the result would not be finite or well defined
    /// (the previous root or basis was kept; [`crate::matrix::Report::failed_refreshes`]).
    pub failed_refreshes: u64,
    /// Non-finite inputs the matrix primitives refused to take into their statistics in this
    /// step ([`crate::matrix::Report::skipped_inputs`]).
    pub skipped_inputs: u64,
    /// Per-parameter values, by parameter name (dfdx: the dotted path such as `"0.weight"`).
    pub params: BTreeMap<String, ParamMetrics>,
}

/// What one step measured for one parameter (see [`StepMetrics::params`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ParamMetrics {
    /// `‖g‖₂` of this parameter's gradient.
    pub grad_norm: f64,
    /// `sqrt(mean((p_new - p_old)²))` over the parameter's elements: the RMS of the update
    /// actually applied (0 for a parameter with no elements).
    pub update_rms: f64,
    /// Matrix-primitive refreshes of this parameter in this step.
    pub refreshes: u64,
    /// Refused refreshes of this parameter in this step.
    pub failed_refreshes: u64,
}

impl StepMetrics {
    /// The factor `clip_global_norm(x, max_norm)` multiplied `x` by in this step:
    /// `min(1, max_norm / (n + 1e-6))` with `n = global_norms[0]`, exactly as the word computes it
    /// (in `f64`, NaN-propagating `min`; see the user guide). Pass the `max_norm` the step used.
    /// `None` when the step had no global reduction.
    ///
    /// With a non-finite gradient (under [`NonFinitePolicy::Propagate`](crate::NonFinitePolicy)):
    /// a NaN norm gives a NaN factor, an infinite norm a factor of `0`.
    pub fn clip_factor(&self, max_norm: f64) -> Option<f64> {
        let n = *self.global_norms.first()?;
        Some(crate::ops::min(1.0, max_norm / (n + 1e-6)))
    }
}

/// Whether metrics are on, and the last step's.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct MetricsSlot {
    pub enabled: bool,
    pub last: Option<StepMetrics>,
}

/// The sum of squares of `xs` in `f64`, in order.
fn sum_sq<E: Float>(xs: &[E]) -> f64 {
    xs.iter().map(|x| x.as_f64() * x.as_f64()).sum()
}

/// What a step records before it writes anything: gradient norms and a copy of each parameter.
pub(crate) struct Before<E> {
    grad_sq: Vec<f64>,
    old: Vec<Vec<E>>,
    matrix: Vec<MatrixStats>,
    globals: [Option<f64>; MAX_GLOBALS],
}

impl<E: Float> Before<E> {
    /// Reads the gradients and copies the parameters (in the step's order). The iterators here
    /// and in [`finish`](Self::finish) are trait objects: one copy per element type serves
    /// every optimizer's step.
    pub fn capture<'x>(entries: &mut dyn Iterator<Item = (&'x [E], &'x [E])>) -> Self {
        let (mut grad_sq, mut old) = (Vec::new(), Vec::new());
        for (param, grad) in entries {
            grad_sq.push(sum_sq(grad));
            old.push(param.to_vec());
        }
        Before {
            grad_sq,
            old,
            matrix: Vec::new(),
            globals: [None; MAX_GLOBALS],
        }
    }

    /// Records one parameter's matrix statistics before the step (in the step's order).
    pub fn matrix_before(&mut self, stats: MatrixStats) {
        self.matrix.push(stats);
    }

    /// Records the totals of one loop's global reductions (sums of squares).
    pub fn globals(&mut self, total: &GlobalContribution) {
        for g in 0..MAX_GLOBALS {
            if total.produced[g] {
                self.globals[g] = Some(total.sums[g]);
            }
        }
    }

    /// The step's metrics: `after` gives each parameter's name, its value after the step and its
    /// matrix statistics after the step (in the step's order).
    pub fn finish<'x>(
        self,
        step: u64,
        after: &mut dyn Iterator<Item = (&'x str, &'x [E], MatrixStats)>,
    ) -> StepMetrics {
        let mut m = StepMetrics {
            step,
            grad_norm: self.grad_sq.iter().sum::<f64>().sqrt(),
            global_norms: self
                .globals
                .iter()
                .map_while(|g| g.map(f64::sqrt))
                .collect(),
            ..StepMetrics::default()
        };
        for (i, (name, new, stats)) in after.enumerate() {
            let old = self.old.get(i).map_or(&[][..], Vec::as_slice);
            let sq: f64 = new
                .iter()
                .zip(old)
                .map(|(n, o)| {
                    let d = n.as_f64() - o.as_f64();
                    d * d
                })
                .sum();
            let update_rms = if new.is_empty() {
                0.0
            } else {
                (sq / new.len() as f64).sqrt()
            };
            let was = self.matrix.get(i).copied().unwrap_or_default();
            let refreshes = stats.refreshes.saturating_sub(was.refreshes);
            let failed_refreshes = stats.failed_refreshes.saturating_sub(was.failed_refreshes);
            m.refreshes += refreshes;
            m.failed_refreshes += failed_refreshes;
            m.skipped_inputs += stats.skipped_inputs.saturating_sub(was.skipped_inputs);
            m.params.insert(
                name.to_string(),
                ParamMetrics {
                    grad_norm: self.grad_sq.get(i).copied().unwrap_or(0.0).sqrt(),
                    update_rms,
                    refreshes,
                    failed_refreshes,
                },
            );
        }
        m
    }
}
