//! K-FAC from activation statistics (Martens & Grosse, "Optimizing Neural Networks with
//! Kronecker-factored Approximate Curvature", ICML 2015; the layer-wise preconditioner of the
//! thesis "Towards Guided Descent", arXiv 2512.18373).
//!
//! - [`KfacLinear`] (builder [`builder::KfacLinear`]): dfdx's `Linear` that records, during
//!   `backward()`, `Σ ā āᵀ` of its inputs (homogeneous coordinates) and `Σ ĝ ĝᵀ` of its
//!   per-example output gradients into the gradient slots of two buffers, through a backward
//!   operation added to the tape (dfdx's public `Tape::add_backward_op`; no patch of dfdx).
//! - [`KfacStats`]: keeps the running (EMA, bias-corrected) factors in those buffers, and
//!   every `update_every` steps hands each weight's factors to the optimizer with
//!   `DslOptimizer::set_kron_factors`, whose `kfac_precondition` then recomputes its cached
//!   damped inverses. Damping ([`FactorDamping`]): plain Tikhonov `(G + λI)⁻¹ ∇W (A + λI)⁻¹`
//!   by the rule's `damping` (default), or Martens & Grosse's factored `π` damping.
//!
//! In a training loop (`opt` an optimizer whose rule for `KfacLinear` tensors uses
//! `kfac_precondition`, e.g. the zoo's `KFac`), three lines change: the architecture uses
//! `KfacLinear` instead of `Linear`, `kfac.watch(&model, &mut grads)?` after `alloc_grads`, and
//! `kfac.update(&mut model, &mut grads, &mut opt)?` before `opt.update(...)` (see
//! [`KfacStats`]).
//!
//! Conventions: `G` is the second moment of the gradients of the per-example losses `ℓₙ` for a
//! loss `L = (1/N) Σ ℓₙ` that is a mean over the `N` rows of the forward (dfdx's losses are),
//! i.e. `N ∂L/∂yₙ` (use `KfacStatsConfig::g_scale` for another normalisation). With the real
//! labels this is the *empirical* Fisher; for the Fisher of Martens & Grosse, run the backward
//! that feeds `update` on targets sampled from the model's predictive distribution (a second
//! forward and backward: dfdx's tape runs once), and the gradient step on the real ones.

mod layer;
mod stats;

pub use layer::{builder, KfacLinear};
pub use stats::{FactorDamping, KfacReport, KfacStats, KfacStatsConfig, KFAC_MODULE};
