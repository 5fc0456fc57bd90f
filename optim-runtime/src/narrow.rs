//! 16-bit parameters (`bf16`, `f16`) updated in place by an optimizer over `E` (`f32` or
//! `f64`), without a full-tensor copy in `E`.
//!
//! The element type of a parameter and its gradient is a property of their streams in the loop
//! IR, as the storage of low-precision state is ([`crate::lowp`]): `optimizer!` prints every
//! loop of a rule that reads the parameter and gradient only inside its loops a second time,
//! as a `NarrowKernel` (hidden, generated code only) generic over the storage type (`bf16`,
//! `f16`), which stages `param` and `grad` per block of 256 on the stack, widened exactly to
//! `E` ([`crate::lowp::load_half_block`]: `f16` by F16C where the CPU has it), and rounds the
//! parameter's block to nearest, ties to even, after it
//! ([`crate::lowp::store_half_block`]), as it does for `f16` and 8-bit state. The executor runs those entry points on the bits, chunk by chunk as
//! any other parameter, with the same chunk of every state stream: no copy of the parameter or
//! gradient in `E`, not even per block. The arithmetic is the loop's own, so the result is bit
//! for bit the step on widened copies of the whole tensors, rounded once at the end
//! (reductions sum per chunk in the same order, stochastic rounding draws at each element's
//! index in the parameter). Memory traffic for AdamW with `f32` state: 2 (read the
//! parameter) + 2 (read the gradient) + 16 (read and write `m`, `v`) + 2 (write the
//! parameter) = 22 bytes per parameter, instead of 46 through `f32` copies.
//!
//! Compile cost: the 16-bit instances are reached only through
//! `DslOptimizer::narrow_kernels`, which only [`update_mixed_in_modules`] names, so they are
//! compiled only for optimizers stepped with 16-bit parameters.
//!
//! A rule whose matrix primitives, axis reductions or eigenbases read the raw parameter or
//! gradient as a whole tensor (`DslOptimizer::param_in_loops_only` is `false`: Adafactor's
//! `factored_second_moment(grad, …)`, an eigenbasis of the gradient, …) has no 16-bit entry
//! points: such a parameter must be staged whole by the caller (the candle backend does), and
//! [`update_mixed_in_modules`] refuses it. Muon's `orthogonalize` reads its momentum, a state
//! buffer, so Muon's loops run on the 16-bit bits.

use crate::kernel::{no_narrow, NarrowPick};
use crate::lowp::{Bits, Narrow, StateDtype};
use crate::optimizer::{step_entries, DslOptimizer, LocalSync, Meta, OptimizerConfig};
use crate::param::{ParamInfo, ParamSlice};
use crate::scratch::List;
use crate::{Float, OptimError};

/// One parameter of a step, whichever path it came from.
pub(crate) struct Entry<'a, E> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub module: &'a str,
    pub param: &'a mut [E],
    pub grad: &'a [E],
    /// A 16-bit parameter and gradient (`param` and `grad` are then empty).
    pub narrow: Option<Narrow<'a>>,
}

impl<'a, E> Entry<'a, E> {
    /// The entry of a parameter of type `E` in module `module`.
    pub(crate) fn of_slice(p: &'a mut ParamSlice<'_, E>, module: &'a str) -> Self {
        Entry {
            name: p.name,
            shape: p.shape,
            module,
            param: &mut *p.param,
            grad: p.grad,
            narrow: None,
        }
    }
}

/// [`OptimError::InvalidUse`] unless there is one module per parameter.
pub(crate) fn check_modules(modules: usize, params: usize) -> Result<(), OptimError> {
    if modules == params {
        return Ok(());
    }
    Err(OptimError::InvalidUse(format!(
        "{modules} modules for {params} parameters"
    )))
}

/// `DslOptimizer::narrow_kernels` of optimizer `O`.
pub(crate) type NarrowHook<E, O> = fn(
    &<<O as DslOptimizer<E>>::Config as OptimizerConfig>::Values,
    usize,
    &ParamInfo<'_>,
) -> NarrowPick<E>;

/// Whether every element of `xs` is finite. `x - x` is `0` for a finite `x` and NaN for NaN or
/// an infinity, so eight independent sums of it (which the compiler vectorises) are all zero
/// exactly when every element is finite.
#[allow(clippy::eq_op)] // `x - x` is the point
pub(crate) fn all_finite<E: Float>(xs: &[E]) -> bool {
    const LANES: usize = 8;
    let mut acc = [E::zero(); LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] += c[j] - c[j];
        }
    }
    chunks.remainder().iter().all(|x| x.is_finite()) && acc.iter().all(|a| *a == E::zero())
}

/// What validation sees of an entry, whichever storage (`E` or 16-bit) it has.
impl<'a, E: Float> From<&Entry<'a, E>> for Meta<'a> {
    fn from(e: &Entry<'a, E>) -> Self {
        let (param_len, grad_len) = e.lens();
        Meta {
            info: ParamInfo {
                name: e.name,
                shape: e.shape,
                module: e.module,
            },
            param_len,
            grad_len,
        }
    }
}

