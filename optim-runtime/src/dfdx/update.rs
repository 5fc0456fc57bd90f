//! The dfdx step driver: [`DfdxUpdate`].

use super::walk::{walk, walk_mut, Shared, Watch};
use crate::error::OptimError;
use crate::float::Float;
use crate::kernel::PARALLEL_THRESHOLD;
use crate::optimizer::{step_entries, DslOptimizer, Entry, LocalSync};
use crate::state::ParamSync;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::tensor::{Cpu, Gradients, UniqueId};
use dfdx::tensor_ops::Device;
use rayon::prelude::*;
use std::any::Any;
use std::collections::BTreeMap;

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
    /// kept in a host buffer (its master copy), updated there by the same fused kernels as
    /// [`update_slices`](DslOptimizer::update_slices), and copied back (`copy_from`): 8 extra
    /// bytes per `f32` parameter, 36 for AdamW instead of 28. A parameter is read from the
    /// model (`copy_into`, 8 more bytes) at its first step and whenever its tensor was written
    /// or replaced since the last step, which is detected exactly ([`ParamSync::Master`]);
    /// [`set_param_sync(ParamSync::Read)`](DslOptimizer::set_param_sync) reads every step.
    /// Both copies run across tensors in parallel, the copy back into a spare tensor that is
    /// then swapped into the model, so the optimizer holds two extra copies of the parameters.
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
    /// of the stages leaves the state half updated; the model keeps its values). The master
    /// copies of the tensors the failed step staged are dropped: the next step reads them.
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
    /// bias-corrected from its own first step, as on the slice path. A parameter left alone
    /// keeps its master copy ([`ParamSync::Master`]).
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
    /// tensors swapped. The swap writes the model in place, so every optimizer's master copies
    /// of those tensors ([`ParamSync::Master`]) are read again at its next step.
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

/// The dfdx driver's reusable host buffers, kept in the optimizer between steps (not part of
/// its state: not saved, and a clone starts without them).
///
/// dfdx 0.13 gives no mutable view of a tensor's storage, so a step copies each parameter to a
/// host buffer, updates it there and copies it back. The copy back goes into a *spare* tensor
/// (a handle with the parameter's id and a storage of its own, the tensor the model held
/// before the last step), which is then swapped into the model: so both copies run on rayon
/// across tensors, off dfdx's sequential walk. Costs one more copy of every parameter in
/// memory. In [`ParamSync::Master`] mode the host buffer is the master copy, and the read is
/// skipped while the tensor holds the storage the last step wrote ([`Kept::watch`]).
pub(crate) struct Staging<E> {
    /// What is kept of each parameter, by name.
    kept: BTreeMap<String, Kept<E>>,
    /// Parameters read from a model so far ([`crate::OptState::model_reads`]).
    pub(crate) reads: u64,
}

/// What the driver keeps of one parameter between steps.
struct Kept<E> {
    /// The host copy of the parameter.
    buf: Vec<E>,
    /// The spare tensor (a [`Shared`], type-erased so that this type needs no bound on `E`).
    spare: Option<Box<dyn Any + Send + Sync>>,
    /// The id of the tensor the last successful step wrote `buf` into, and a handle on the
    /// storage it wrote, while nothing has invalidated `buf` since (a failed step,
    /// [`Staging::forget_masters`]). While the model's tensor of that id still holds that
    /// storage ([`HostTensor::holds_watched`](super::walk::HostTensor::holds_watched)), `buf`
    /// holds exactly its values and the next step skips the read.
    watch: Option<(UniqueId, Watch)>,
}

impl<E> Default for Staging<E> {
    fn default() -> Self {
        Staging {
            kept: BTreeMap::new(),
            reads: 0,
        }
    }
}

impl<E> Staging<E> {
    /// Trusts no kept copy any more: the next step reads every parameter
    /// ([`OptState::resync_params`](crate::OptState::resync_params), a checkpoint load).
    pub(crate) fn forget_masters(&mut self) {
        for k in self.kept.values_mut() {
            k.watch = None;
        }
    }
}

