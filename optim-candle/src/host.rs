//! The CPU step: the generated fused loops run on the `Var`s' and gradients' own storage
//! (through [`update_mixed_in_modules`], the same driver as every other path). `bf16`/`f16`
//! parameters run on their own 16-bit storage, through the loops' 16-bit entry points
//! (`optim_runtime::narrow`: no copy; 22 bytes per parameter for AdamW); those whose rule reads
//! the raw parameter or gradient as a whole tensor, all of them while metrics are on, and `f32`
//! parameters under an `f64` optimizer are staged whole through `E` (converted copies).

use crate::access::{HostGrad, HostParam, Pending, View};
use crate::names::module_of;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use optim_runtime::{
    lowp, update_mixed_in_modules, DslOptimizer, Float, MixedSlice, NarrowSlice, OptimError,
    ParamInfo, ParamSlice, StateDtype,
};
use rayon::prelude::*;
use std::any::Any;
use std::collections::HashMap;

/// Reusable host buffers of the parameters that are staged whole (see the module docs), by
/// name: the parameter and the gradient converted to `E`. Not optimizer state.
#[derive(Debug)]
pub(crate) struct Staging<E> {
    /// The buffers, by parameter name.
    bufs: HashMap<String, (Vec<E>, Vec<E>)>,
    /// Stage every `bf16`/`f16` parameter whole (the reference path of the tests and
    /// benchmarks; default `false`).
    pub whole: bool,
}

impl<E> Staging<E> {
    /// No buffers; 16-bit parameters run on their own storage where their rule allows.
    pub(crate) fn new() -> Self {
        Staging {
            bufs: HashMap::new(),
            whole: false,
        }
    }
}

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

/// A staged parameter rounded back from `src` (nothing for one of type `E`), to nearest, ties
/// to even, once: from `f64` through `optim_runtime::lowp` (`half`'s `from_f64` rounds through
/// `f32`, twice: `0.05366516222856352` became the `f16` below its nearest), as the blocks of
/// `optim_runtime::narrow` round.
fn narrow_param<E: Float>(p: &mut HostParam<'_, E>, src: &mut Vec<E>) {
    let bf16_of = |x: f64| bf16::from_bits(lowp::store_bf16::<f64>(x));
    let f16_of = |x: f64| f16::from_bits(lowp::store_f16::<f64>(x));
    match p {
        HostParam::Same(_) => {}
        HostParam::Bf16(d) => narrow(d, src, |d, s| d.convert_from_f32_slice(s), bf16_of),
        HostParam::F16(d) => narrow(d, src, |d, s| d.convert_from_f32_slice(s), f16_of),
        HostParam::F32(d) => narrow(d, src, |d, s| d.copy_from_slice(s), |x| x as f32),
    }
}

/// The 16-bit storage of a parameter and its gradient, when both are `bf16` or both `f16`.
fn narrow_view<'v, E>(
    param: &'v mut HostParam<'_, E>,
    grad: &'v HostGrad<'_, E>,
) -> Option<(StateDtype, &'v mut [u16], &'v [u16])> {
    match (param, grad) {
        (HostParam::Bf16(p), HostGrad::Bf16(g)) => Some((
            StateDtype::Bf16,
            p.reinterpret_cast_mut(),
            g.reinterpret_cast(),
        )),
        (HostParam::F16(p), HostGrad::F16(g)) => Some((
            StateDtype::F16,
            p.reinterpret_cast_mut(),
            g.reinterpret_cast(),
        )),
        _ => None,
    }
}

/// Whether parameter `p` (16-bit) is staged whole rather than run on its own storage: its
/// rule reads it or its gradient as a whole tensor, metrics are on, or `whole` asks for it.
fn stage_whole<E: Float, O: DslOptimizer<E>>(opt: &O, p: &Pending, whole: bool) -> bool {
    let info = ParamInfo {
        name: &p.name,
        shape: p.var.dims(),
        module: module_of(&p.name),
    };
    whole || opt.opt_state().metrics_on() || !O::param_in_loops_only(O::route(&info), &info)
}

