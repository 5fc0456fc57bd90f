//! CUDA backend: the CUDA C twin of every planned stage, and (feature `cuda`) the code that
//! compiles and launches it.
//!
//! `optimizer!` emits, next to each Rust loop, the same loop as CUDA C (`optim-macros/src/
//! emit_cuda.rs`): the same loads, operations in the same order, reductions and writes. They
//! are listed by [`DslOptimizer::cuda_sources`](crate::DslOptimizer::cuda_sources), one
//! [`CudaKernelSource`] per rule, flag combination and stage. This part is plain data, always
//! compiled, so the sources can be inspected, tested and compiled offline (NVRTC needs no GPU:
//! `scripts/check-cuda-sources.sh`).
//!
//! # Kernel ABI
//!
//! With `S = max(n_scalars, 1)`, `B = max(n_bufs, 1)`, `R = n_reductions` and `T` the element
//! type (`float` in `source_f32`, `double` in `source_f64`):
//!
//! ```c
//! struct Params { unsigned long long n; T s[S]; };   // one per tensor
//! struct TensorEntry { T* p; const T* g; T* b[B]; unsigned long long params; };
//! extern "C" __global__ void name(const Params* prm, T* p, const T* g, T* b0, ..., double* red);
//! extern "C" __global__ void multi_name(const Params* prm, const TensorEntry* tab, double* red);
//! ```
//!
//! - The per-step scalars of a tensor (hoisted host values, converted to `T` exactly as
//!   [`KernelCall::scalars`](crate::kernel::KernelCall::scalars); booleans as `1`/`0`) and its
//!   length are packed into one `Params` record in device memory ([`pack_params`]), so a launch
//!   has `4 + n_bufs` arguments — cudarc's `LaunchAsync` takes at most 12, enough for 8 state
//!   and scratch streams ([`MAX_BUFS`]).
//! - `b0…` are the stage's state and scratch streams in the order of
//!   [`KernelCall::bufs`](crate::kernel::KernelCall::bufs) (slots ascending, then scratch).
//! - Both entry points run a grid-stride loop; `blockDim.x` must be a multiple of 32 (use
//!   [`BLOCK`]).
//! - Reductions are two-pass and deterministic: block `b` writes its partial sum of reduction
//!   `j` to `red[j * gridDim.x + b]` (`multi_name`: `red[(t * R + j) * gridDim.x + b]` for
//!   table entry `t = blockIdx.y`), and the host adds the partials in block order
//!   ([`sum_partials`]). The host needs the totals anyway: they feed the next stage's scalars.
//!   No atomics, so every architecture NVRTC targets works. `red` may be null when `R = 0`.
//!
//! # Numerics
//!
//! `+ - * /` and `sqrt` use CUDA's `_rn` intrinsics, never contracted into FMAs, so an `f32`
//! stage rounds exactly like the Rust loop; `exp`, `ln` and `pow` are CUDA's (within 1–2 ulp of
//! the CPU's libm); reduction totals are summed in `double` in another order. `sign`, `max`,
//! `min`, `clamp`, `lerp` and `rsqrt` follow [`crate::ops`]. Never compile the sources with
//! `--use_fast_math`.
//!
//! # Multi-tensor launches
//!
//! `multi_name` updates many tensors with one launch: `blockIdx.y` selects a [`pack_table_entry`]
//! row (at most [`MAX_MULTI_TENSORS`] per launch) whose `params` field indexes the `Params` array
//! (each tensor has its own step count, hence its own bias corrections). `gridDim.x` is sized
//! for the largest tensor of the launch and blocks past a smaller tensor's end exit at once, so
//! group tensors of similar size. It pays for tensors under [`MULTI_TENSOR_MAX_NUMEL`]
//! (64 Ki) elements: a launch costs ~3–5 µs, more than moving such a tensor's bytes (AdamW moves
//! 28 bytes per `f32` element: 1.8 MB for 64 Ki elements, ~0.5 µs at H100/H200 bandwidth).
//! Models with many biases, norms and small layers spend most of a per-tensor step in launch
//! overhead; [`multi_tensor_groups`] splits a step's tensors accordingly.
//!
//! # Running (feature `cuda`)
//!
//! `cuda::device` compiles a source with NVRTC once per process (cached by source hash), loads it
//! into a cudarc `CudaDevice` once per device, and launches on that device's stream — the stream
//! dfdx's `Cuda` device runs all its kernels on — so launches are ordered with dfdx's work.
//!
//! # Device steps
//!
//! `step` (crate-private) runs a whole optimizer step with every element-wise
//! buffer on a device ([`backend::Backend`]): one multi-tensor launch per generated loop,
//! matrix primitives through a per-parameter device link, state kept on the device between
//! steps. [`emulate::update_emulated`] runs it on the emulated device ([`host::HostBackend`]),
//! bit for bit the CPU path (`tests/tests/it/cuda_emulated.rs`). `gpu::CudaBackend` (feature
//! `cuda`) is the cudarc backend, on which `DfdxUpdate::update` steps dfdx `Cuda` models (the
//! master-copy driver of `crate::dfdx`); `docs/gpu.md` says how it is checked and what the GPU
//! run must show.

