//! The link between a parameter's host state ([`ParamState`](crate::ParamState)) and its
//! buffers on a device, for the duration of one device step.
//!
//! Generated code is written against host buffers: `prepare` creates state with
//! `ensure_buffer`, per-row values are broadcast with `matrix::broadcast_temp`, and barriers
//! call `matrix::run`. In a device step (`super::step`) the driver attaches a [`DeviceLink`]
//! to each stepped parameter's state; those three runtime functions then act on the device:
//! element-wise state and scratch buffers are created there (a host buffer of the right length,
//! say from a checkpoint or an earlier CPU step, is uploaded and freed), broadcasts write the
//! device scratch buffer, and a matrix primitive either runs on the device (Newton–Schulz with
//! GEMMs, where the backend has them) or has its element-wise operands copied to the host, runs
//! there, and has what it wrote copied back. Nothing else in the generated code reads or writes
//! element-wise buffers outside the loops, which the driver launches itself.
//!
//! Failures inside these calls (which return no `Result`) are recorded in the link and turned
//! into the step's error by the driver.

use crate::error::OptimError;
use crate::matrix::OrthogonalizeConfig;
use std::sync::Arc;

/// A buffer of one parameter that may live on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// The parameter's values (the driver's copy).
    Param,
    /// The gradient.
    Grad,
    /// Element-wise state buffer `k` (`ParamState::buffers[k]`).
    Slot(usize),
    /// Element-wise scratch buffer `t` (`ParamState::temps[t]`).
    Temp(usize),
}

/// One parameter's device buffers during a step, as generated code reaches them through the
/// runtime (see the [module docs](self)). Implemented by the step driver for each backend.
pub trait DeviceLink<E>: Send + Sync {
    /// Makes sure element-wise state buffer `slot` of `len` elements exists on the device:
    /// nothing when it does; when `host` holds `len` elements they are uploaded and `host` is
    /// freed; otherwise a new buffer filled with `init` is created. Returns whether it was
    /// created (the buffer's first step, as `ParamState::ensure_buffer`).
    fn ensure_slot(&self, slot: usize, len: usize, init: E, host: &mut Vec<E>) -> bool;
    /// Makes sure element-wise scratch buffer `temp` of `len` elements exists on the device.
    fn ensure_temp(&self, temp: usize, len: usize);
    /// Whether `loc` lives on the device (parameter and gradient always do).
    fn resident(&self, loc: Loc) -> bool;
    /// Copies `loc` to the host (empty on failure, which is recorded).
    fn download(&self, loc: Loc) -> Vec<E>;
    /// Overwrites `loc` on the device with `data`.
    fn upload(&self, loc: Loc, data: &[E]);
    /// Writes `line` (one value per row, or per column) broadcast to every element of scratch
    /// buffer `temp` (`rows × cols`, row-major).
    fn broadcast(&self, line: &[E], temp: usize, row: bool, cols: usize);
    /// Runs `orthogonalize` from `input` into scratch buffer `out` on the device; `false` when
    /// the backend cannot (the caller then runs it on the host).
    fn orthogonalize(
        &self,
        cfg: &OrthogonalizeConfig,
        input: Loc,
        out: usize,
        rows: usize,
        cols: usize,
    ) -> bool;
    /// Records a failure; the step returns the first one.
    fn fail(&self, e: OptimError);
}

/// The optional link of a [`ParamState`](crate::ParamState): set only while a device step runs.
/// Cloning a state drops the link; states compare equal whatever their links.
pub struct LinkCell<E>(pub(crate) Option<Arc<dyn DeviceLink<E>>>);

impl<E> LinkCell<E> {
    /// The link, if a device step is running.
    pub(crate) fn get(&self) -> Option<&Arc<dyn DeviceLink<E>>> {
        self.0.as_ref()
    }
}

impl<E> Default for LinkCell<E> {
    fn default() -> Self {
        LinkCell(None)
    }
}

impl<E> Clone for LinkCell<E> {
    fn clone(&self) -> Self {
        LinkCell(None)
    }
}

impl<E> PartialEq for LinkCell<E> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<E> core::fmt::Debug for LinkCell<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(if self.0.is_some() { "linked" } else { "host" })
    }
}
