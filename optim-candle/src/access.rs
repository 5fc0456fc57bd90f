//! Simultaneous in-place access to the storages of many `Var`s, without `unsafe`.
//!
//! candle hands out a tensor's storage mutably only inside an in-place custom op:
//! `var.inplace_op2(&grad, &op)` write-locks the var's storage, read-locks the gradient's, and
//! calls `op.cpu_fwd(&mut var_storage, var_layout, &grad_storage, grad_layout)`. A step needs
//! every parameter at once (one validation for the whole step, global reductions over all
//! parameters, one parallel dispatch), so the op of parameter `i` does not
//! compute anything: from inside its callback it starts the op of parameter `i + 1`, carrying
//! the views collected so far, and the innermost callback, holding every lock, runs the step
//! over all of them. Each view borrows from its own callback's frame, so the borrow checker
//! sees that none outlives its lock. No `unsafe`.
//!
//! Depth: one level of recursion per parameter (a few hundred bytes of stack each); every
//! level first makes sure that at least [`STACK_RED_ZONE`] bytes of stack are left, growing it
//! on the heap otherwise (`stacker`), so models with tens of thousands of `Var`s do not overflow
//! the calling thread's stack.
//!
//! Deadlocks: candle's storage locks are not re-entrant for writers, so the nesting must never
//! lock one storage twice. [`check_distinct`] verifies before any lock is held that no two
//! parameters, and no parameter and gradient, share a storage (a gradient may share one with
//! another gradient: both are only read). candle itself refuses a parameter whose own gradient
//! shares its storage.

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor, Var};
use half::{bf16, f16};
use optim_runtime::{Float, OptimError};
use std::any::Any;
use std::cell::RefCell;

/// Stack every nesting level makes sure is left before it descends (bytes).
pub(crate) const STACK_RED_ZONE: usize = 128 * 1024;

/// Stack allocated on the heap when less than [`STACK_RED_ZONE`] is left (bytes).
pub(crate) const STACK_GROW: usize = 4 * 1024 * 1024;

/// A parameter's elements on the host: the optimizer's element type itself (updated in place),
/// or a narrower float type that the step converts to `E` and back.
pub(crate) enum HostParam<'a, E> {
    /// `E` itself.
    Same(&'a mut [E]),
    /// `bf16`, computed in `E`.
    Bf16(&'a mut [bf16]),
    /// `f16`, computed in `E`.
    F16(&'a mut [f16]),
    /// `f32` under an `f64` optimizer, computed in `f64`.
    F32(&'a mut [f32]),
}

impl<E> HostParam<'_, E> {
    /// The same elements, read only.
    pub(crate) fn read(&self) -> HostGrad<'_, E> {
        match self {
            HostParam::Same(v) => HostGrad::Same(v),
            HostParam::Bf16(v) => HostGrad::Bf16(v),
            HostParam::F16(v) => HostGrad::F16(v),
            HostParam::F32(v) => HostGrad::F32(v),
        }
    }
}

/// A gradient's elements on the host (as [`HostParam`], read only; also a parameter's, see
/// [`HostParam::read`]).
pub(crate) enum HostGrad<'a, E> {
    /// `E` itself.
    Same(&'a [E]),
    /// `bf16`.
    Bf16(&'a [bf16]),
    /// `f16`.
    F16(&'a [f16]),
    /// `f32` under an `f64` optimizer.
    F32(&'a [f32]),
}

/// One parameter of a step, with its storage borrowed for the step.
pub(crate) struct View<'a, E> {
    /// The parameter's elements.
    pub param: HostParam<'a, E>,
    /// The gradient's elements.
    pub grad: HostGrad<'a, E>,
}

/// One parameter of a step before its storage is locked.
pub(crate) struct Pending {
    /// Its name (the optimizer's state key).
    pub name: String,
    /// The `Var`'s tensor.
    pub var: Tensor,
    /// Its gradient, contiguous (a strided gradient has been copied).
    pub grad: Tensor,
}

/// `(start, end)` of a contiguous layout's elements in its storage.
pub(crate) fn range(what: &str, name: &str, l: &Layout) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::msg(format!(
            "the {what} of `{name}` is not contiguous (layout {l:?})"
        ))
    })
}

/// `v[a..b]` as a slice of `E`, when `T` is `E`.
#[allow(clippy::ptr_arg)] // `Any` downcasts the sized `Vec`, not a slice
fn same_mut<E: Float, T: 'static>(v: &mut Vec<T>, a: usize, b: usize) -> Option<&mut [E]> {
    (v as &mut dyn Any)
        .downcast_mut::<Vec<E>>()
        .map(|v| &mut v[a..b])
}