/// The CUDA C source of one planned stage of a generated optimizer, with what it takes to launch
/// it (see the [module docs](self) for the ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaKernelSource {
    /// The optimizer's name (`"AdamW"`).
    pub optimizer: &'static str,
    /// Index of the rule (as in [`DslOptimizer::route`](crate::DslOptimizer::route)).
    pub rule: usize,
    /// Index of the flag combination: bit `j` is the value of the `j`-th entry of `flags`.
    pub variant: usize,
    /// `(flag name, value)` for each flag the rule reads, in the order of `variant`'s bits.
    pub flags: &'static [(&'static str, bool)],
    /// Index of the stage (loop) within the rule and flag combination.
    pub stage: usize,
    /// Number of stages of this rule and flag combination.
    pub stages: usize,
    /// Entry point updating one tensor (the same in both sources).
    pub name: &'static str,
    /// Entry point updating a table of tensors (the same in both sources).
    pub multi_name: &'static str,
    /// Complete CUDA C source with `T = float`.
    pub source_f32: &'static str,
    /// Complete CUDA C source with `T = double`.
    pub source_f64: &'static str,
    /// Number of scalars in its `Params` record (the Rust kernel's `scalars.len()`).
    pub n_scalars: usize,
    /// Number of state and scratch streams, `b0…` (the Rust kernel's `bufs.len()`).
    pub n_bufs: usize,
    /// Number of reductions (the Rust kernel's `reductions`).
    pub n_reductions: usize,
    /// Whether this stage writes the parameter (the last stage does).
    pub writes_param: bool,
    /// The state slots (`ParamState::buffers` indices) among the streams, ascending: `b0…`
    /// are these slots, then [`temps`](Self::temps).
    pub slots: &'static [usize],
    /// The scratch buffers (`ParamState::temps` indices) among the streams, ascending, after
    /// the slots.
    pub temps: &'static [usize],
}

impl CudaKernelSource {
    /// The source for element type `E` (`f32` or `f64`), or `None` for another type.
    pub fn source_for<E: crate::Float>(&self) -> Option<&'static str> {
        match E::BYTES {
            4 => Some(self.source_f32),
            8 => Some(self.source_f64),
            _ => None,
        }
    }

    /// Number of arguments of the single-tensor entry point: the `Params` pointer, `p`, `g`,
    /// the `n_bufs` streams and `red`.
    pub fn n_args(&self) -> usize {
        4 + self.n_bufs
    }

    /// Bytes of one `Params` record for elements of `elem_bytes` bytes (see [`pack_params`]).
    pub fn params_stride(&self, elem_bytes: usize) -> usize {
        params_stride(self.n_scalars, elem_bytes)
    }

    /// Bytes of one `TensorEntry` row (see [`pack_table_entry`]).
    pub fn table_stride(&self) -> usize {
        table_stride(self.n_bufs)
    }
}

