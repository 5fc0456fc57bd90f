//! The dfdx step driver on `Cuda` (feature `cuda`): `opt.update(&mut model, &mut grads)` for
//! modules whose tensors live on a GPU: the master-copy driver of `super::master` on
//! [`CudaBackend`], through the `Cuda` handles of the shared walk.
//!
//! The backend is made once per device (the dfdx device of the first stepped gradient) and
//! kept in the optimizer's state with the device buffers; state held by another device or by
//! the host is moved over first.

use super::commit::publish;
use super::master::MasterDevice;
use super::walk::WalkDevice;
use crate::cuda::gpu::{CudaBackend, CudaFloat};
use crate::cuda::store::{take_store, Store};
use crate::error::OptimError;
use cudarc::driver::{CudaSlice, DeviceSlice};
use dfdx::optim::UnusedTensors;
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Cuda, Gradients, Tensor, UniqueId};
use dfdx::tensor_ops::Device;

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
    /// The read handle.
    fn as_cuda_tensor(&self) -> &(dyn CudaTensor<E> + 'static);
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
    fn as_cuda_tensor(&self) -> &(dyn CudaTensor<E> + 'static) {
        self
    }
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
            |g, t, m| {
                let slot = g
                    .get_or_alloc_mut(t)
                    .map_err(|e| device_error("gradient", e))?;
                std::mem::swap(E::slice_of(slot), m);
                Ok(())
            },
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

impl<E: CudaFloat> MasterDevice<E> for Cuda
where
    Cuda: Device<E>,
{
    type B = CudaBackend;
    fn store(
        state: &mut crate::OptState<E>,
        h: &dyn CudaTensor<E>,
        grads: &mut Gradients<E, Cuda>,
    ) -> Result<Store<E, CudaBackend>, OptimError> {
        let dev = h.grad_slot(grads)?.device();
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
    fn id(h: &dyn CudaTensor<E>) -> UniqueId {
        h.id()
    }
    fn read(h: &dyn CudaTensor<E>) -> Result<Vec<E>, OptimError> {
        h.read()
    }
    fn swap_grad(
        h: &dyn CudaTensor<E>,
        grads: &mut Gradients<E, Cuda>,
        buf: &mut CudaSlice<E>,
    ) -> Result<(), OptimError> {
        std::mem::swap(h.grad_slot(grads)?, buf);
        Ok(())
    }
    fn as_handle<'a>(h: &'a (dyn CudaTensorMut<E> + 'static)) -> &'a (dyn CudaTensor<E> + 'static) {
        h.as_cuda_tensor()
    }
    fn publish(
        h: &mut (dyn CudaTensorMut<E> + 'static),
        name: &str,
        grads: &mut Gradients<E, Cuda>,
        master: &mut CudaSlice<E>,
    ) -> Result<(), OptimError> {
        h.publish(name, grads, master)
    }
}