/// `v[a..b]` as a slice of `E`, when `T` is `E`.
#[allow(clippy::ptr_arg)] // `Any` downcasts the sized `Vec`, not a slice
fn same_ref<E: Float, T: 'static>(v: &Vec<T>, a: usize, b: usize) -> Option<&[E]> {
    (v as &dyn Any).downcast_ref::<Vec<E>>().map(|v| &v[a..b])
}

/// A parameter or gradient of a dtype an optimizer over `E` cannot update.
fn dtype_error<E: Float>(name: &str, dtype: DType) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "`{name}` has dtype {}, which an optimizer over {} cannot update (parameters must be a \
         float type no wider than the optimizer's: f32, bf16 or f16 for an f32 optimizer; also \
         f64 for an f64 optimizer)",
        dtype.as_str(),
        E::NAME
    ))
}

/// The host view of a parameter's storage.
fn host_param<'a, E: Float>(
    name: &str,
    s: &'a mut CpuStorage,
    l: &Layout,
) -> candle_core::Result<HostParam<'a, E>> {
    let (a, b) = range("parameter", name, l)?;
    Ok(match s {
        CpuStorage::F32(v) => {
            if E::BYTES == 4 {
                HostParam::Same(
                    same_mut::<E, f32>(v, a, b)
                        .ok_or_else(|| dtype_error::<E>(name, DType::F32))?,
                )
            } else {
                HostParam::F32(&mut v[a..b])
            }
        }
        CpuStorage::F64(v) => HostParam::Same(
            same_mut::<E, f64>(v, a, b).ok_or_else(|| dtype_error::<E>(name, DType::F64))?,
        ),
        CpuStorage::BF16(v) => HostParam::Bf16(&mut v[a..b]),
        CpuStorage::F16(v) => HostParam::F16(&mut v[a..b]),
        other => return Err(dtype_error::<E>(name, other.dtype())),
    })
}

/// The host view of a gradient's storage.
fn host_grad<'a, E: Float>(
    name: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<HostGrad<'a, E>> {
    let (a, b) = range("gradient", name, l)?;
    Ok(match s {
        CpuStorage::F32(v) => {
            if E::BYTES == 4 {
                HostGrad::Same(
                    same_ref::<E, f32>(v, a, b)
                        .ok_or_else(|| dtype_error::<E>(name, DType::F32))?,
                )
            } else {
                HostGrad::F32(&v[a..b])
            }
        }
        CpuStorage::F64(v) => HostGrad::Same(
            same_ref::<E, f64>(v, a, b).ok_or_else(|| dtype_error::<E>(name, DType::F64))?,
        ),
        CpuStorage::BF16(v) => HostGrad::Bf16(&v[a..b]),
        CpuStorage::F16(v) => HostGrad::F16(&v[a..b]),
        other => return Err(dtype_error::<E>(name, other.dtype())),
    })
}

/// What the innermost level runs over every view.
type Body<'f, E> = dyn FnMut(&mut [View<'_, E>]) -> Result<(), OptimError> + 'f;

/// One nesting level: the in-place op of one parameter. `acc` holds the views of the
/// parameters before it (taken out when the op runs); `out` receives the body's result.
struct Nest<'s, 'a, 'f, E> {
    name: &'s str,
    rest: &'s [Pending],
    acc: RefCell<Option<Vec<View<'a, E>>>>,
    body: &'s RefCell<&'f mut Body<'f, E>>,
    out: &'s RefCell<Option<Result<(), OptimError>>>,
}

impl<E: Float> InplaceOp2 for Nest<'_, '_, '_, E> {
    fn name(&self) -> &'static str {
        "optim-candle step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        // The views of the outer levels live longer than this call: shorten them to it.
        let mut acc: Vec<View<'_, E>> = self.acc.borrow_mut().take().unwrap_or_default();
        acc.push(View {
            param: host_param(self.name, s1, l1)?,
            grad: host_grad(self.name, s2, l2)?,
        });
        descend(self.rest, acc, self.body, self.out)
    }
}

/// Locks the next parameter (its op calls back into `descend`), or runs the body when every
/// parameter is locked.
fn descend<'a, 'f, E: Float>(
    rest: &[Pending],
    mut acc: Vec<View<'a, E>>,
    body: &RefCell<&'f mut Body<'f, E>>,
    out: &RefCell<Option<Result<(), OptimError>>>,
) -> candle_core::Result<()> {
    let Some((next, tail)) = rest.split_first() else {
        let r = (body.borrow_mut())(&mut acc);
        *out.borrow_mut() = Some(r);
        return Ok(());
    };
    let nest = Nest {
        name: &next.name,
        rest: tail,
        acc: RefCell::new(Some(acc)),
        body,
        out,
    };
    stacker::maybe_grow(STACK_RED_ZONE, STACK_GROW, || {
        next.var.inplace_op2(&next.grad, &nest)
    })
}