/// One step of `opt` over `params` on the CPU; `views[i]` is `params[i]`'s locked storage.
/// Rules see each parameter's module as [`module_of`] its name.
/// Parameters (and gradients) of the optimizer's element type are handed to the step as they
/// are, and so are `bf16`/`f16` ones whose rule reads them only inside its loops
/// ([`stage_whole`]): the
/// generated loops write the `Var`'s own storage. The others are converted into `staging`
/// first. All-or-nothing: the step writes nothing unless it validates, and a staged parameter
/// is written back only after the step succeeded.
///
/// # Errors
/// What [`update_mixed_in_modules`] returns.
pub(crate) fn step<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    params: &[Pending],
    views: &mut [View<'_, E>],
    staging: &mut Staging<E>,
) -> Result<(), OptimError> {
    // 1. converted copies of the parameters and gradients staged whole, moved out of
    // `staging`.
    let mut staged: Vec<Option<(Vec<E>, Vec<E>)>> = Vec::with_capacity(views.len());
    for (p, v) in params.iter().zip(views.iter_mut()) {
        let same = matches!(v.param, HostParam::Same(_)) && matches!(v.grad, HostGrad::Same(_));
        let blocks =
            narrow_view(&mut v.param, &v.grad).is_some() && !stage_whole(opt, p, staging.whole);
        if same || blocks {
            staged.push(None);
            continue;
        }
        let (mut pb, mut gb) = staging.bufs.remove(&p.name).unwrap_or_default();
        widen_host(&v.param.read(), &mut pb);
        widen_host(&v.grad, &mut gb);
        staged.push(Some((pb, gb)));
    }

    // 2. the step over the storages themselves (or the converted copies).
    let shapes: Vec<&[usize]> = params.iter().map(|p| p.var.dims()).collect();
    let result = {
        let mut slices: Vec<MixedSlice<'_, E>> = Vec::with_capacity(views.len());
        for (((p, v), s), shape) in params
            .iter()
            .zip(views.iter_mut())
            .zip(staged.iter_mut())
            .zip(&shapes)
        {
            // `pending` checked that a gradient has its parameter's dtype: both are `Same`,
            // both are 16-bit, or both were staged in 1.
            let (name, shape) = (p.name.as_str(), *shape);
            let slice = match (s, &mut v.param, &v.grad) {
                (Some((pb, gb)), _, _) => MixedSlice::Same(ParamSlice {
                    name,
                    shape,
                    param: pb.as_mut_slice(),
                    grad: gb.as_slice(),
                }),
                (None, HostParam::Same(param), HostGrad::Same(grad)) => {
                    MixedSlice::Same(ParamSlice {
                        name,
                        shape,
                        param,
                        grad,
                    })
                }
                (None, param, grad) => match narrow_view(param, grad) {
                    Some((dtype, param, grad)) => MixedSlice::Narrow(NarrowSlice {
                        name,
                        shape,
                        dtype,
                        param,
                        grad,
                    }),
                    None => {
                        return Err(OptimError::InvalidUse(format!(
                            "`{name}`: the gradient's element type differs from the parameter's"
                        )))
                    }
                },
            };
            slices.push(slice);
        }
        let modules: Vec<&str> = params.iter().map(|p| module_of(&p.name)).collect();
        update_mixed_in_modules(opt, &mut slices, &modules)
    };

    // 3. write the staged parameters back (only after a successful step); keep the buffers.
    for ((p, v), s) in params.iter().zip(views.iter_mut()).zip(staged) {
        let Some((mut pb, gb)) = s else {
            continue;
        };
        if result.is_ok() {
            narrow_param(&mut v.param, &mut pb);
        }
        staging.bufs.insert(p.name.clone(), (pb, gb));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `0.05366516222856352` lies just above the midpoint `0.0536651611328125` of the `f16`s
    /// `0x2ade` and `0x2adf`, within half an `f32` ulp of it: rounded through `f32` (as
    /// `half::f16::from_f64` does) it becomes the tie and then the even `0x2ade`; rounded once
    /// it is `0x2adf`. The staged path under an `f64` optimizer rounds once.
    #[test]
    fn staged_f64_values_round_to_16_bits_once() {
        let x = 0.05366516222856352f64;
        assert_eq!(half::f16::from_f64(x).to_bits(), 0x2ade); // the double rounding
        let mut d = [f16::ZERO];
        narrow_param::<f64>(&mut HostParam::F16(&mut d), &mut vec![x]);
        assert_eq!(d[0].to_bits(), 0x2adf);
        // and bf16: 1 + 2^-8 + 2^-40 is above the tie 1 + 2^-8 between 1 and 1 + 2^-7
        let y = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        let mut b = [bf16::ZERO];
        narrow_param::<f64>(&mut HostParam::Bf16(&mut b), &mut vec![y]);
        assert_eq!(b[0], bf16::from_f32(1.0 + 2f32.powi(-7)));
    }
}
