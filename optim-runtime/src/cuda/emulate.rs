//! A device step on the emulated device ([`HostBackend`]): the entry point through which the
//! device step driver (`super::step`) is tested on any machine.
//!
//! [`update_emulated`] runs exactly what a dfdx `Cuda` step runs — validation, state created
//! on the device, one multi-tensor launch per generated loop, reductions and barriers through
//! the device link, the state store kept between steps — with `Vec`s as device buffers and the
//! Rust twin of each loop as the kernel. With the default [`HostBackend::new`] (rows of
//! [`CHUNK`](crate::kernel::CHUNK) elements) its results are bit for bit those of
//! [`DslOptimizer::update_slices`]; tests compare the two over the whole zoo.

use super::host::HostBackend;
use super::step::{step_device, DevEntry};
use super::store::take_store;
use crate::error::OptimError;
use crate::optimizer::{DslOptimizer, LocalSync, StepSync};
use crate::Float;

/// One parameter of an [`update_emulated`] step: as [`ParamSlice`](crate::ParamSlice), with
/// the parameter and gradient as owned buffers (they are moved onto the emulated device for
/// the step and handed back, also on error).
#[derive(Debug)]
pub struct EmulatedParam<'a, E> {
    /// Unique name; the state is keyed by it.
    pub name: &'a str,
    /// Logical shape (as [`ParamSlice::shape`](crate::ParamSlice::shape)).
    pub shape: &'a [usize],
    /// The type name of the module holding the parameter (`""` for none), for `module == ...`
    /// routing guards.
    pub module: &'a str,
    /// The parameter, updated in place.
    pub param: &'a mut Vec<E>,
    /// Its gradient (unchanged on return).
    pub grad: &'a mut Vec<E>,
}

/// One optimizer step of `opt` over `params` through the device step driver on the emulated
/// device `backend` (see the [module docs](self)).
///
/// The state's element-wise buffers stay on the emulated device between calls, as they stay
/// on a GPU: [`OptState::on_device`](crate::OptState::on_device) is then true, a CPU step or a
/// checkpoint brings them back first ([`OptState::sync_to_host`](crate::OptState::sync_to_host)),
/// and state held by another device is brought back before this step.
///
/// # Errors
/// As [`DslOptimizer::update_slices`]; [`OptimError::Device`] for a loop without a CUDA twin (a
/// hand-written kernel). Validation errors modify nothing.
pub fn update_emulated<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    backend: HostBackend,
    params: &mut [EmulatedParam<'_, E>],
) -> Result<(), OptimError> {
    update_emulated_synced(opt, backend, params, &mut LocalSync)
}

/// [`update_emulated`] as one process of a data-parallel step (see
/// [`DslOptimizer::update_slices_synced`]).
///
/// # Errors
/// As [`update_emulated`], and what `sync` returns.
pub fn update_emulated_synced<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    backend: HostBackend,
    params: &mut [EmulatedParam<'_, E>],
    sync: &mut dyn StepSync,
) -> Result<(), OptimError> {
    let mut store = take_store(opt.opt_state_mut(), backend, |_| true)?;
    store.backend = backend;
    let mut entries: Vec<DevEntry<'_, Vec<E>>> = params
        .iter_mut()
        .map(|p| DevEntry {
            name: p.name,
            shape: p.shape,
            module: p.module,
            param: std::mem::take(p.param),
            grad: std::mem::take(p.grad),
        })
        .collect();
    let result = step_device(opt, &mut store, &mut entries, sync);
    for (p, e) in params.iter_mut().zip(entries) {
        *p.param = e.param;
        *p.grad = e.grad;
    }
    opt.opt_state_mut().device.0 = Some(Box::new(store));
    result
}

/// `opt.update(&mut model, &mut grads)` as a dfdx `Cuda` model steps, on a `Cpu` model: the
/// master-copy driver (`crate::dfdx::master`: gradients lent out of `grads` and handed back,
/// each parameter's device copy kept between steps or read again, the step on the emulated
/// device, the exact publish into the tensor keeping its id) with [`HostBackend`] as the
/// device. Its results are bit for bit those of the CPU driver (`DfdxUpdate::update`).
///
/// The device copies follow the `Cuda` contract: they are the truth between steps, so after
/// writing parameters in place call [`OptState::resync_params`](crate::OptState::resync_params)
/// (a tensor replaced by a new one is read again without it).
///
/// # Errors
/// As `DfdxUpdate::update`; [`OptimError::Device`] for a loop without a CUDA twin.
#[cfg(feature = "dfdx")]
pub fn update_emulated_model<E, O, M>(
    opt: &mut O,
    model: &mut M,
    grads: &mut dfdx::tensor::Gradients<E, dfdx::tensor::Cpu>,
) -> Result<(), OptimError>
where
    E: Float,
    O: DslOptimizer<E>,
    M: dfdx::nn::tensor_collection::TensorCollection<E, dfdx::tensor::Cpu>,
    dfdx::tensor::Cpu: dfdx::tensor_ops::Device<E>,
{
    crate::dfdx::master::update(opt, model, grads, &|_| true)
}
