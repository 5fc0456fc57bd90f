//! dfdx 0.13 integration, the top of the runtime: everything that touches a dfdx module.
//!
//! - [`DfdxUpdate`]: stepping a dfdx module with any optimizer (`opt.update(&mut model, &mut
//!   grads)`) and swapping a state buffer into it (`swap_state_with_model`).
//! - The model methods of [`WeightEma`](crate::ema::WeightEma) (`update_model`,
//!   `copy_to_model`, `swap_with_model`) and of
//!   [`GradAccumulator`](crate::accumulate::GradAccumulator) (`add_model`,
//!   `write_mean_to_grads`, `step_model`).
//!
//! - [`kfac`]: K-FAC from activation statistics: the [`kfac::KfacLinear`] layer records
//!   input and output-gradient statistics during backward, [`kfac::KfacStats`] keeps the
//!   running factors and hands them to `kfac_precondition`.
//!
//! The rest of the runtime knows nothing of dfdx modules. All of the above reach the model's
//! tensors through one walk (`walk.rs`): it names each tensor by its dotted
//! path as dfdx's `ViewTensorName` spells it (`"0.weight"`), reports its shape, the type name
//! of the innermost module holding it (`"Linear"`) and whether it is trainable
//! (`TensorOptions::do_gradient_update`), and copies values or borrows gradient buffers through
//! dfdx's `copy_into` / `copy_from` and `Gradients::get_or_alloc_mut`. The walk is generic over
//! the dfdx device: on `Cpu` the step copies values through the host; on `Cuda` (feature
//! `cuda`, `cuda.rs`) the step runs on the GPU on the optimizer's device master copy of each
//! parameter and `commit.rs` publishes it into the tensor (`docs/gpu.md`).

pub(crate) mod walk;

mod commit;
#[cfg(feature = "cuda")]
mod cuda;
pub(crate) mod master;

pub mod kfac;

mod accumulate;
mod ema;
pub(crate) mod update;

pub use update::{DfdxUpdate, ModelDevice};