/// Threads per block of every launch (a multiple of 32, as the block reduction requires).
pub const BLOCK: u32 = 256;

/// Most blocks of a grid-stride launch when the device's SM count is unknown.
pub const MAX_BLOCKS: u32 = 1024;

/// Most state and scratch streams a stage may have to be launched (cudarc's `LaunchAsync`
/// takes at most 12 arguments, 4 of which are fixed).
pub const MAX_BUFS: usize = 8;

/// Tensors of at most this many elements are worth batching into multi-tensor launches.
pub const MULTI_TENSOR_MAX_NUMEL: usize = 1 << 16;

/// Most tensors in one multi-tensor launch (`gridDim.y` limit).
pub const MAX_MULTI_TENSORS: usize = 65_535;

/// Blocks for a grid-stride launch over `n` elements: one per [`BLOCK`] elements, at least 1, at
/// most `max_blocks`.
pub fn grid_blocks(n: usize, max_blocks: u32) -> u32 {
    let want = n.div_ceil(BLOCK as usize).max(1);
    want.min(max_blocks.max(1) as usize) as u32
}

/// The launch geometry of a stage's multi-tensor entry point (`multi_name`): one row of the
/// launch table per `gridDim.y`, [`grid_blocks`] blocks of [`BLOCK`] threads per row, and one
/// `f64` partial per reduction, block and row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableGeometry {
    /// Blocks per row (`gridDim.x`).
    pub blocks: u32,
    /// Partials per row: reductions × blocks.
    pub width: usize,
    /// Length of the partials buffer (`width × rows`, at least 1: a device allocation is never
    /// empty).
    pub partials: usize,
    /// `gridDim` (blocks, rows, 1).
    pub grid: (u32, u32, u32),
    /// `blockDim` ([`BLOCK`], 1, 1).
    pub block: (u32, u32, u32),
}

/// [`TableGeometry`] for `rows` table rows of at most `nmax` elements each, for a source with
/// `n_reductions` reductions, on a device that runs at most `max_blocks` blocks per row.
/// `rows` is at most [`MAX_MULTI_TENSORS`] (the caller chunks the table).
pub fn table_geometry(
    n_reductions: usize,
    nmax: usize,
    rows: usize,
    max_blocks: u32,
) -> TableGeometry {
    let blocks = grid_blocks(nmax, max_blocks);
    let width = n_reductions * blocks as usize;
    TableGeometry {
        blocks,
        width,
        partials: (width * rows).max(1),
        grid: (blocks, rows as u32, 1),
        block: (BLOCK, 1, 1),
    }
}

/// Bytes of one `Params` record: `n` (8 bytes), then `max(n_scalars, 1)` elements, rounded up
/// to 8 bytes.
pub fn params_stride(n_scalars: usize, elem_bytes: usize) -> usize {
    (8 + n_scalars.max(1) * elem_bytes).div_ceil(8) * 8
}

/// Appends one `Params` record (`n`, then the scalars in the element type, zero padded) to
/// `out`, in the device's (little-endian) byte order.
///
/// # Panics
/// If `scalars` has more than `n_scalars` entries or `E` is neither `f32` nor `f64`.
pub fn pack_params<E: crate::Float>(n: usize, scalars: &[E], n_scalars: usize, out: &mut Vec<u8>) {
    assert!(scalars.len() <= n_scalars.max(1), "too many scalars");
    let start = out.len();
    out.extend_from_slice(&(n as u64).to_le_bytes());
    for &s in scalars {
        match E::BYTES {
            4 => out.extend_from_slice(&(s.as_f64() as f32).to_le_bytes()),
            8 => out.extend_from_slice(&s.as_f64().to_le_bytes()),
            b => panic!("no CUDA element type of {b} bytes"),
        }
    }
    out.resize(start + params_stride(n_scalars, E::BYTES), 0);
}

