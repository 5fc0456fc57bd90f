//! The dfdx methods of [`GradAccumulator`]: accumulating, writing back and stepping with a
//! model's gradients.

use super::walk::{shapes, with_each_grad};
use super::DfdxUpdate;
use crate::accumulate::GradAccumulator;
use crate::error::OptimError;
use crate::float::Float;
use crate::optimizer::DslOptimizer;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::tensor::{Cpu, Gradients};
use dfdx::tensor_ops::Device;

impl<E: Float> GradAccumulator<E>
where
    Cpu: Device<E>,
{
    /// Adds one micro-batch from dfdx gradients: the gradient of every trainable tensor of
    /// `model` (tensors with `do_gradient_update == false` are skipped), keyed by dfdx's dotted
    /// path as the optimizer's state is. A tensor with no gradient in `grads` contributes zero
    /// (dfdx allocates a zero buffer for it, as [`DfdxUpdate::update`] does). `grads` is taken
    /// `&mut` only to borrow its buffers; its values are unchanged.
    ///
    /// # Errors
    /// As [`add_slices`](Self::add_slices); [`OptimError::Device`] if dfdx fails.
    pub fn add_model<M: TensorCollection<E, Cpu>>(
        &mut self,
        model: &M,
        grads: &mut Gradients<E, Cpu>,
    ) -> Result<(), OptimError> {
        for (name, numel) in shapes(model, false)? {
            self.check_len(&name, numel)?;
        }
        with_each_grad(model, grads, |name, g| self.add_one(name, g))?;
        self.micro_batches += 1;
        Ok(())
    }

    /// Overwrites the gradient of every trainable tensor of `model` in `grads` with its
    /// average (for logging, or to step an optimizer yourself).
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when no micro-batch was added or a trainable tensor has no
    /// accumulated gradient; [`OptimError::ShapeMismatch`]; [`OptimError::Device`]. `grads` is
    /// unchanged on a validation error.
    pub fn write_mean_to_grads<M: TensorCollection<E, Cpu>>(
        &self,
        model: &M,
        grads: &mut Gradients<E, Cpu>,
    ) -> Result<(), OptimError> {
        self.check_nonempty()?;
        for (name, numel) in shapes(model, false)? {
            match self.sums.get(&name) {
                None => {
                    return Err(OptimError::InvalidUse(format!(
                        "no gradient was accumulated for parameter `{name}`"
                    )))
                }
                Some(s) => {
                    if s.len() != numel {
                        return Err(OptimError::ShapeMismatch {
                            param: name,
                            detail: format!(
                                "parameter has {numel} elements but its accumulated gradient has {}",
                                s.len()
                            ),
                        });
                    }
                }
            }
        }
        let k = E::of_f64(self.micro_batches as f64);
        with_each_grad(model, grads, |name, g| {
            if let Some(s) = self.sums.get(name) {
                for (d, &x) in g.iter_mut().zip(s) {
                    *d = x / k;
                }
            }
        })
    }

    /// [`write_mean_to_grads`](Self::write_mean_to_grads), then one
    /// [`DfdxUpdate::update`] of `model` with those gradients, then [`reset`](Self::reset).
    /// `grads` holds the averaged gradients afterwards.
    ///
    /// # Errors
    /// As [`write_mean_to_grads`](Self::write_mean_to_grads) and [`DfdxUpdate::update`]. On
    /// error the model and optimizer are unchanged and the accumulated gradients are kept.
    pub fn step_model<O, M>(
        &mut self,
        opt: &mut O,
        model: &mut M,
        grads: &mut Gradients<E, Cpu>,
    ) -> Result<(), OptimError>
    where
        O: DslOptimizer<E>,
        M: TensorCollection<E, Cpu>,
    {
        self.write_mean_to_grads(&*model, grads)?;
        opt.update(model, grads)?;
        self.reset();
        Ok(())
    }
}
