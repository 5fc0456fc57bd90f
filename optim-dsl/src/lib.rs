// The guide's examples train dfdx models, so it is the crate documentation (and doctested) with
// the default `dfdx` feature; without it (candle-only builds) a short pointer replaces it, so
// that `cargo test -p optim-dsl --no-default-features --doc` builds.
#![cfg_attr(feature = "dfdx", doc = include_str!("guide.md"))]
#![cfg_attr(
    not(feature = "dfdx"),
    doc = "optim-dsl: neural-network optimizers declared with `optimizer!` and expanded into fused \
           update loops. The user guide (`optim-dsl/src/guide.md`) is this crate's documentation \
           when the default `dfdx` feature is on; this build has it off (for example for \
           `optim-candle`), so slices and candle are the ways to step parameters."
)]

// Lets the zoo (inside this crate) use the same `::optim_dsl::__private` paths as user code.
extern crate self as optim_dsl;

pub use optim_macros::optimizer;
/// Stepping dfdx models: `opt.update(&mut model, &mut grads)` (feature `dfdx`, default).
#[cfg(feature = "dfdx")]
pub use optim_runtime::DfdxUpdate;
pub use optim_runtime::{
    accumulate, checkpoint, cuda, ema, lowp, matrix, metrics, ops, plan, schedule, state, Anneal,
    Arithmetic, Checkpoint, Cooldown, CudaKernelSource, Domain, DslOptimizer, EmaCorrection, Field,
    Float, GlobalContribution, GradAccumulator, Hyper, KernelPlan, Knot, LocalSync,
    NonFinitePolicy, OptState, OptimError, OptimizerConfig, ParamInfo, ParamMetrics, ParamSlice,
    ParamState, ParamSync, Plan, RuleBody, RulePlan, ScalarPrecision, Schedule, ShapeChange,
    StateDtype, StepMetrics, StepSync, WeightEma,
};
/// Stepping parameters some of which are stored in 16 bits (`bf16`/`f16`), computed in the
/// optimizer's element type: see [`optim_runtime::narrow`].
pub use optim_runtime::{update_mixed_in_modules, MixedSlice, NarrowSlice};

pub mod zoo;

/// The repository README's Rust snippets, compiled and run as doctests (`cargo test -p
/// optim-dsl --doc`), so that every example there builds as shown. The user guide, this
/// crate's documentation, is doctested as the crate docs.
#[cfg(all(doctest, feature = "dfdx"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// K-FAC from activation statistics: the [`kfac::KfacLinear`] layer (dfdx `Linear` that
/// records `Σ a aᵀ` and `Σ ĝ ĝᵀ` during backward) and [`kfac::KfacStats`] (running factors,
/// handed to the zoo's [`zoo::KFac`] every `update_every` steps); see the module docs. Feature
/// `dfdx` (default).
#[cfg(feature = "dfdx")]
pub use optim_runtime::dfdx::kfac;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// Everything needed to declare and use optimizers: the macro, the traits (stepping slices with
/// [`DslOptimizer`], dfdx models with [`DfdxUpdate`], saving and loading with [`Checkpoint`]),
/// the parameter and schedule types. The zoo is not in the prelude because dfdx's prelude has
/// optimizers with the same names (`Adam`, `Sgd`, `RMSprop`); import them by name from [`zoo`].
pub mod prelude {
    pub use crate::optimizer;
    #[cfg(feature = "dfdx")]
    pub use optim_runtime::DfdxUpdate;
    pub use optim_runtime::{
        Checkpoint, DslOptimizer, Hyper, OptimError, OptimizerConfig, ParamSlice, Plan, Schedule,
    };
}
