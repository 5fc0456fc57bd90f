//! Stepping candle CUDA `Var`s in place (feature `candle-cuda`).
//!
//! The same nesting as the CPU path ([`crate::access`]): the in-place op of parameter `i`
//! write-locks its `Var`'s storage and read-locks its gradient's, and from inside its
//! `cuda_fwd` starts the op of parameter `i + 1`; the innermost callback, holding every lock,
//! runs the whole step. What it collects is each storage's device address and length (the
//! contiguous range of the layout, checked against the slice), not host slices: the step runs
//! through optim-runtime's device step driver on [`CandleCuda`] (candle's context and stream),
//! whose stages write the `Var`s' own device memory. The optimizer state stays on the device
//! between steps (`OptState::on_device`); a checkpoint or a CPU step brings it back.
//!
//! Dtypes: the `Var`s must have the optimizer's element type (`f32` for an `f32` optimizer,
//! `f64` for an `f64` one); `bf16`/`f16` `Var`s on CUDA are refused with an error (on the CPU
//! they are staged through `E`).

mod backend;

use crate::access::{check_distinct, Pending, STACK_GROW, STACK_RED_ZONE};
use backend::{CandleCuda, DevBuf};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, DType, Device, InplaceOp2, Layout};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, SyncOnDrop};
use optim_runtime::cuda::__private::{step_on_backend, DevEntry};
use optim_runtime::{DslOptimizer, Float, OptimError};
use std::cell::RefCell;
use std::marker::PhantomData;

/// The candle CUDA device `ordinal` (`Device::new_cuda`), its error as an [`OptimError`].
///
/// # Errors
/// [`OptimError::Device`] with candle's error (no GPU, no such ordinal, a driver too old).
pub(crate) fn cuda_device(ordinal: usize) -> Result<Device, OptimError> {
    // candle's `Display` (its `Debug` carries a backtrace)
    Device::new_cuda(ordinal).map_err(|e| OptimError::Device(format!("CUDA device {ordinal}: {e}")))
}

/// Compiles every CUDA kernel of `O` for element type `E` with NVRTC (see
/// [`crate::compile_cuda_kernels`]).
pub(crate) fn compile_kernels<E: Float, O: DslOptimizer<E>>() -> Result<usize, OptimError> {
    let mut n = 0;
    for s in O::cuda_sources() {
        let text = s.source_for::<E>().ok_or_else(|| {
            OptimError::Device(format!("no CUDA kernels for element type {}", E::NAME))
        })?;
        let ptx = backend::ptx(text, optim_runtime::cuda::source_hash(text))?;
        for entry in [s.name, s.multi_name] {
            if !ptx.contains(&format!(".entry {entry}(")) {
                return Err(OptimError::Device(format!(
                    "NVRTC's PTX of {} has no entry point {entry}",
                    s.optimizer
                )));
            }
        }
        n += 1;
    }
    Ok(n)
}

/// A `Var`'s elements and its gradient's, lent for one step.
struct Lent {
    param: CUdeviceptr,
    grad: CUdeviceptr,
    len: usize,
}

/// `s`'s dtype is the optimizer's element type `E`.
fn check_dtype<E: Float>(name: &str, dtype: DType) -> candle_core::Result<()> {
    let ok = matches!((dtype, E::BYTES), (DType::F32, 4) | (DType::F64, 8));
    if ok {
        return Ok(());
    }
    Err(candle_core::Error::msg(format!(
        "`{name}` has dtype {} on CUDA; an optimizer over {} steps CUDA Vars of dtype {} only \
         (bf16/f16/f32 staging is implemented on the CPU path only)",
        dtype.as_str(),
        E::NAME,
        E::NAME
    )))
}

/// `(start, end)` of a contiguous layout (as on the CPU path, [`crate::access::range`]), inside
/// a device slice of `len` elements.
fn range(what: &str, name: &str, l: &Layout, len: usize) -> candle_core::Result<(usize, usize)> {
    let (a, b) = crate::access::range(what, name, l)?;
    if a <= b && b <= len {
        return Ok((a, b));
    }
    Err(candle_core::Error::msg(format!(
        "the {what} of `{name}` (elements {a}..{b}) lies outside its storage of {len} elements"
    )))
}

/// A lent device range: the address of its first element, its number of elements, and the
/// guard that records the access on the stream when dropped (after the step).
type Lend<'a> = (CUdeviceptr, usize, SyncOnDrop<'a>);

/// The `Var`'s elements (written by the step).
fn param_ptr<'a, E: Float>(
    name: &str,
    s: &'a mut CudaStorage,
    l: &Layout,
    stream: &'a CudaStream,
) -> candle_core::Result<Lend<'a>> {
    check_dtype::<E>(name, s.dtype())?;
    let whole = if E::BYTES == 4 {
        whole_mut(s.as_cuda_slice_mut::<f32>()?, stream)
    } else {
        whole_mut(s.as_cuda_slice_mut::<f64>()?, stream)
    };
    in_layout::<E>("parameter", name, l, whole)
}

/// The gradient's elements (read only).
fn grad_ptr<'a, E: Float>(
    name: &str,
    s: &'a CudaStorage,
    l: &Layout,
    stream: &'a CudaStream,
) -> candle_core::Result<Lend<'a>> {
    check_dtype::<E>(name, s.dtype())?;
    let whole = if E::BYTES == 4 {
        whole_ref(s.as_cuda_slice::<f32>()?, stream)
    } else {
        whole_ref(s.as_cuda_slice::<f64>()?, stream)
    };
    in_layout::<E>("gradient", name, l, whole)
}

