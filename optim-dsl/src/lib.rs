//! # optim-dsl
//!
//! Declare neural-network optimizers as compositions of primitives; the `optimizer!` macro checks
//! the declaration at compile time and expands it into fused update kernels for
//! [dfdx](https://docs.rs/dfdx/0.13) tensors and plain slices.
//!
//! ```
//! use optim_dsl::prelude::*;
//!
//! optimizer! {
//!     /// Adam with decoupled weight decay (Loshchilov & Hutter, 2019).
//!     pub MyAdamW<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2> {
//!         let m = momentum(grad, beta1);          // m <- m + (1 - beta1) (g - m)
//!         let v = second_moment(grad, beta2);     // v <- beta2 v + (1 - beta2) g^2
//!         param -= lr * (debias(m) / (sqrt(debias(v)) + eps) + weight_decay * param);
//!     }
//! }
//!
//! let mut opt = MyAdamW::<f32>::default();
//! let mut w = vec![1.0f32, -2.0];
//! let g = [0.5f32, 0.5];
//! opt.update_slices(&mut [ParamSlice { name: "w", shape: &[2], param: &mut w, grad: &g }]).unwrap();
//! assert!(w[0] < 1.0 && w[1] < -2.0);
//! // one fused loop: reads param, grad, m, v; writes param, m, v = 28 bytes per f32 parameter
//! let plan = opt.explain();
//! assert_eq!(plan.kernel_count(), 1);
//! ```
//!
//! See `ARCHITECTURE.md` for the path from a DSL word to the loop that runs it, and [`zoo`] for
//! the ready-made optimizers (each written in the DSL).

// Lets the zoo (inside this crate) use the same `::optim_dsl::__private` paths as user code.
extern crate self as optim_dsl;

pub use optim_macros::optimizer;
pub use optim_runtime::{
    kernel, matrix, ops, plan, schedule, state, Domain, DslOptimizer, Field, Float, Hyper,
    KernelPlan, OptState, OptimError, OptimizerConfig, ParamInfo, ParamSlice, ParamState, Plan,
    RuleBody, RulePlan, Schedule,
};

pub mod zoo;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// Everything needed to declare and use optimizers: the macro, the traits, the parameter and
/// schedule types. The zoo is not in the prelude because dfdx's prelude has optimizers with the
/// same names (`Adam`, `Sgd`, `RMSprop`); import them by name from [`zoo`].
pub mod prelude {
    pub use crate::optimizer;
    pub use optim_runtime::{
        DslOptimizer, Hyper, OptimError, OptimizerConfig, ParamSlice, Plan, Schedule,
    };
}