impl<E> Clone for Staging<E> {
    fn clone(&self) -> Self {
        Staging::default() // buffers are recreated by the next step
    }
}

impl<E> PartialEq for Staging<E> {
    fn eq(&self, _: &Self) -> bool {
        true // reusable buffers, not state
    }
}

impl<E> std::fmt::Debug for Staging<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // a cache, not optimizer state (like `NameOrder`): no contents, so a state's `Debug`
        // is the same before and after a step that failed after staging
        f.write_str("Staging(cache)")
    }
}

/// One trainable tensor staged for the step.
struct Staged<E: Float> {
    name: String,
    shape: Vec<usize>,
    module: &'static str,
    /// The model tensor's id.
    id: UniqueId,
    /// Its gradient buffer, borrowed from `grads` (returned after the step).
    grad: Vec<E>,
    /// The host copy the step updates.
    buf: Vec<E>,
    /// The model's tensor, shared until it has been read into `buf` (`None` when the kept
    /// master copy is used instead).
    source: Option<Shared<E>>,
    /// The spare tensor the new values go to (see [`Staging`]).
    spare: Option<Shared<E>>,
    /// After a successful commit in `Master` mode, a handle on the storage `buf` was written
    /// into (see [`Kept::watch`]).
    watch: Option<Watch>,
}

/// Runs `f` on every staged tensor: across rayon's threads when the copies it makes move at
/// least [`PARALLEL_THRESHOLD`] elements in all (`elements`), on this thread otherwise (waking
/// the pool costs more than copying a small model). (`f` is a trait object so that rayon's
/// plumbing is compiled once per element type, not once per optimizer.)
fn each_tensor<E: Float>(
    staged: &mut [Staged<E>],
    elements: usize,
    f: &(dyn Fn(&mut Staged<E>) + Sync + Send),
) {
    if staged.len() > 1 && elements >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
        staged.par_iter_mut().for_each(f);
    } else {
        staged.iter_mut().for_each(f);
    }
}

/// Stages every trainable tensor (host copies read in parallel, or kept from the last step in
/// [`ParamSync::Master`] mode; gradients borrowed from `grads`), runs the shared step, then
/// returns every gradient buffer and, when the step succeeded, commits the new values: written
/// into the spare tensors in parallel, then swapped into the model (a spare that does not fit,
/// at the first steps or after the model changed, is replaced and the values are written into
/// the model's tensor directly).
///
/// Only the step itself depends on the optimizer type: staging and commit ([`stage`],
/// [`commit`]) are compiled once per model type.
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
    let state = opt.opt_state_mut();
    let master = state.param_sync == ParamSync::Master;
    let mut staging = std::mem::take(&mut state.staging);
    let (mut staged, walked) = stage(model, grads, has_grad, &mut staging, master);
    let result = walked.and_then(|()| {
        let entries: Vec<Entry<'_, E>> = staged
            .iter_mut()
            .map(|s| Entry {
                name: &s.name,
                shape: &s.shape,
                module: s.module,
                param: s.buf.as_mut_slice(),
                grad: &s.grad,
                narrow: None,
            })
            .collect();
        step_entries(opt, entries, &mut LocalSync, None)
    });
    let restored = commit(model, grads, &mut staged, result.is_ok(), master);
    keep(&mut staging, staged);
    opt.opt_state_mut().staging = staging;
    result?;
    restored
}

