//! The device step of a dfdx module, with a **master copy** of each parameter on the device
//! (design (b) of issue 12, `docs/gpu.md`), written once over [`MasterDevice`]: `Cuda` with
//! [`CudaBackend`](crate::cuda::gpu::CudaBackend) (feature `cuda`, `super::cuda`), and `Cpu`
//! with the emulated device [`HostBackend`] (so that the whole driver — gradients lent and
//! handed back, master kept or re-read, publish — is tested on any machine against the CPU
//! driver, see [`crate::cuda::emulate::update_emulated_model`]).
//!
//! 1. One walk over the model (`super::walk`) takes each stepped tensor's gradient buffer out
//!    of `grads` (swapped for an empty one, no copy) and finds the optimizer's device copy of
//!    the tensor's values: kept from the last step when it mirrors the same dfdx tensor (same
//!    id, same length: [`keeps_master`]), else read from the tensor (one host round trip: the
//!    *re-sync*; [`OptState::resync_params`](crate::OptState::resync_params) forces it for every
//!    parameter after the user wrote parameters in place).
//! 2. The device step driver (`crate::cuda::step`) runs the generated stages with the masters
//!    as parameters: state stays on the device, one multi-tensor launch per loop, per-step
//!    scalars packed once per launch, host round trips only for the reductions a plan needs.
//! 3. A second walk hands every gradient back and, when the step succeeded, publishes each
//!    master into its tensor ([`super::commit::publish`]: exact, keeps the id). After a failed
//!    step the masters are dropped (the model still holds the values from before the step; the
//!    next step reads them again).

use super::walk::{walk_mut_on, walk_on, HostTensor, HostTensorMut, TensorInfo, WalkDevice};
use crate::cuda::backend::Backend;
use crate::cuda::host::HostBackend;
use crate::cuda::step::{step_device, DevEntry};
use crate::cuda::store::{take_store, Store};
use crate::error::OptimError;
use crate::optimizer::{DslOptimizer, LocalSync};
use crate::{Float, OptState};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::tensor::{Cpu, Gradients, UniqueId};
use dfdx::tensor_ops::Device;
use std::collections::HashMap;

/// What the master-copy driver needs of a dfdx device and its tensor handles.
pub(crate) trait MasterDevice<E: Float>: WalkDevice<E> {
    /// The step driver's backend on this device.
    type B: Backend<E>;
    /// The optimizer's store on the device of `h`'s gradient (made on the first stepped
    /// tensor; state held elsewhere is moved over).
    fn store(
        state: &mut OptState<E>,
        h: &Self::Handle,
        grads: &mut Gradients<E, Self>,
    ) -> Result<Store<E, Self::B>, OptimError>;
    /// dfdx's id of the tensor.
    fn id(h: &Self::Handle) -> UniqueId;
    /// The tensor's values on the host.
    fn read(h: &Self::Handle) -> Result<Vec<E>, OptimError>;
    /// Swaps `buf` with the tensor's gradient buffer in `grads` (allocated, zero, when missing).
    fn swap_grad(
        h: &Self::Handle,
        grads: &mut Gradients<E, Self>,
        buf: &mut <Self::B as Backend<E>>::Buf,
    ) -> Result<(), OptimError>;
    /// The read handle of a write handle.
    fn as_handle(h: &Self::HandleMut) -> &Self::Handle;
    /// Writes `master` into the tensor ([`super::commit::publish`]).
    fn publish(
        h: &mut Self::HandleMut,
        name: &str,
        grads: &mut Gradients<E, Self>,
        master: &mut <Self::B as Backend<E>>::Buf,
    ) -> Result<(), OptimError>;
}

/// Whether a kept master still mirrors the tensor: it was published into the tensor of this id
/// (a replaced tensor has a new id) and has its length.
pub(crate) fn keeps_master(
    kept_id: Option<UniqueId>,
    id: UniqueId,
    len: usize,
    numel: usize,
) -> bool {
    kept_id == Some(id) && len == numel
}

/// One stepped tensor between the two walks.
struct Taken<Buf> {
    name: String,
    shape: Vec<usize>,
    module: &'static str,
    id: UniqueId,
    grad: Buf,
    master: Buf,
}

