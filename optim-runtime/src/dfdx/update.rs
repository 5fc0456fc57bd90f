//! The dfdx step driver: [`DfdxUpdate`].

use super::walk::{walk, walk_mut};
use crate::error::OptimError;
use crate::float::Float;
use crate::optimizer::{step_entries, DslOptimizer, Entry, LocalSync};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::tensor::{Cpu, Gradients};
use dfdx::tensor_ops::Device;

/// A dfdx device a module can be stepped on: `Cpu`, and `Cuda` with feature `cuda` (`f32`,
/// `f64`). The device of [`DfdxUpdate::update`]'s `grads` picks the driver.
pub trait ModelDevice<E: Float>: Device<E> {
    /// The step driver for this device ([`DfdxUpdate::update_where`]).
    ///
    /// # Errors
    /// As [`DfdxUpdate::update`].
    #[doc(hidden)]
    fn step_model<O: DslOptimizer<E>, M: TensorCollection<E, Self>>(
        opt: &mut O,
        model: &mut M,
        grads: &mut Gradients<E, Self>,
        has_grad: &dyn Fn(&str) -> bool,
    ) -> Result<(), OptimError>;
}

impl<E: Float> ModelDevice<E> for Cpu
where
    Cpu: Device<E>,
{
    fn step_model<O: DslOptimizer<E>, M: TensorCollection<E, Cpu>>(
        opt: &mut O,
        model: &mut M,
        grads: &mut Gradients<E, Cpu>,
        has_grad: &dyn Fn(&str) -> bool,
    ) -> Result<(), OptimError> {
        update(opt, model, grads, has_grad)
    }
}

#[cfg(feature = "cuda")]
impl<E: crate::cuda::gpu::CudaFloat> ModelDevice<E> for dfdx::tensor::Cuda
where
    dfdx::tensor::Cuda: Device<E>,
{
    fn step_model<O: DslOptimizer<E>, M: TensorCollection<E, Self>>(
        opt: &mut O,
        model: &mut M,
        grads: &mut Gradients<E, Self>,
        has_grad: &dyn Fn(&str) -> bool,
    ) -> Result<(), OptimError> {
        super::master::update(opt, model, grads, has_grad)
    }
}

/// Stepping a dfdx module on `Cpu` (or `Cuda`, feature `cuda`) with any [`DslOptimizer`].
/// Implemented for every optimizer (blanket impl); bring it into scope with
/// `use optim_dsl::prelude::*`.
pub trait DfdxUpdate<E: Float>: DslOptimizer<E> {
    /// One step over every trainable tensor of a dfdx module on `Cpu` or `Cuda` (tensors whose
    /// `TensorOptions::do_gradient_update` is false, such as BatchNorm running statistics, are
    /// left alone). State is keyed by dfdx's dotted tensor path (`"0.weight"`), and rules see
    /// the type name of the module holding each tensor (`module == "Linear"`).
    ///
    /// On `Cpu`: dfdx 0.13 gives no mutable view of a tensor's storage, so each parameter is
    /// copied to a reusable host buffer, updated there by the same fused kernels as
    /// [`update_slices`](DslOptimizer::update_slices), and copied back (`copy_into`/`copy_from`:
    /// 16 extra bytes per `f32` parameter).
    ///
    /// On `Cuda` (feature `cuda`): the generated CUDA stages run on the GPU, state stays there,
    /// and the optimizer keeps a device copy of each parameter that it publishes into the
    /// tensor after each step (exactly, keeping the tensor's id; `docs/gpu.md`). After writing
    /// parameters in place between steps (loading weights, `copy_from`, an EMA copy), call
    /// [`OptState::resync_params`](crate::OptState::resync_params).
    ///
    /// A parameter with no gradient in `grads` gets a zero gradient (dfdx allocates it).
    /// `grads` is taken `&mut` only to borrow its buffers without copying; its values are
    /// unchanged on return.
    ///
    /// # Errors
    /// As [`update_slices`](DslOptimizer::update_slices); [`OptimError::Device`] if dfdx or
    /// the GPU fails. Nothing is modified on error (on `Cuda`, a device failure in the middle
    /// of the stages leaves the state half updated; the model keeps its values).
    fn update<M, D>(&mut self, model: &mut M, grads: &mut Gradients<E, D>) -> Result<(), OptimError>
    where
        D: ModelDevice<E>,
        M: TensorCollection<E, D>,
    {
        D::step_model(self, model, grads, &|_| true)
    }

    /// [`update`](Self::update) on the trainable tensors whose name `has_grad` accepts; the
    /// others are left alone — value, state and step count — as PyTorch skips a parameter whose
    /// `.grad` is `None`. dfdx's `alloc_grads` gives every parameter a (zero) gradient, so it
    /// cannot tell which parameters had none this step: say it here (a frozen embedding, the
    /// expert layers a batch did not route to). A parameter first updated at a later step is
    /// bias-corrected from its own first step, as on the slice path.
    ///
    /// # Errors
    /// As [`update`](Self::update). Nothing is modified on error.
    fn update_where<M, D>(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<E, D>,
        has_grad: impl Fn(&str) -> bool,
    ) -> Result<(), OptimError>
    where
        D: ModelDevice<E>,
        M: TensorCollection<E, D>,
    {
        D::step_model(self, model, grads, &has_grad)
    }

