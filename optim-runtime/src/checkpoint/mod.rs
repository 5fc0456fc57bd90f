//! Checkpoints: the complete state of an optimizer (and optionally a [`WeightEma`]) in one
//! safetensors file, through the [`Checkpoint`] methods every optimizer has:
//! [`save_checkpoint`](Checkpoint::save_checkpoint) /
//! [`load_checkpoint`](Checkpoint::load_checkpoint) (files),
//! [`to_checkpoint_bytes`](Checkpoint::to_checkpoint_bytes) /
//! [`load_checkpoint_bytes`](Checkpoint::load_checkpoint_bytes) (memory), and the `_with_ema`
//! variants.
//!
//! # Format (version 2)
//!
//! A [safetensors](https://huggingface.co/docs/safetensors) file. Tensors (little-endian, 1-D):
//!
//! | key | dtype | contents |
//! |---|---|---|
//! | `"{param}/{slot}"` | the optimizer's element type (`F32`/`F64`), or `BF16`/`F16` for a state the rule stores in 16 bits (format 3) | a state buffer of parameter `param`; `slot` is the state's name from `explain()` (`"m"`, `"v"`, …), or `#k` for slot `k` when the plan does not name it |
//! | `"{param}/{slot}"` | `U8` (format 4) | the codes of a state the rule stores 8-bit quantised (`q8`/`uq8`): one per element, an index into the buffer's 256-entry map |
//! | `"{param}/{slot}#absmax"` | `F32` (format 4) | that state's block scales: `ceil(len / 256)` of them, block `b` covering elements `256·b ..` |
//! | `"{param}/#scalars"` | `F64` | the parameter's scalar states (e.g. NAdam's `mu_product`), when it has any |
//! | `"#ema/{param}"` | element type | the [`WeightEma`] average of `param` (the biased accumulator under [`EmaCorrection::Debias`](crate::ema::EmaCorrection::Debias)) |
//!
//! Unallocated buffers (a flag that is off) have no tensor. The header's `__metadata__` holds one
//! entry, `"optim_dsl"` ([`METADATA_KEY`]), a JSON document with everything else, in this order:
//! `format` (2, [`FORMAT_VERSION`]), `checksum` (below), `optimizer` (the type name, e.g.
//! `"AdamW"`), `dtype` (`"f32"`/`"f64"`), the global `step`, `skipped_steps`,
//! `non_finite_policy`, `config` (every hyperparameter and flag by name, in declaration order:
//! `{"const": 0.9}`, `{"schedule": {...}}` (see [`crate::schedule`]), `{"flag": true}`),
//! `params` (per parameter: `name`, `step`, `rule`, `len`, one entry per buffer slot (`null`
//! when not allocated, else its tensor `key`, `name`, `len` and, for a 16-bit buffer only,
//! `dtype`: `"bf16"` or `"f16"`), the `#scalars` key and
//! `scalars_init`), and `ema` (`decay`, `correction`, `include_buffers`, `updates`, and per
//! parameter `name`, `key`, `len`, `updates`). Non-finite floats in the JSON are the strings
//! `"nan"`, `"inf"`, `"-inf"`.
//!
//! **Checksum.** `checksum` is `"sha256:"` followed by 64 lowercase hex digits: the SHA-256 of
//! the whole file (length prefix, header, padding and tensor data) with those 64 digits read as
//! ASCII `0`s. A file is written with `0`s there, hashed, and the digits filled in; loading
//! recomputes the hash the same way before reading anything else, so any changed byte, the
//! digits included, is an [`OptimError::Checkpoint`] and nothing is loaded. (It detects
//! corruption, not deliberate tampering: anyone can recompute it.)
//!
//! Tensors store the exact bits of every buffer and scalar, so a run resumed from a checkpoint
//! is bit-identical to one that never stopped. Scratch buffers (`ParamState::temps`, the dfdx
//! staging copies) are not saved; they are recreated by the next step.
//!
//! A hyperparameter given a [`Schedule::Custom`](crate::schedule::Schedule::Custom) closure
//! cannot be serialised: it is saved as its description (`{"opaque": "custom(name)"}`) and, on
//! load, the optimizer loaded into must already hold a field with the same description, which
//! is kept.
//!
//! # Versions
//!
//! | version | written by | differences |
//! |---|---|---|
//! | 1 | optim-dsl before the checksum | no `checksum` entry; otherwise as version 2 |
//! | 2 | this build, all state in the element type | `checksum` |
//! | 3 | this build, some state in 16 bits | as 2, plus a buffer's `dtype` and its `BF16`/`F16` tensor |
//! | 4 | this build, some state 8-bit quantised | as 3, plus a buffer's `q8` (`"signed"`/`"unsigned"`, the map) and `scales` (the key of its `F32` scales tensor) with its `U8` codes tensor |
//!
//! Loading reads all four. A version 1 file has no checksum to verify and loads as before (its
//! structure and values are still validated); saving writes version 2, or 3 when some buffer
//! is stored in 16 bits, or 4 when some buffer is 8-bit quantised (so files of optimizers without 16-bit state are unchanged, and a build
//! that cannot read 16-bit state refuses such a file by its version), so loading and saving
//! once migrates a file. Any other version is refused with an [`OptimError::Checkpoint`]
//! naming it.
//!
//! **16-bit state.** A buffer a rule stores as `bf16`/`f16` (`let m: bf16 = ...`, see
//! [`crate::lowp`]) is saved with its stored bits, not widened, so a round trip is
//! bit-identical and a run resumed from it is bit-identical to one that never stopped
//! (stochastic rounding draws from the parameter's name, its saved step and the element
//! index). A checkpoint whose buffer type differs from the rule's loads too: the next step
//! converts it (widening exactly, or rounding to nearest into 16 bits).
//!
//! **8-bit state.** A buffer a rule stores as `q8`/`uq8` (`let m: q8 = ...`, see
//! [`crate::lowp::q8`]) is saved as its codes (`U8`) and its block scales (`F32`, key
//! `"{param}/{slot}#absmax"`), not dequantised, so a round trip is bit-identical and a resumed
//! run is bit-identical to one that never stopped. Its metadata entry names the map
//! (`"q8": "signed"` or `"unsigned"`) and the scales tensor (`"scales"`); loading checks that
//! the codes tensor has `len` elements and the scales `ceil(len / 256)`. A checkpoint whose
//! buffer is stored otherwise (an `f32` one from before, say) loads too: the next step
//! quantises it; a quantised one loaded into a rule that stores the state otherwise is
//! dequantised.