/// Bytes of one `TensorEntry` row: `p`, `g`, `max(n_bufs, 1)` stream pointers and the index of
/// the tensor's `Params` record, 8 bytes each.
pub fn table_stride(n_bufs: usize) -> usize {
    8 * (3 + n_bufs.max(1))
}

/// Appends one `TensorEntry` row for a multi-tensor launch: device addresses of the parameter,
/// the gradient and the `n_bufs` streams, and the index of this tensor's `Params` record.
///
/// # Panics
/// If `bufs` has more than `n_bufs` entries.
pub fn pack_table_entry(
    param: u64,
    grad: u64,
    bufs: &[u64],
    n_bufs: usize,
    params_index: u64,
    out: &mut Vec<u8>,
) {
    assert!(bufs.len() <= n_bufs.max(1), "too many streams");
    out.extend_from_slice(&param.to_le_bytes());
    out.extend_from_slice(&grad.to_le_bytes());
    for j in 0..n_bufs.max(1) {
        out.extend_from_slice(&bufs.get(j).copied().unwrap_or(0).to_le_bytes());
    }
    out.extend_from_slice(&params_index.to_le_bytes());
}

/// Totals of `n_reductions` reductions from per-block partial sums laid out as
/// `partials[j * blocks + b]`, each added in block order (deterministic).
pub fn sum_partials(partials: &[f64], n_reductions: usize, blocks: usize) -> Vec<f64> {
    (0..n_reductions)
        .map(|j| {
            partials
                .get(j * blocks..(j + 1) * blocks)
                .map_or(0.0, |p| p.iter().sum())
        })
        .collect()
}