/// Runs `body` once over the views of every parameter in `params` (in order), each storage
/// locked (parameters for writing, gradients for reading) for the duration of the call.
///
/// # Errors
/// [`OptimError::InvalidUse`] when two entries share a storage ([`check_distinct`]), a
/// storage has a dtype or layout the step cannot use, or candle refuses the in-place op (the
/// message carries candle's); otherwise what `body` returns.
pub(crate) fn with_views<'f, E: Float>(
    params: &[Pending],
    body: &'f mut Body<'f, E>,
) -> Result<(), OptimError> {
    check_distinct(params)?;
    let out = RefCell::new(None);
    let body = RefCell::new(body);
    let locked = descend(params, Vec::new(), &body, &out);
    match (locked, out.into_inner()) {
        (_, Some(r)) => r,
        (Err(e), None) => Err(OptimError::InvalidUse(format!("candle: {e}"))),
        (Ok(()), None) => Err(OptimError::Device(
            "candle did not run the in-place op (unsupported device?)".into(),
        )),
    }
}

/// What [`with_storage`] runs: the elements of every `Var` (mutable) and of every gradient.
#[doc(hidden)]
pub type StorageBody<'f, E> = dyn FnMut(&mut [&mut [E]], &[&[E]]) + 'f;

/// Runs `body` once over the elements of every named `Var` that has a gradient in `grads`
/// (mutable, in order) and of their gradients, every storage locked exactly as in a step: the
/// same [`pending`] checks and the same nested in-place ops ([`with_views`]). For benchmarks
/// that time a baseline over the `Var`s' own storage (`benches/candle_adamw.rs`); not part of
/// the API.
///
/// # Errors
/// As [`pending`] and [`with_views`]; [`OptimError::InvalidUse`] when a `Var` is not of element
/// type `E` itself (a dtype a step would stage through `E`).
#[doc(hidden)]
pub fn with_storage<'v, E: Float>(
    vars: impl IntoIterator<Item = (&'v str, &'v Var)>,
    grads: &GradStore,
    body: &mut StorageBody<'_, E>,
) -> Result<(), OptimError> {
    let params = pending(vars, grads)?;
    with_views(&params, &mut |views| {
        let mut ps: Vec<&mut [E]> = Vec::with_capacity(views.len());
        let mut gs: Vec<&[E]> = Vec::with_capacity(views.len());
        for (view, p) in views.iter_mut().zip(&params) {
            let (HostParam::Same(pv), HostGrad::Same(gv)) = (&mut view.param, &view.grad) else {
                return Err(OptimError::InvalidUse(format!(
                    "`{}` is not of element type {}",
                    p.name,
                    E::NAME
                )));
            };
            ps.push(pv);
            gs.push(gv);
        }
        body(&mut ps, &gs);
        Ok(())
    })
}

/// What [`with_storage_16`] runs: the 16-bit elements (raw bits) of every `Var` (mutable) and
/// of every gradient.
#[doc(hidden)]
pub type StorageBody16<'f> = dyn FnMut(&mut [&mut [u16]], &[&[u16]]) + 'f;

/// [`with_storage`] for `bf16`/`f16` `Var`s: runs `body` once over the raw bits of every named
/// `Var` that has a gradient in `grads` and of their gradients, every storage locked exactly as
/// in a step. For benchmarks (`benches/candle_adamw.rs`); not part of the API.
///
/// # Errors
/// As [`with_storage`]; [`OptimError::InvalidUse`] when a `Var` is not `bf16` or `f16`.
#[doc(hidden)]
pub fn with_storage_16<'v>(
    vars: impl IntoIterator<Item = (&'v str, &'v Var)>,
    grads: &GradStore,
    body: &mut StorageBody16<'_>,
) -> Result<(), OptimError> {
    use half::slice::HalfFloatSliceExt;
    let params = pending(vars, grads)?;
    with_views::<f32>(&params, &mut |views| {
        let mut ps: Vec<&mut [u16]> = Vec::with_capacity(views.len());
        let mut gs: Vec<&[u16]> = Vec::with_capacity(views.len());
        for (view, p) in views.iter_mut().zip(&params) {
            match (&mut view.param, &view.grad) {
                (HostParam::Bf16(pv), HostGrad::Bf16(gv)) => {
                    ps.push(pv.reinterpret_cast_mut());
                    gs.push(gv.reinterpret_cast());
                }
                (HostParam::F16(pv), HostGrad::F16(gv)) => {
                    ps.push(pv.reinterpret_cast_mut());
                    gs.push(gv.reinterpret_cast());
                }
                _ => {
                    return Err(OptimError::InvalidUse(format!(
                        "`{}` is not bf16 or f16",
                        p.name
                    )))
                }
            }
        }
        body(&mut ps, &gs);
        Ok(())
    })
}