mod checksum;
mod format;
mod load;
mod save;

use crate::ema::WeightEma;
use crate::error::OptimError;
use crate::float::Float;
use crate::optimizer::DslOptimizer;
use std::path::Path;

/// Version of the checkpoint format written by this crate when every state buffer is in the
/// optimizer's element type (see the [module docs](self)).
pub const FORMAT_VERSION: u32 = 2;

/// Version written when some state buffer is stored in 16 bits (`bf16`/`f16`, see
/// [`crate::lowp`]): format 2 plus a per-buffer `dtype` (see the [module docs](self)).
pub const FORMAT_VERSION_LOW_PRECISION: u32 = 3;

/// Version written when some state buffer is stored 8-bit block-quantised (`q8`/`uq8`, see
/// [`crate::lowp::q8`]): format 3 plus a per-buffer `q8` map and `scales` tensor (see the
/// [module docs](self)).
pub const FORMAT_VERSION_Q8: u32 = 4;

/// The `__metadata__` key holding the JSON document.
pub const METADATA_KEY: &str = "optim_dsl";

/// Saving and loading the complete state of an optimizer (see the [module docs](self) for the
/// file format). Implemented for every [`DslOptimizer`] (blanket impl); bring it into scope with
/// `use optim_dsl::prelude::*`.
pub trait Checkpoint<E: Float>: DslOptimizer<E> {
    /// Writes the complete optimizer state to `path` as a safetensors file: every state buffer,
    /// per-parameter step counts and scalar states, the global step, the skipped-step count, the
    /// non-finite policy and every hyperparameter and flag (schedules included), with a
    /// checksum. The file is written next to `path` and renamed over it, so an existing
    /// checkpoint is never left half-written.
    ///
    /// # Errors
    /// [`OptimError::Checkpoint`] when the file cannot be written or the element type is not
    /// `f32`/`f64`.
    fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<(), OptimError> {
        save::save_file(self, None, path.as_ref())
    }

    /// [`save_checkpoint`](Self::save_checkpoint) plus the averaged weights of `ema`.
    ///
    /// # Errors
    /// As [`save_checkpoint`](Self::save_checkpoint).
    fn save_checkpoint_with_ema(
        &self,
        path: impl AsRef<Path>,
        ema: &WeightEma<E>,
    ) -> Result<(), OptimError> {
        save::save_file(self, Some(ema), path.as_ref())
    }

    /// Replaces the optimizer state (and config) with the checkpoint at `path`, written by
    /// [`save_checkpoint`](Self::save_checkpoint) for the same optimizer type and element type.
    /// The whole file is verified (checksum) and validated before anything is replaced; an
    /// `Err` changes nothing. An optimizer that has no state yet (never stepped) accepts any
    /// parameter set; one that has state accepts only a checkpoint of exactly the same
    /// parameter names and lengths. The config is restored through
    /// [`DslOptimizer::config_mut`].
    ///
    /// # Errors
    /// [`OptimError::CheckpointMismatch`] naming the parameter whose name, length, element type
    /// or recorded state does not fit; [`OptimError::Checkpoint`] when the file cannot be read,
    /// is corrupt (checksum mismatch) or cannot be parsed, has an unsupported format version,
    /// was written by another optimizer type or element type, or has a config this optimizer
    /// cannot take.
    fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<(), OptimError> {
        let bytes = load::read_file(path.as_ref())?;
        load::load(self, None, &bytes)
    }

    /// [`load_checkpoint`](Self::load_checkpoint) plus the averaged weights into `ema`
    /// (validated with the rest; an `Err` changes neither).
    ///
    /// # Errors
    /// As [`load_checkpoint`](Self::load_checkpoint), and [`OptimError::Checkpoint`] when the
    /// file has no EMA.
    fn load_checkpoint_with_ema(
        &mut self,
        path: impl AsRef<Path>,
        ema: &mut WeightEma<E>,
    ) -> Result<(), OptimError> {
        let bytes = load::read_file(path.as_ref())?;
        load::load(self, Some(ema), &bytes)
    }

    /// The checkpoint of [`save_checkpoint`](Self::save_checkpoint) in memory (with `ema` when
    /// given).
    ///
    /// # Errors
    /// As [`save_checkpoint`](Self::save_checkpoint).
    fn to_checkpoint_bytes(&self, ema: Option<&WeightEma<E>>) -> Result<Vec<u8>, OptimError> {
        save::to_bytes(self, ema)
    }

    /// [`load_checkpoint`](Self::load_checkpoint) from memory (into `ema` too when given).
    ///
    /// # Errors
    /// As [`load_checkpoint_with_ema`](Self::load_checkpoint_with_ema).
    fn load_checkpoint_bytes(
        &mut self,
        bytes: &[u8],
        ema: Option<&mut WeightEma<E>>,
    ) -> Result<(), OptimError> {
        load::load(self, ema, bytes)
    }
}

impl<E: Float, O: DslOptimizer<E>> Checkpoint<E> for O {}
