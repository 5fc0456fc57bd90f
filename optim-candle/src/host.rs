//! The CPU step: the generated fused loops run on the `Var`s' and gradients' own storage
//! (through [`DslOptimizer::update_slices`], the same driver as every other path); parameters
//! of a narrower float type than the optimizer's are staged through `E`.

use crate::access::{HostGrad, HostParam, Pending, View};
use crate::names::module_of;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use optim_runtime::{DslOptimizer, Float, OptimError, ParamSlice};
use rayon::prelude::*;
use std::any::Any;
use std::collections::HashMap;

/// Reusable host buffers of the parameters that are staged (bf16/f16, or f32 under an `f64`
/// optimizer), by name: the parameter and the gradient converted to `E`. Not optimizer state.
pub(crate) type Staging<E> = HashMap<String, (Vec<E>, Vec<E>)>;

/// Elements per parallel piece of a conversion.
const PIECE: usize = 1 << 15;

/// `v` as `f32`s, when `E` is `f32`.
#[allow(clippy::ptr_arg)] // `Any` downcasts the sized `Vec`, not a slice
fn as_f32<E: Float>(v: &mut Vec<E>) -> Option<&mut Vec<f32>> {
    (v as &mut dyn Any).downcast_mut::<Vec<f32>>()
}

/// Widens `src` into `dst` (exact).
fn widen<E: Float, T: Copy + Send + Sync>(
    dst: &mut Vec<E>,
    src: &[T],
    fast: impl Fn(&mut [f32], &[T]) + Sync,
    slow: impl Fn(T) -> f64 + Sync,
) {
    dst.clear();
    dst.resize(src.len(), E::zero());
    if let Some(d) = as_f32(dst) {
        return in_pieces(d, src, fast);
    }
    in_pieces(dst, src, |d, s| {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = E::of_f64(slow(s));
        }
    });
}

/// Rounds `src` to nearest into `dst`.
fn narrow<E: Float, T: Copy + Send + Sync>(
    dst: &mut [T],
    src: &mut Vec<E>,
    fast: impl Fn(&mut [T], &[f32]) + Sync,
    slow: impl Fn(f64) -> T + Sync,
) {
    if let Some(s) = as_f32(src) {
        return in_pieces(dst, s, fast);
    }
    in_pieces(dst, src, |d, s| {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = slow(s.as_f64());
        }
    });
}

/// `convert(d, s)` on the matching pieces of [`PIECE`] elements of `dst` and `src`, in
/// parallel.
fn in_pieces<D: Send, S: Sync>(dst: &mut [D], src: &[S], convert: impl Fn(&mut [D], &[S]) + Sync) {
    dst.par_chunks_mut(PIECE)
        .zip(src.par_chunks(PIECE))
        .for_each(|(d, s)| convert(d, s));
}

/// A staged parameter or gradient widened into `dst` (nothing for one of type `E`).
fn widen_host<E: Float>(g: &HostGrad<'_, E>, dst: &mut Vec<E>) {
    match g {
        HostGrad::Same(_) => {}
        HostGrad::Bf16(s) => widen(dst, s, |d, s| s.convert_to_f32_slice(d), bf16::to_f64),
        HostGrad::F16(s) => widen(dst, s, |d, s| s.convert_to_f32_slice(d), f16::to_f64),
        HostGrad::F32(s) => widen(dst, s, |d, s| d.copy_from_slice(s), f64::from),
    }
}

/// A staged parameter rounded back from `src` (nothing for one of type `E`).
fn narrow_param<E: Float>(p: &mut HostParam<'_, E>, src: &mut Vec<E>) {
    match p {
        HostParam::Same(_) => {}
        HostParam::Bf16(d) => narrow(d, src, |d, s| d.convert_from_f32_slice(s), bf16::from_f64),
        HostParam::F16(d) => narrow(d, src, |d, s| d.convert_from_f32_slice(s), f16::from_f64),
        HostParam::F32(d) => narrow(d, src, |d, s| d.copy_from_slice(s), |x| x as f32),
    }
}

/// One step of `opt` over `params` on the CPU; `views[i]` is `params[i]`'s locked storage.
/// Rules see each parameter's module as [`module_of`] its name.
/// Parameters (and gradients) of the optimizer's element type are handed to the step as they
/// are: the generated loops write the `Var`'s own storage. Narrower ones are converted into
/// `staging` first. All-or-nothing: a staged parameter is written back only after the step
/// succeeded.
///
/// # Errors
/// What [`DslOptimizer::update_slices_in_modules`] returns.
pub(crate) fn step<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    params: &[Pending],
    views: &mut [View<'_, E>],
    staging: &mut Staging<E>,
) -> Result<(), OptimError> {
    // 1. converted copies of the narrow parameters and gradients, moved out of `staging`.
    let mut staged: Vec<Option<(Vec<E>, Vec<E>)>> = Vec::with_capacity(views.len());
    for (p, v) in params.iter().zip(views.iter()) {
        if matches!(v.param, HostParam::Same(_)) && matches!(v.grad, HostGrad::Same(_)) {
            staged.push(None);
            continue;
        }
        let (mut pb, mut gb) = staging.remove(&p.name).unwrap_or_default();
        widen_host(&v.param.read(), &mut pb);
        widen_host(&v.grad, &mut gb);
        staged.push(Some((pb, gb)));
    }

    // 2. the step over the storages themselves (or the converted copies).
    let shapes: Vec<&[usize]> = params.iter().map(|p| p.var.dims()).collect();
    let result = {
        let mut slices: Vec<ParamSlice<'_, E>> = Vec::with_capacity(views.len());
        for (((p, v), s), shape) in params
            .iter()
            .zip(views.iter_mut())
            .zip(staged.iter_mut())
            .zip(&shapes)
        {
            // `pending` checked that a gradient has its parameter's dtype: both are `Same`, or
            // both were staged in 1.
            let (param, grad): (&mut [E], &[E]) = match (&mut v.param, &v.grad, s) {
                (HostParam::Same(p), HostGrad::Same(g), _) => (p, g),
                (_, _, Some((pb, gb))) => (pb.as_mut_slice(), gb.as_slice()),
                (_, _, None) => {
                    return Err(OptimError::InvalidUse(format!(
                        "`{}`: the gradient's element type differs from the parameter's",
                        p.name
                    )))
                }
            };
            slices.push(ParamSlice {
                name: &p.name,
                shape,
                param,
                grad,
            });
        }
        let modules: Vec<&str> = params.iter().map(|p| module_of(&p.name)).collect();
        opt.update_slices_in_modules(&mut slices, &modules)
    };

    // 3. write the staged parameters back (only after a successful step); keep the buffers.
    for ((p, v), s) in params.iter().zip(views.iter_mut()).zip(staged) {
        let Some((mut pb, gb)) = s else {
            continue;
        };
        if result.is_ok() {
            narrow_param(&mut v.param, &mut pb);
        }
        staging.insert(p.name.clone(), (pb, gb));
    }
    result
}