/// The address of the storage behind `t` (its lock's contents): equal for two tensors exactly
/// when they share a storage. Takes the read lock only for the comparison.
fn storage_addr(t: &Tensor) -> usize {
    let (guard, _) = t.storage_and_layout();
    let s: &Storage = &guard;
    std::ptr::from_ref(s) as usize
}

/// Checks, before any storage is locked for writing, that no parameter appears twice and that
/// no parameter shares its storage with another parameter or with any gradient (the nested
/// in-place ops would wait on themselves). Takes one read lock at a time.
///
/// # Errors
/// [`OptimError::InvalidUse`] naming the two entries.
pub(crate) fn check_distinct(params: &[Pending]) -> Result<(), OptimError> {
    let vars: Vec<usize> = params.iter().map(|p| storage_addr(&p.var)).collect();
    let mut seen: std::collections::HashMap<usize, &str> = std::collections::HashMap::new();
    for (p, &a) in params.iter().zip(&vars) {
        if let Some(other) = seen.insert(a, &p.name) {
            return Err(OptimError::InvalidUse(format!(
                "parameters `{other}` and `{}` share one storage (the same Var given twice?)",
                p.name
            )));
        }
    }
    for p in params {
        if let Some(owner) = seen.get(&storage_addr(&p.grad)) {
            return Err(OptimError::InvalidUse(format!(
                "the gradient of `{}` shares its storage with parameter `{owner}`",
                p.name
            )));
        }
    }
    Ok(())
}

/// The parameters of a step: each named `Var` that has a gradient in `grads`, with its gradient
/// made contiguous (a strided gradient, e.g. from a transposed or broadcast expression, is
/// copied once: the contiguous fallback). `Var`s without a gradient are left out (the step
/// leaves them, their state and their step count alone, as PyTorch does for `grad is None`).
///
/// # Errors
/// [`OptimError::ShapeMismatch`] when a gradient's shape or dtype differs from its `Var`'s;
/// [`OptimError::InvalidUse`] for a `Var` whose own layout is not contiguous, or `Var`s on
/// different devices; [`OptimError::Device`] when copying a strided gradient fails.
pub(crate) fn pending<'v>(
    vars: impl IntoIterator<Item = (&'v str, &'v Var)>,
    grads: &GradStore,
) -> Result<Vec<Pending>, OptimError> {
    let mut out: Vec<Pending> = Vec::new();
    for (name, var) in vars {
        let Some(grad) = grads.get(var) else {
            continue;
        };
        let mismatch = |detail: String| OptimError::ShapeMismatch {
            param: name.to_string(),
            detail,
        };
        if grad.dims() != var.dims() {
            return Err(mismatch(format!(
                "gradient has shape {:?}, the Var {:?}",
                grad.dims(),
                var.dims()
            )));
        }
        if grad.dtype() != var.dtype() {
            return Err(mismatch(format!(
                "gradient has dtype {:?}, the Var {:?}",
                grad.dtype(),
                var.dtype()
            )));
        }
        if !var.layout().is_contiguous() {
            return Err(OptimError::InvalidUse(format!(
                "Var `{name}` is not contiguous (layout {:?}); candle Vars are created contiguous",
                var.layout()
            )));
        }
        if let Some(first) = out.first() {
            if !first.var.device().same_device(var.device()) {
                return Err(OptimError::InvalidUse(format!(
                    "Vars `{}` and `{name}` are on different devices ({:?}, {:?}); one step \
                     updates Vars of one device",
                    first.name,
                    first.var.device(),
                    var.device()
                )));
            }
        }
        let grad = if grad.layout().is_contiguous() {
            grad.clone()
        } else {
            grad.contiguous()
                .map_err(|e| OptimError::Device(format!("copying the gradient of `{name}`: {e}")))?
        };
        out.push(Pending {
            name: name.to_string(),
            var: var.as_tensor().clone(),
            grad,
        });
    }
    Ok(out)
}
