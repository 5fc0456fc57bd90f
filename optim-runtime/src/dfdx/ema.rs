//! The dfdx methods of [`WeightEma`]: averaging, copying and swapping the tensors of a model.

use super::walk::{shapes, walk, walk_mut};
use crate::ema::WeightEma;
use crate::error::OptimError;
use crate::float::Float;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::tensor::Cpu;
use dfdx::tensor_ops::Device;
use std::borrow::Cow;
use std::collections::BTreeMap;

impl<E: Float> WeightEma<E> {
    /// One update from every trainable tensor of a dfdx module on `Cpu` (and its buffers with
    /// [`with_buffers`](Self::with_buffers)), keyed by dfdx's dotted path like the optimizer's
    /// state. Reads each tensor once through one reusable host buffer.
    ///
    /// # Errors
    /// As [`update_slices`](Self::update_slices); [`OptimError::Device`] if dfdx fails.
    pub fn update_model<M>(&mut self, model: &M) -> Result<(), OptimError>
    where
        M: TensorCollection<E, Cpu>,
        Cpu: Device<E>,
    {
        self.check_not_swapped()?;
        let include_buffers = self.include_buffers;
        for (name, numel) in shapes(model, include_buffers)? {
            self.check_len(&name, numel)?;
        }
        let mut tmp = Vec::new();
        walk(model, |t, h| {
            if t.trainable || include_buffers {
                h.read(&mut tmp);
                self.update_one(t.name, &tmp);
            }
            Ok(())
        })?;
        self.updates += 1;
        Ok(())
    }

    /// Writes the averaged weights into the model (trainable tensors, plus buffers with
    /// [`with_buffers`](Self::with_buffers)). The model's own weights are lost; use
    /// [`swap_with_model`](Self::swap_with_model) to get them back after evaluation. An
    /// optimizer keeping master copies ([`ParamSync::Master`](crate::ParamSync::Master)) reads
    /// the written tensors again at its next step.
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] for a tensor with no average, [`OptimError::ShapeMismatch`]
    /// for a length that differs, [`OptimError::Device`]. Nothing is written on error.
    pub fn copy_to_model<M>(&self, model: &mut M) -> Result<(), OptimError>
    where
        M: TensorCollection<E, Cpu>,
        Cpu: Device<E>,
    {
        for (name, numel) in shapes(&*model, self.include_buffers)? {
            self.check_has(&name, numel)?;
        }
        write_model(model, self.include_buffers, &self.all_averaged(), None)
    }

    /// Swaps the averaged weights into the model, keeping the model's own weights inside the
    /// EMA; the next call swaps them back (evaluate in between). While swapped, `update_*` is
    /// refused. The averages themselves never change, so a checkpoint taken while swapped is
    /// the same as one taken before. Both swaps count as in-place writes, which optimizers
    /// keeping master copies ([`ParamSync::Master`](crate::ParamSync::Master)) detect.
    ///
    /// ```text
    /// ema.swap_with_model(&mut model)?;   // model now holds the averaged weights
    /// let acc = evaluate(&model);
    /// ema.swap_with_model(&mut model)?;   // training weights are back
    /// ```
    ///
    /// # Errors
    /// As [`copy_to_model`](Self::copy_to_model). Nothing is written on error.
    pub fn swap_with_model<M>(&mut self, model: &mut M) -> Result<(), OptimError>
    where
        M: TensorCollection<E, Cpu>,
        Cpu: Device<E>,
    {
        let covered = shapes(&*model, self.include_buffers)?;
        match self.swapped.take() {
            None => {
                for (name, numel) in &covered {
                    self.check_has(name, *numel)?;
                }
                let mut backup = BTreeMap::new();
                write_model(
                    model,
                    self.include_buffers,
                    &self.all_averaged(),
                    Some(&mut backup),
                )?;
                self.swapped = Some(backup);
                Ok(())
            }
            Some(backup) => {
                let bad = covered
                    .iter()
                    .find(|(name, numel)| backup.get(name).map(Vec::len) != Some(*numel));
                if let Some((name, _)) = bad {
                    let e = OptimError::InvalidUse(format!(
                        "tensor `{name}` was not swapped out by this EMA (or has another length)"
                    ));
                    self.swapped = Some(backup);
                    return Err(e);
                }
                let values = backup
                    .iter()
                    .map(|(k, v)| (k.clone(), Cow::Borrowed(v.as_slice())))
                    .collect();
                write_model(model, self.include_buffers, &values, None)
            }
        }
    }
}

/// Writes `values[name]` into every covered tensor (trainable, plus buffers when
/// `include_buffers`) that has an entry, saving the old contents into `backup` when given.
fn write_model<E, M>(
    model: &mut M,
    include_buffers: bool,
    values: &BTreeMap<String, Cow<'_, [E]>>,
    mut backup: Option<&mut BTreeMap<String, Vec<E>>>,
) -> Result<(), OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    walk_mut(model, |t, h| {
        if !(t.trainable || include_buffers) {
            return Ok(());
        }
        if let Some(v) = values.get(t.name) {
            if let Some(b) = backup.as_deref_mut() {
                let mut old = Vec::new();
                h.read(&mut old);
                b.insert(t.name.to_string(), old);
            }
            h.write(v);
        }
        Ok(())
    })
}