impl<E: Float> Entry<'_, E> {
    /// Elements of the parameter and of the gradient.
    pub(crate) fn lens(&self) -> (usize, usize) {
        match &self.narrow {
            Some(w) => (w.param.len(), w.grad.len()),
            None => (self.param.len(), self.grad.len()),
        }
    }

    /// Whether every element of the gradient is finite.
    pub(crate) fn grad_finite(&self) -> bool {
        match &self.narrow {
            Some(w) => crate::lowp::all_finite_bits(w.dtype, w.grad),
            None => all_finite(self.grad),
        }
    }
}

/// A parameter stored in 16 bits and its gradient, of the same type, for
/// [`update_mixed_in_modules`]: the raw bits (`half::bf16::to_bits` / `half::f16::to_bits`
/// of each element), row-major, `shape.iter().product()` elements each.
#[derive(Debug)]
pub struct NarrowSlice<'a> {
    /// Unique name; the optimizer's state for this parameter is keyed by it.
    pub name: &'a str,
    /// Logical shape (as [`ParamSlice::shape`]).
    pub shape: &'a [usize],
    /// The storage type of both `param` and `grad`.
    pub dtype: StateDtype,
    /// The parameter's bits, updated in place (rounded to nearest, ties to even).
    pub param: &'a mut [Bits],
    /// The gradient's bits (read only).
    pub grad: &'a [Bits],
}

/// One parameter of a step of [`update_mixed_in_modules`]: of the optimizer's element type, or
/// stored in 16 bits.
#[derive(Debug)]
pub enum MixedSlice<'a, E> {
    /// Of type `E` (as [`DslOptimizer::update_slices`] takes it).
    Same(ParamSlice<'a, E>),
    /// `bf16` or `f16`, computed in `E`.
    Narrow(NarrowSlice<'a>),
}

/// [`DslOptimizer::update_slices_in_modules`] over parameters some of which are stored in 16
/// bits (see the [module docs](self)): `modules[i]` is `params[i]`'s module. The result is bit
/// for bit that of widening every 16-bit parameter and gradient to `E`, stepping, and rounding
/// the parameters back to nearest, ties to even; the memory traffic is that of the 16-bit
/// data. Global reductions sum over the parameters in the order given, as the slice path does.
///
/// # Errors
/// As [`DslOptimizer::update_slices`]; [`OptimError::InvalidUse`] when `modules` and `params`
/// differ in length, when a 16-bit parameter's rule reads the raw parameter or gradient as a
/// whole tensor (`DslOptimizer::param_in_loops_only` is `false`: widen it and pass it as
/// [`MixedSlice::Same`]), or when metrics are on (they copy parameters in `E`) and a parameter
/// is 16-bit. Nothing is modified on error.
pub fn update_mixed_in_modules<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    params: &mut [MixedSlice<'_, E>],
    modules: &[&str],
) -> Result<(), OptimError> {
    check_modules(modules.len(), params.len())?;
    let mut entries: Vec<Entry<'_, E>> = opt.opt_state_mut().scratch.take(List::Entries);
    entries.extend(params.iter_mut().zip(modules).map(|(p, module)| match p {
        MixedSlice::Same(p) => Entry::of_slice(p, module),
        MixedSlice::Narrow(p) => Entry {
            name: p.name,
            shape: p.shape,
            module,
            param: &mut [],
            grad: &[],
            narrow: Some(Narrow {
                dtype: p.dtype,
                param: &mut *p.param,
                grad: p.grad,
            }),
        },
    }));
    step_entries(opt, entries, &mut LocalSync, Some(O::narrow_kernels))
}

/// The step's checks of its 16-bit parameters (none: `Ok`): each one's rule (`rules[i]`) reads
/// them only inside its loops and has 16-bit entry points for them (`kernels`, under the
/// step's flag `values`), and metrics are off.
///
/// # Errors
/// [`OptimError::InvalidUse`] naming the parameter.
pub(crate) fn check<E: Float, O: DslOptimizer<E>>(
    opt: &O,
    entries: &[Entry<'_, E>],
    rules: &[usize],
    values: &<O::Config as OptimizerConfig>::Values,
    kernels: Option<NarrowHook<E, O>>,
) -> Result<(), OptimError> {
    for (e, &rule) in entries.iter().zip(rules) {
        let Some(w) = &e.narrow else { continue };
        let refuse = |why: &str| {
            Err(OptimError::InvalidUse(format!(
                "`{}` is stored as {} and {why}; pass it widened to {}",
                e.name,
                w.dtype.name(),
                E::NAME
            )))
        };
        if opt.opt_state().metrics.enabled {
            return refuse("metrics are on (they copy the parameters)");
        }
        let info = ParamInfo {
            name: e.name,
            shape: e.shape,
            module: e.module,
        };
        if !O::param_in_loops_only(rule, &info) {
            return refuse("its rule reads the raw parameter or gradient as a whole tensor");
        }
        // every rule has a loop (it writes the parameter); a hand-written optimizer that
        // claims `param_in_loops_only` without `narrow_kernels` has no entry point for it
        let pick = kernels.map_or(no_narrow::<E> as NarrowPick<E>, |f| f(values, rule, &info));
        if pick(0, w.dtype, false).is_none() {
            return refuse("its optimizer has no 16-bit entry points for its rule's loops");
        }
    }
    Ok(())
}