    /// Swaps the values of every trainable tensor of `model` with its state buffer `slot`
    /// (parameters without that buffer, or whose buffer has another length, are left alone).
    /// Calling it twice restores both: use it to evaluate with an averaged iterate, e.g.
    /// Schedule-Free's `"x"`, then swap back before the next step. Returns the number of
    /// tensors swapped.
    ///
    /// # Errors
    /// [`OptimError::Device`] if dfdx fails while walking the model.
    fn swap_state_with_model<M>(&mut self, model: &mut M, slot: &str) -> Result<usize, OptimError>
    where
        M: TensorCollection<E, Cpu>,
        Cpu: Device<E>,
    {
        swap_state(self, model, slot)
    }
}

impl<E: Float, O: DslOptimizer<E>> DfdxUpdate<E> for O {}

/// One trainable tensor staged for the step: its gradient buffer is borrowed from `grads`.
struct Staged<E> {
    name: String,
    shape: Vec<usize>,
    module: &'static str,
    grad: Vec<E>,
}

/// Stages every trainable tensor in the optimizer's reusable host buffer (`OptState::scratch`)
/// and borrows its gradient, runs the shared step, then returns every gradient buffer and, when
/// the step succeeded, copies the new values back.
fn update<E, O, M>(
    opt: &mut O,
    model: &mut M,
    grads: &mut Gradients<E, Cpu>,
    has_grad: &dyn Fn(&str) -> bool,
) -> Result<(), OptimError>
where
    E: Float,
    O: DslOptimizer<E>,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    let mut scratch = std::mem::take(&mut opt.opt_state_mut().scratch);
    let mut staged: Vec<Staged<E>> = Vec::new();
    let walked = walk::<E, M>(model, |t, h| {
        if !t.trainable || !has_grad(t.name) {
            return Ok(());
        }
        h.read(scratch.entry(t.name.to_string()).or_default());
        let grad = h.take_grad(grads)?;
        staged.push(Staged {
            name: t.name.to_string(),
            shape: t.shape.to_vec(),
            module: t.module,
            grad,
        });
        Ok(())
    });

    let result = walked.and_then(|()| {
        // Move the staged buffers out of `scratch` so that `step_entries` can borrow them
        // mutably alongside the optimizer.
        let mut bufs: Vec<(String, Vec<E>)> = staged
            .iter()
            .map(|s| (s.name.clone(), scratch.remove(&s.name).unwrap_or_default()))
            .collect();
        let entries: Vec<Entry<'_, E>> = staged
            .iter()
            .zip(bufs.iter_mut())
            .map(|(s, (_, buf))| Entry {
                name: &s.name,
                shape: &s.shape,
                module: s.module,
                param: buf.as_mut_slice(),
                grad: &s.grad,
            })
            .collect();
        let r = step_entries(opt, entries, &mut LocalSync);
        scratch.extend(bufs);
        r
    });

    // Return every borrowed gradient (also after a failed step or walk), then commit.
    let commit = result.is_ok();
    let mut borrowed: std::collections::HashMap<String, Vec<E>> =
        staged.into_iter().map(|s| (s.name, s.grad)).collect();
    let restored = walk_mut::<E, M>(model, |t, h| {
        if !t.trainable {
            return Ok(());
        }
        let Some(grad) = borrowed.remove(t.name) else {
            return Ok(()); // not stepped
        };
        h.put_grad(grads, grad)?;
        if commit {
            if let Some(buf) = scratch.get(t.name) {
                h.write(buf);
            }
        }
        Ok(())
    });
    opt.opt_state_mut().scratch = scratch;
    result?;
    restored
}

/// Swaps each trainable tensor with its state buffer `slot` (see
/// [`DfdxUpdate::swap_state_with_model`]).
fn swap_state<E, O, M>(opt: &mut O, model: &mut M, slot: &str) -> Result<usize, OptimError>
where
    E: Float,
    O: DslOptimizer<E>,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    let mut buffers: std::collections::HashMap<&str, &mut Vec<E>> = opt
        .opt_state_mut()
        .params
        .iter_mut()
        .filter_map(|(name, ps)| {
            let k = O::state_names(ps.rule).iter().position(|s| *s == slot)?;
            Some((name.as_str(), ps.buffers.get_mut(k)?))
        })
        .collect();
    let mut swapped = 0;
    let mut current = Vec::new();
    walk_mut::<E, M>(model, |t, h| {
        if !t.trainable {
            return Ok(());
        }
        if let Some(buf) = buffers.get_mut(t.name) {
            if buf.len() == t.numel() {
                h.read(&mut current);
                h.write(buf);
                std::mem::swap(&mut current, *buf);
                swapped += 1;
            }
        }
        Ok(())
    })?;
    Ok(swapped)
}
