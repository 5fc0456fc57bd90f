//! The dfdx step driver on `Cuda` (feature `cuda`): `opt.update(&mut model, &mut grads)` for
//! modules whose tensors live on a GPU.
//!
//! Design (b) of issue 12, a **master copy** on the device (`docs/gpu.md` says why):
//!
//! 1. One walk over the model (the walk of the CPU driver, `super::walk`, on `Cuda`) takes
//!    each stepped tensor's gradient buffer out of `grads` (swapped for an empty one, no copy)
//!    and finds the optimizer's device copy of the tensor's values: kept from the last step
//!    when it mirrors the same dfdx tensor (same id, same length), else read from the tensor
//!    (one host round trip: the *re-sync*; `OptState::resync_params` forces it for every
//!    parameter after the user wrote parameters in place).
//! 2. The device step driver (`crate::cuda::step`) runs the generated stages on
//!    [`CudaBackend`] with the masters as parameters: state stays on the device, one
//!    multi-tensor launch per loop, per-step scalars packed once per launch, host round trips
//!    only for the reductions a plan needs.
//! 3. A second walk hands every gradient back and, when the step succeeded, publishes each
//!    master into its tensor ([`super::commit::publish`]: exact, keeps the id). After a failed
//!    step the masters are dropped (the model still holds the values before the step; the next
//!    step re-reads them).
//!
//! The backend is made once per device (the dfdx device of the first stepped gradient) and
//! kept in the optimizer's state with the device buffers; state held by another device or by
//! the host is moved over first.

use super::commit::publish;
use super::walk::{walk_mut_on, walk_on, TensorInfo, WalkDevice};
use crate::cuda::gpu::{CudaBackend, CudaFloat};
use crate::cuda::step::{step_device, DevEntry};
use crate::cuda::store::{take_store, Store};
use crate::error::OptimError;
use crate::optimizer::{DslOptimizer, LocalSync};
use cudarc::driver::{CudaSlice, DeviceSlice};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::optim::UnusedTensors;
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Cuda, Gradients, Tensor, UniqueId};
use dfdx::tensor_ops::Device;
use std::collections::HashMap;

fn device_error(what: &str, e: impl core::fmt::Debug) -> OptimError {
    OptimError::Device(format!("{what}: {e:?}"))
}

/// Read access to one tensor on `Cuda`, whatever its shape.
pub(crate) trait CudaTensor<E: CudaFloat> {
    /// dfdx's id of the tensor (the key of its gradient).
    fn id(&self) -> UniqueId;
    /// The tensor's values on the host (waits for the device).
    fn read(&self) -> Result<Vec<E>, OptimError>;
    /// The tensor's gradient buffer in `grads` (allocated, zero, when missing).
    fn grad_slot<'g>(
        &self,
        grads: &'g mut Gradients<E, Cuda>,
    ) -> Result<&'g mut CudaSlice<E>, OptimError>;
}

/// Write access to one tensor on `Cuda`.
pub(crate) trait CudaTensorMut<E: CudaFloat>: CudaTensor<E> {
    /// Writes `master` into the tensor ([`publish`]).
    fn publish(
        &mut self,
        name: &str,
        grads: &mut Gradients<E, Cuda>,
        master: &mut CudaSlice<E>,
    ) -> Result<(), OptimError>;
}

impl<S: Shape, E: CudaFloat> CudaTensor<E> for Tensor<S, E, Cuda>
where
    Cuda: Device<E>,
{
    fn id(&self) -> UniqueId {
        // dfdx 0.13 exposes a tensor's id only through `UnusedTensors::add`
        let mut ids = UnusedTensors::default();
        ids.add(self);
        ids.ids[0]
    }
    fn read(&self) -> Result<Vec<E>, OptimError> {
        let mut out = vec![E::zero(); self.shape().num_elements()];
        self.copy_into(&mut out);
        Ok(out)
    }
    fn grad_slot<'g>(
        &self,
        grads: &'g mut Gradients<E, Cuda>,
    ) -> Result<&'g mut CudaSlice<E>, OptimError> {
        let g = grads
            .get_or_alloc_mut(self)
            .map_err(|e| device_error("gradient", e))?;
        Ok(E::slice_of(g))
    }
}

impl<S: Shape, E: CudaFloat> CudaTensorMut<E> for Tensor<S, E, Cuda>
where
    Cuda: Device<E>,
{
    fn publish(
        &mut self,
        name: &str,
        grads: &mut Gradients<E, Cuda>,
        master: &mut CudaSlice<E>,
    ) -> Result<(), OptimError> {
        publish(
            name,
            self,
            grads,
            master,
            |m: &CudaSlice<E>| m.len(),
            |slot, m| std::mem::swap(E::slice_of(slot), m),
        )
    }
}

impl<E: CudaFloat> WalkDevice<E> for Cuda
where
    Cuda: Device<E>,
{
    type Handle = dyn CudaTensor<E>;
    type HandleMut = dyn CudaTensorMut<E>;
    fn handle<S: Shape>(t: &Tensor<S, E, Cuda>) -> &(dyn CudaTensor<E> + 'static) {
        t
    }
    fn handle_mut<S: Shape>(t: &mut Tensor<S, E, Cuda>) -> &mut (dyn CudaTensorMut<E> + 'static) {
        t
    }
}

/// One stepped tensor between the two walks.
struct Taken<E> {
    name: String,
    shape: Vec<usize>,
    module: &'static str,
    id: UniqueId,
    grad: CudaSlice<E>,
    master: CudaSlice<E>,
}

