//! 16-bit parameters (`bf16`, `f16`) updated in place by an optimizer over `E` (`f32` or
//! `f64`), without a full-tensor copy in `E`.
//!
//! The element type of a parameter and its gradient is a property of their streams, as the
//! storage of low-precision state is ([`crate::lowp`]): the step's executor runs each loop of
//! such a parameter block by block ([`STAGE`] elements, whole quantisation blocks): the
//! parameter's and the gradient's block is widened exactly into an array on the stack, the
//! generated loop runs on it (computing in `E`, with the same block of every state stream) and
//! the parameter's block is rounded back to nearest, ties to even, after the loop that writes
//! it. The loop itself is the same monomorphic kernel as for an `E` parameter, so the result is
//! bit for bit the step on widened copies of the whole tensors, rounded once at the end
//! (reductions continue their running sums across blocks, stochastic rounding draws at each
//! element's index in the parameter). Memory traffic for AdamW with `f32` state: 2 (read the
//! parameter) + 2 (read the gradient) + 16 (read and write `m`, `v`) + 2 (write the parameter)
//! = 22 bytes per parameter, instead of 46 through `f32` copies.
//!
//! A rule whose matrix primitives, axis reductions or eigenbases read the raw parameter or
//! gradient as a whole tensor (`DslOptimizer::param_in_loops_only` is `false`: Adafactor's
//! `factored_second_moment(grad, …)`, an eigenbasis of the gradient, …) cannot run on blocks:
//! such a parameter must be staged whole by the caller (the candle backend does), and
//! [`update_mixed_in_modules`] refuses it. Muon's `orthogonalize` reads its momentum, a state
//! buffer, so Muon runs on blocks.

use crate::lowp::{self, Bits, StateDtype};
use crate::optimizer::{step_entries, DslOptimizer, Entry, LocalSync};
use crate::param::{ParamInfo, ParamSlice};
use crate::scratch::List;
use crate::{Float, OptimError};

/// Elements per block a loop of a 16-bit parameter runs on: a multiple of the quantisation
/// block ([`lowp::q8::BLOCK`]), so 8-bit state stays block-aligned. Two arrays of this many
/// `f32`s (16 KiB) stay in L1 while the loop runs.
pub const STAGE: usize = 2048;

const _: () = assert!(STAGE % lowp::q8::BLOCK == 0 && crate::kernel::CHUNK % STAGE == 0);

/// A 16-bit parameter and its gradient as the executor sees them: the raw bits (one chunk of
/// the parameter, once cut).
#[derive(Debug)]
pub(crate) struct Narrow<'a> {
    pub dtype: StateDtype,
    pub param: &'a mut [Bits],
    pub grad: &'a [Bits],
}

impl<'a> Narrow<'a> {
    /// The same parameter, borrowed for a shorter time.
    pub(crate) fn reborrow(&mut self) -> Narrow<'_> {
        Narrow {
            dtype: self.dtype,
            param: &mut *self.param,
            grad: self.grad,
        }
    }

    /// The first `n` elements and the rest (the gradient cut at the same place, or where it
    /// ends).
    pub(crate) fn split_at(self, n: usize) -> (Narrow<'a>, Narrow<'a>) {
        let (p0, p1) = self.param.split_at_mut(n.min(self.param.len()));
        let (g0, g1) = self.grad.split_at(n.min(self.grad.len()));
        let d = self.dtype;
        (
            Narrow {
                dtype: d,
                param: p0,
                grad: g0,
            },
            Narrow {
                dtype: d,
                param: p1,
                grad: g1,
            },
        )
    }
}

/// 16-bit values widened exactly into `out` (`min` of the two lengths).
#[inline]
pub(crate) fn widen_block<E: Float>(dtype: StateDtype, bits: &[Bits], out: &mut [E]) {
    match dtype {
        StateDtype::Bf16 => {
            for (o, &b) in out.iter_mut().zip(bits) {
                *o = lowp::load_bf16::<E>(b);
            }
        }
        StateDtype::F16 => lowp::load_f16_block::<E>(bits, out),
    }
}

/// `xs` rounded to nearest (ties to even) into the 16-bit `out` (`min` of the two lengths).
#[inline]
pub(crate) fn narrow_block<E: Float>(dtype: StateDtype, xs: &[E], out: &mut [Bits]) {
    match dtype {
        StateDtype::Bf16 => {
            for (o, &x) in out.iter_mut().zip(xs) {
                *o = lowp::store_bf16::<E>(x);
            }
        }
        StateDtype::F16 => lowp::store_f16_block::<E>(xs, out),
    }
}

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
            Some(w) => crate::narrow::all_finite_bits(w.dtype, w.grad),
            None => all_finite(self.grad),
        }
    }
}

/// Whether every element of the 16-bit `bits` is finite (its exponent field is not all ones).
pub(crate) fn all_finite_bits(dtype: StateDtype, bits: &[Bits]) -> bool {
    let exp: Bits = match dtype {
        StateDtype::Bf16 => 0x7f80,
        StateDtype::F16 => 0x7c00,
    };
    bits.iter().fold(true, |ok, &b| ok & (b & exp != exp))
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
    if modules.len() != params.len() {
        return Err(OptimError::InvalidUse(format!(
            "{} modules for {} parameters",
            modules.len(),
            params.len()
        )));
    }
    let mut entries: Vec<Entry<'_, E>> = opt.opt_state_mut().scratch.take(List::Entries);
    entries.extend(params.iter_mut().zip(modules).map(|(p, module)| match p {
        MixedSlice::Same(p) => Entry {
            name: p.name,
            shape: p.shape,
            module,
            param: &mut *p.param,
            grad: p.grad,
            narrow: None,
        },
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
    step_entries(opt, entries, &mut LocalSync)
}

/// The step's checks of its 16-bit parameters (none: `Ok`): each one's rule (`rules[i]`) runs
/// on blocks, and metrics are off.
///
/// # Errors
/// [`OptimError::InvalidUse`] naming the parameter.
pub(crate) fn check<E: Float, O: DslOptimizer<E>>(
    opt: &O,
    entries: &[Entry<'_, E>],
    rules: &[usize],
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
    }
    Ok(())
}