/// The first half of [`update`]: every stepped tensor of `model` with its gradient (taken from
/// `grads`) and its current values (read into its host buffer, in parallel, unless `master` and
/// the kept copy's watch shows the tensor unchanged: [`Kept::watch`]), in walk order, and the walk's
/// result (on an error, the tensors staged so far, whose gradients must still be returned).
/// Every staged tensor's watch is dropped here (so that the storage it shared is the model's
/// own again); only a successful commit sets a new one.
fn stage<E, M>(
    model: &mut M,
    grads: &mut Gradients<E, Cpu>,
    has_grad: &dyn Fn(&str) -> bool,
    staging: &mut Staging<E>,
    master: bool,
) -> (Vec<Staged<E>>, Result<(), OptimError>)
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    let mut staged: Vec<Staged<E>> = Vec::new();
    let walked = walk::<E, M>(model, |t, h| {
        if !t.trainable || !has_grad(t.name) {
            return Ok(());
        }
        let grad = h.take_grad(grads)?;
        let id = h.id();
        let (buf, spare, watch) = match staging.kept.get_mut(t.name) {
            Some(k) => (std::mem::take(&mut k.buf), k.spare.take(), k.watch.take()),
            None => (Vec::new(), None, None),
        };
        let spare = spare
            .and_then(|b| b.downcast::<Shared<E>>().ok())
            .map(|b| *b);
        let trusted = master
            && buf.len() == t.numel()
            && watch.is_some_and(|(of, w)| of == id && h.holds_watched(&w));
        staged.push(Staged {
            name: t.name.to_string(),
            shape: t.shape.to_vec(),
            module: t.module,
            id,
            grad,
            buf,
            source: (!trusted).then(|| h.share()),
            spare,
            watch: None,
        });
        Ok(())
    });
    // the reads, in parallel; the shared handles are dropped here, so that each model tensor's
    // storage is its own again before the commit
    let read = walked.is_ok();
    if read {
        staging.reads += staged.iter().filter(|s| s.source.is_some()).count() as u64;
    }
    let elements = (staged.iter().filter(|s| s.source.is_some()))
        .map(|s| s.grad.len())
        .sum();
    each_tensor(&mut staged, elements, &|s| {
        if let Some(src) = s.source.take() {
            if read {
                src.read(&mut s.buf);
            }
        }
    });
    (staged, walked)
}

/// The second half of [`update`]: returns every borrowed gradient (also after a failed step or
/// walk) and, when `ok`, commits the new values (in `master` mode watching each tensor written:
/// [`Kept::watch`]).
fn commit<E, M>(
    model: &mut M,
    grads: &mut Gradients<E, Cpu>,
    staged: &mut [Staged<E>],
    ok: bool,
    master: bool,
) -> Result<(), OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    if ok {
        let elements = staged.iter().map(|s| s.buf.len()).sum();
        each_tensor(staged, elements, &|s| {
            if let Some(sp) = s.spare.as_mut().filter(|sp| sp.len() == s.buf.len()) {
                sp.write(&s.buf);
            }
        });
    }
    let mut next = 0;
    walk_mut::<E, M>(model, |t, h| {
        // `staged` is in walk order: the next staged tensor is this one or a later one
        let Some(s) = staged
            .get_mut(next)
            .filter(|s| t.trainable && s.name == t.name)
        else {
            return Ok(()); // not stepped
        };
        next += 1;
        h.put_grad(grads, std::mem::take(&mut s.grad))?;
        if ok {
            let fits = |sp: &Shared<E>| sp.len() == s.buf.len() && sp.id() == s.id;
            let swapped = match s.spare.as_mut() {
                Some(sp) if fits(sp) => h.swap_with(&mut **sp),
                _ => false,
            };
            if !swapped {
                h.write(&s.buf);
                s.spare = Some(h.share()); // storage of its own from its first write
            }
            if master {
                s.watch = Some(h.watch());
            }
        }
        Ok(())
    })
}

/// Puts the staged tensors' buffers, spares and watches back into `staging` (a step in
/// [`ParamSync::Read`] mode leaves no watch, so that the first step after switching to `Master`
/// reads every parameter).
fn keep<E: Float>(staging: &mut Staging<E>, staged: Vec<Staged<E>>) {
    for s in staged {
        let spare = s.spare.map(|t| Box::new(t) as Box<dyn Any + Send + Sync>);
        let watch = s.watch.map(|w| (s.id, w));
        match staging.kept.get_mut(&s.name) {
            Some(k) => {
                k.buf = s.buf;
                k.spare = spare;
                k.watch = watch;
            }
            None => {
                let k = Kept {
                    buf: s.buf,
                    spare,
                    watch,
                };
                staging.kept.insert(s.name, k);
            }
        }
    }
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