/// The store for the device of `slot`, made on the first stepped tensor.
fn store_for<E: CudaFloat>(
    state: &mut crate::OptState<E>,
    slot: &CudaSlice<E>,
) -> Result<Store<E, CudaBackend>, OptimError> {
    let dev = slot.device();
    if let Some(s) = state.device.0.as_mut() {
        if let Some(s) = s.as_any_mut().downcast_mut::<Store<E, CudaBackend>>() {
            if s.backend.is_on(&dev) {
                let backend = s.backend.clone();
                return take_store(state, backend, |_| true);
            }
        }
    }
    let backend = CudaBackend::new(dev.clone())?;
    take_store(state, backend, move |b| b.is_on(&dev))
}

/// Takes `t`'s gradient out of `grads` and finds (or reads) its master copy.
fn take<E: CudaFloat>(
    t: &TensorInfo<'_>,
    h: &dyn CudaTensor<E>,
    grads: &mut Gradients<E, Cuda>,
    store: &mut Store<E, CudaBackend>,
) -> Result<Taken<E>, OptimError> {
    let id = h.id();
    let numel = t.numel();
    let stored = store.params.entry(t.name.to_string()).or_default();
    let kept = match stored.master.take() {
        Some(m) if stored.master_id == Some(id) && m.len() == numel => Some(m),
        _ => None,
    };
    stored.master_id = None;
    let dev = store.backend.device().clone();
    let master = match kept {
        Some(m) => m,
        None if numel == 0 => dev.null().map_err(|e| device_error("empty buffer", e))?,
        None => dev
            .htod_sync_copy(&h.read()?)
            .map_err(|e| device_error("upload parameter", e))?,
    };
    let empty = dev.null().map_err(|e| device_error("empty buffer", e))?;
    let grad = std::mem::replace(h.grad_slot(grads)?, empty);
    Ok(Taken {
        name: t.name.to_string(),
        shape: t.shape.to_vec(),
        module: t.module,
        id,
        grad,
        master,
    })
}

/// One step of `opt` on every trainable tensor of `model` that `has_grad` accepts (see the
/// [module docs](self)). Every gradient is handed back to `grads`, also on error.
///
/// # Errors
/// As the CPU driver; [`OptimError::Device`] for a driver, NVRTC or cuBLAS failure.
pub(crate) fn update<E, O, M>(
    opt: &mut O,
    model: &mut M,
    grads: &mut Gradients<E, Cuda>,
    has_grad: &dyn Fn(&str) -> bool,
) -> Result<(), OptimError>
where
    E: CudaFloat,
    O: DslOptimizer<E>,
    M: TensorCollection<E, Cuda>,
    Cuda: Device<E>,
{
    let mut store: Option<Store<E, CudaBackend>> = None;
    let mut taken: Vec<Taken<E>> = Vec::new();
    let walked = walk_on::<E, Cuda, M>(model, |t, h| {
        if !t.trainable || !has_grad(t.name) {
            return Ok(());
        }
        let s = match store.as_mut() {
            Some(s) => s,
            None => {
                let slot = h.grad_slot(grads)?;
                store.insert(store_for(opt.opt_state_mut(), slot)?)
            }
        };
        taken.push(take(t, h, grads, s)?);
        Ok(())
    });
    let Some(mut store) = store else {
        return walked; // nothing stepped
    };

    let result = walked.and_then(|()| {
        let mut entries: Vec<DevEntry<'_, CudaSlice<E>>> = Vec::with_capacity(taken.len());
        let mut empties = Vec::with_capacity(taken.len());
        for _ in 0..taken.len() {
            let dev = store.backend.device();
            let null = || dev.null().map_err(|e| device_error("empty buffer", e));
            empties.push((null()?, null()?));
        }
        let bufs: Vec<(CudaSlice<E>, CudaSlice<E>)> = taken
            .iter_mut()
            .zip(empties)
            .map(|(t, (p, g))| {
                (
                    std::mem::replace(&mut t.master, p),
                    std::mem::replace(&mut t.grad, g),
                )
            })
            .collect();
        entries.extend(taken.iter().zip(bufs).map(|(t, (param, grad))| DevEntry {
            name: &t.name,
            shape: &t.shape,
            module: t.module,
            param,
            grad,
        }));
        let r = step_device(opt, &mut store, &mut entries, &mut LocalSync);
        let back: Vec<(CudaSlice<E>, CudaSlice<E>)> =
            entries.into_iter().map(|e| (e.param, e.grad)).collect();
        for (t, (p, g)) in taken.iter_mut().zip(back) {
            t.master = p;
            t.grad = g;
        }
        r
    });

    // hand every gradient back; publish the masters after a successful step
    let commit = result.is_ok();
    let mut by_name: HashMap<String, Taken<E>> =
        taken.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut published: Vec<(String, UniqueId, CudaSlice<E>)> = Vec::new();
    let restored = walk_mut_on::<E, Cuda, M>(model, |t, h| {
        let Some(mut x) = by_name.remove(t.name) else {
            return Ok(());
        };
        *h.grad_slot(grads)? = x.grad;
        if commit {
            h.publish(t.name, grads, &mut x.master)?;
            published.push((x.name, x.id, x.master));
        }
        Ok(())
    });
    for (name, id, master) in published {
        let stored = store.params.entry(name).or_default();
        stored.master = Some(master);
        stored.master_id = Some(id);
    }
    opt.opt_state_mut().device.0 = Some(Box::new(store));
    result?;
    restored
}