/// Splits a step's tensors (by element count) into tensors launched one by one and groups for
/// multi-tensor launches: tensors of at most [`MULTI_TENSOR_MAX_NUMEL`] elements, sorted by
/// size so each group's grid fits its tensors, at most [`MAX_MULTI_TENSORS`] per group. Returns
/// `(singles, groups)` as indices into `lens`; a group of one tensor is launched singly.
pub fn multi_tensor_groups(lens: &[usize]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut singles: Vec<usize> = Vec::new();
    let mut small: Vec<usize> = Vec::new();
    for (i, &n) in lens.iter().enumerate() {
        if n <= MULTI_TENSOR_MAX_NUMEL {
            small.push(i);
        } else {
            singles.push(i);
        }
    }
    small.sort_by_key(|&i| lens[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for chunk in small.chunks(MAX_MULTI_TENSORS) {
        if chunk.len() == 1 {
            singles.push(chunk[0]);
        } else {
            groups.push(chunk.to_vec());
        }
    }
    singles.sort_unstable();
    (singles, groups)
}

/// FNV-1a hash of a source: names its compiled module (stable across processes and Rust
/// versions, unlike `DefaultHasher`).
pub fn source_hash(source: &str) -> u64 {
    source.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub mod backend;
pub(crate) mod barrier;
pub mod emulate;
pub mod host;
pub(crate) mod link;
pub mod ns;
pub(crate) mod step;
pub(crate) mod store;

/// For backend crates only (optim-candle's `candle-cuda`): the device step driver over a
/// [`Backend`](backend::Backend) implemented outside this crate. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::backend::Backend;
    use super::step::step_device;
    pub use super::step::DevEntry;
    use super::store::take_store;
    use crate::error::OptimError;
    use crate::optimizer::{DslOptimizer, LocalSync};
    use crate::Float;

    /// One step of `opt` over `entries` on `backend` through the device step driver (as
    /// [`update_emulated`](super::emulate::update_emulated) runs it on the emulated device): the
    /// optimizer's device store is reused when it is of type `B` and `same(its backend)`, else
    /// the state held elsewhere is brought back to the host first and a new store starts on
    /// `backend`; the store stays in the optimizer's state after the step. Every entry's
    /// buffers are handed back in it, also on error.
    ///
    /// # Errors
    /// As [`DslOptimizer::update_slices`]; [`OptimError::Device`] for a device failure or a
    /// loop without a CUDA twin. Validation errors modify nothing.
    pub fn step_on_backend<E, O, B>(
        opt: &mut O,
        backend: B,
        same: impl Fn(&B) -> bool,
        entries: &mut [DevEntry<'_, B::Buf>],
    ) -> Result<(), OptimError>
    where
        E: Float,
        O: DslOptimizer<E>,
        B: Backend<E>,
    {
        let mut store = take_store(opt.opt_state_mut(), backend, same)?;
        let result = step_device(opt, &mut store, entries, &mut LocalSync);
        opt.opt_state_mut().device.0 = Some(Box::new(store));
        result
    }
}

#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod gpu;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_records_are_8_byte_aligned() {
        assert_eq!(params_stride(0, 4), 16);
        assert_eq!(params_stride(1, 4), 16);
        assert_eq!(params_stride(3, 4), 24);
        assert_eq!(params_stride(3, 8), 32);
        let mut out = Vec::new();
        pack_params(7usize, &[1.5f32, -2.0, 3.0], 3, &mut out);
        assert_eq!(out.len(), 24);
        assert_eq!(&out[..8], &7u64.to_le_bytes());
        assert_eq!(&out[8..12], &1.5f32.to_le_bytes());
        assert_eq!(&out[16..20], &3.0f32.to_le_bytes());
        assert_eq!(&out[20..], &[0; 4]);
        pack_params(9usize, &[0.25f64], 1, &mut out);
        assert_eq!(out.len(), 24 + 16);
        assert_eq!(&out[32..], &0.25f64.to_le_bytes());
    }

    #[test]
    fn table_rows_hold_pointers_then_the_params_index() {
        let mut out = Vec::new();
        pack_table_entry(1, 2, &[3, 4], 2, 5, &mut out);
        assert_eq!(out.len(), table_stride(2));
        let words: Vec<u64> = out
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, [1, 2, 3, 4, 5]);
        let mut out = Vec::new();
        pack_table_entry(1, 2, &[], 0, 9, &mut out);
        assert_eq!(out.len(), table_stride(0));
        assert_eq!(out.len(), 32);
    }

    #[test]
    fn partials_are_summed_per_reduction() {
        let p = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        assert_eq!(sum_partials(&p, 2, 3), [6.0, 60.0]);
        assert_eq!(sum_partials(&p, 0, 3), Vec::<f64>::new());
    }

    #[test]
    fn grids_and_groups() {
        assert_eq!(grid_blocks(0, MAX_BLOCKS), 1);
        assert_eq!(grid_blocks(257, MAX_BLOCKS), 2);
        assert_eq!(grid_blocks(1 << 30, MAX_BLOCKS), MAX_BLOCKS);
        // 3 rows of at most 300 elements: 2 blocks of 256 threads per row, 2 reductions
        let g = table_geometry(2, 300, 3, MAX_BLOCKS);
        assert_eq!((g.blocks, g.width, g.partials), (2, 4, 12));
        assert_eq!((g.grid, g.block), ((2, 3, 1), (256, 1, 1)));
        assert_eq!(table_geometry(0, 300, 3, MAX_BLOCKS).partials, 1);
        let (singles, groups) = multi_tensor_groups(&[1 << 20, 10, 1 << 17, 300, 5]);
        assert_eq!(singles, [0, 2]);
        assert_eq!(groups, [vec![4, 1, 3]]);
        let (singles, groups) = multi_tensor_groups(&[1 << 20, 10]);
        assert_eq!(singles, [0, 1]);
        assert!(groups.is_empty());
    }

    #[test]
    fn source_hash_is_fnv1a() {
        assert_eq!(source_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(source_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