/// Takes `t`'s gradient out of `grads` and finds (or reads) its master copy.
fn take<E: Float, D: MasterDevice<E>>(
    t: &TensorInfo<'_>,
    h: &D::Handle,
    grads: &mut Gradients<E, D>,
    store: &mut Store<E, D::B>,
) -> Result<Taken<<D::B as Backend<E>>::Buf>, OptimError> {
    let id = D::id(h);
    let numel = t.numel();
    let stored = store.params.entry(t.name.to_string()).or_default();
    let kept_id = stored.master_id.take();
    let kept = stored
        .master
        .take()
        .filter(|m| keeps_master(kept_id, id, D::B::len(m), numel));
    let master = match kept {
        Some(m) => m,
        None => store.backend.upload(&D::read(h)?)?,
    };
    let mut grad = store.backend.empty()?;
    D::swap_grad(h, grads, &mut grad)?;
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
/// As the CPU driver; [`OptimError::Device`] for a device failure.
pub(crate) fn update<E, D, O, M>(
    opt: &mut O,
    model: &mut M,
    grads: &mut Gradients<E, D>,
    has_grad: &dyn Fn(&str) -> bool,
) -> Result<(), OptimError>
where
    E: Float,
    D: MasterDevice<E>,
    O: DslOptimizer<E>,
    M: TensorCollection<E, D>,
{
    type Buf<E, D> = <<D as MasterDevice<E>>::B as Backend<E>>::Buf;
    let mut store: Option<Store<E, D::B>> = None;
    let mut taken: Vec<Taken<Buf<E, D>>> = Vec::new();
    let walked = walk_on::<E, D, M>(model, |t, h| {
        if !t.trainable || !has_grad(t.name) {
            return Ok(());
        }
        let s = match store.as_mut() {
            Some(s) => s,
            None => store.insert(D::store(opt.opt_state_mut(), h, grads)?),
        };
        taken.push(take::<E, D>(t, h, grads, s)?);
        Ok(())
    });
    let Some(mut store) = store else {
        return walked; // nothing stepped (or the store could not be made)
    };

    let result = walked.and_then(|()| {
        let mut bufs: Vec<(Buf<E, D>, Buf<E, D>)> = Vec::with_capacity(taken.len());
        for t in taken.iter_mut() {
            let p = std::mem::replace(&mut t.master, store.backend.empty()?);
            let g = std::mem::replace(&mut t.grad, store.backend.empty()?);
            bufs.push((p, g));
        }
        let mut entries: Vec<DevEntry<'_, Buf<E, D>>> = taken
            .iter()
            .zip(bufs)
            .map(|(t, (param, grad))| DevEntry {
                name: &t.name,
                shape: &t.shape,
                module: t.module,
                param,
                grad,
            })
            .collect();
        let r = step_device(opt, &mut store, &mut entries, &mut LocalSync);
        let back: Vec<(Buf<E, D>, Buf<E, D>)> =
            entries.into_iter().map(|e| (e.param, e.grad)).collect();
        for (t, (p, g)) in taken.iter_mut().zip(back) {
            t.master = p;
            t.grad = g;
        }
        r
    });

    // hand every gradient back; publish the masters after a successful step
    let commit = result.is_ok();
    let mut by_name: HashMap<String, Taken<Buf<E, D>>> =
        taken.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut published: Vec<(String, UniqueId, Buf<E, D>)> = Vec::new();
    let restored = walk_mut_on::<E, D, M>(model, |t, h| {
        let Some(mut x) = by_name.remove(t.name) else {
            return Ok(());
        };
        D::swap_grad(D::as_handle(h), grads, &mut x.grad)?;
        if commit {
            D::publish(h, t.name, grads, &mut x.master)?;
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

impl<E: Float> MasterDevice<E> for Cpu
where
    Cpu: Device<E>,
{
    type B = HostBackend;
    fn store(
        state: &mut OptState<E>,
        _: &dyn HostTensor<E>,
        _: &mut Gradients<E, Cpu>,
    ) -> Result<Store<E, HostBackend>, OptimError> {
        let mut s = take_store(state, HostBackend::new(), |_| true)?;
        s.backend = HostBackend::new();
        Ok(s)
    }
    fn id(h: &dyn HostTensor<E>) -> UniqueId {
        h.id()
    }
    fn read(h: &dyn HostTensor<E>) -> Result<Vec<E>, OptimError> {
        let mut v = Vec::new();
        h.read(&mut v);
        Ok(v)
    }
    fn swap_grad(
        h: &dyn HostTensor<E>,
        grads: &mut Gradients<E, Cpu>,
        buf: &mut Vec<E>,
    ) -> Result<(), OptimError> {
        let g = h.take_grad(grads)?;
        h.put_grad(grads, std::mem::replace(buf, g))
    }
    fn as_handle<'a>(h: &'a (dyn HostTensorMut<E> + 'static)) -> &'a (dyn HostTensor<E> + 'static) {
        h.as_host_tensor()
    }
    fn publish(
        h: &mut (dyn HostTensorMut<E> + 'static),
        name: &str,
        grads: &mut Gradients<E, Cpu>,
        master: &mut Vec<E>,
    ) -> Result<(), OptimError> {
        h.publish(name, grads, master)
    }
}