/// All of `x`, for writing.
fn whole_mut<'a, T>(x: &'a mut CudaSlice<T>, stream: &'a CudaStream) -> Lend<'a> {
    let len = x.len();
    let (p, g) = x.device_ptr_mut(stream);
    (p, len, g)
}

/// All of `x`, for reading.
fn whole_ref<'a, T>(x: &'a CudaSlice<T>, stream: &'a CudaStream) -> Lend<'a> {
    let (p, g) = x.device_ptr(stream);
    (p, x.len(), g)
}

/// The part of a storage's elements `whole` that layout `l` addresses (contiguous only).
fn in_layout<'a, E: Float>(
    what: &str,
    name: &str,
    l: &Layout,
    (base, len, guard): Lend<'a>,
) -> candle_core::Result<Lend<'a>> {
    let (a, b) = range(what, name, l, len)?;
    Ok((base + (a * E::BYTES) as u64, b - a, guard))
}

/// What the innermost level runs over every lent pair.
type Body<'f> = dyn FnMut(&[Lent]) -> Result<(), OptimError> + 'f;

/// One nesting level: the in-place op of one CUDA parameter (see [`crate::access`]).
struct Nest<'s, 'f, E> {
    name: &'s str,
    rest: &'s [Pending],
    acc: RefCell<Option<Vec<Lent>>>,
    body: &'s RefCell<&'f mut Body<'f>>,
    out: &'s RefCell<Option<Result<(), OptimError>>>,
    _elem: PhantomData<E>,
}

impl<E: Float> InplaceOp2 for Nest<'_, '_, E> {
    fn name(&self) -> &'static str {
        "optim-candle cuda step"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<()> {
        Err(candle_core::Error::msg(format!(
            "`{}` is on the CPU in a step of CUDA Vars",
            self.name
        )))
    }

    fn cuda_fwd(
        &self,
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let stream = s1.device.cuda_stream();
        let mut acc = self.acc.borrow_mut().take().unwrap_or_default();
        // the guards live in this frame, so the stream records the step's reads and writes
        // (for candle's event tracking) once the step has been queued
        let (param, len, _write) = param_ptr::<E>(self.name, s1, l1, &stream)?;
        let (grad, glen, _read) = grad_ptr::<E>(self.name, s2, l2, &stream)?;
        if glen != len {
            return Err(candle_core::Error::msg(format!(
                "the gradient of `{}` has {glen} elements, the Var {len}",
                self.name
            )));
        }
        acc.push(Lent { param, grad, len });
        descend::<E>(self.rest, acc, self.body, self.out)
    }
}

/// Locks the next parameter, or runs the body when every parameter is locked.
fn descend<'f, E: Float>(
    rest: &[Pending],
    acc: Vec<Lent>,
    body: &RefCell<&'f mut Body<'f>>,
    out: &RefCell<Option<Result<(), OptimError>>>,
) -> candle_core::Result<()> {
    let Some((next, tail)) = rest.split_first() else {
        let r = (body.borrow_mut())(&acc);
        *out.borrow_mut() = Some(r);
        return Ok(());
    };
    let nest = Nest::<E> {
        name: &next.name,
        rest: tail,
        acc: RefCell::new(Some(acc)),
        body,
        out,
        _elem: PhantomData,
    };
    stacker::maybe_grow(STACK_RED_ZONE, STACK_GROW, || {
        next.var.inplace_op2(&next.grad, &nest)
    })
}

/// One step of `opt` over CUDA `pending` (all on one device, checked by
/// [`crate::access::pending`]) on candle's device and stream.
///
/// # Errors
/// As the CPU step; [`OptimError::InvalidUse`] for a dtype other than `E` or a layout the
/// step cannot use; [`OptimError::Device`] for a driver or NVRTC failure. Validation errors
/// modify nothing.
pub(crate) fn step<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    pending: &[Pending],
) -> Result<(), OptimError> {
    check_distinct(pending)?;
    let Some(first) = pending.first() else {
        return Ok(());
    };
    let dev = first
        .var
        .device()
        .as_cuda_device()
        .map_err(|e| OptimError::InvalidUse(format!("candle: {e}")))?;
    let backend = CandleCuda::new(dev);
    let mut run = |lent: &[Lent]| -> Result<(), OptimError> {
        let mut entries: Vec<DevEntry<'_, DevBuf<E>>> = pending
            .iter()
            .zip(lent)
            .map(|(p, l)| DevEntry {
                name: &p.name,
                shape: p.var.dims(),
                module: crate::names::module_of(&p.name),
                // SAFETY: the addresses point into the storages locked by the enclosing
                // in-place ops (a `Var`'s for writing, its gradient's for reading), which stay
                // locked until this closure returns; `entries` is dropped before that.
                param: unsafe { DevBuf::lent(l.param, l.len) },
                grad: unsafe { DevBuf::lent(l.grad, l.len) },
            })
            .collect();
        let same = |b: &CandleCuda| b.same(&backend);
        step_on_backend(opt, backend.clone(), same, &mut entries)
    };
    let body: &mut Body<'_> = &mut run;
    let out = RefCell::new(None);
    let body = RefCell::new(body);
    let locked = descend::<E>(pending, Vec::new(), &body, &out);
    match (locked, out.into_inner()) {
        (_, Some(r)) => r,
        (Err(e), None) => Err(OptimError::InvalidUse(format!("candle: {e}"))),
        (Ok(()), None) => Err(OptimError::Device(
            "candle did not run the in-place op".into(),
        )),
    }
}
