//! What the device step driver (`super::step`) needs from a device: buffers, transfers, the
//! multi-tensor launch of a generated stage, and (optionally) GEMMs for Newton–Schulz.
//!
//! [`HostBackend`](super::host::HostBackend) emulates a device on the host (buffers are `Vec`s,
//! a stage runs its Rust twin), so that the driver, the launch plan and the state store are
//! tested on any machine, bit for bit against the CPU path.
//! `CudaBackend` (feature `cuda`) is the GPU implementation: a thin
//! layer over cudarc launching the CUDA twins.

use super::CudaKernelSource;
use crate::error::OptimError;
use crate::kernel::KernelFn;
use crate::Float;

/// [`OptimError::Device`] for a failed device call: `what` was being done, `e` is the driver's
/// error.
pub fn device_err(what: &str, e: impl core::fmt::Debug) -> OptimError {
    OptimError::Device(format!("{what}: {e:?}"))
}

/// [`OptimError::ShapeMismatch`] for a device buffer of `len` elements where `want` are needed.
pub fn short_buffer(len: usize, want: usize) -> OptimError {
    OptimError::ShapeMismatch {
        param: "(device buffer)".into(),
        detail: format!("a buffer of {len} elements, {want} needed"),
    }
}

/// Whether a fill value is `+0.0`, whose bytes are all zero (a zeroing allocation or memset
/// serves it; `-0.0` does not).
pub fn is_pos_zero<E: Float>(v: E) -> bool {
    let x = v.as_f64();
    x == 0.0 && x.is_sign_positive()
}

/// A launch's reduction totals, `per` per row (the CUDA source's `n_reductions`), as the step
/// driver reads them: `want` per row (the stage's generated count, at most `MAX_REDUCTIONS`)
/// for `rows` rows, a missing total read as 0.
pub fn totals_per_row(totals: Vec<f64>, per: usize, want: usize, rows: usize) -> Vec<f64> {
    if per == want {
        return totals;
    }
    totals
        .chunks(per.max(1))
        .take(rows)
        .flat_map(|r| (0..want).map(move |j| r.get(j).copied().unwrap_or(0.0)))
        .collect()
}

/// The loop of one stage, in both forms: the Rust twin and the CUDA source.
#[derive(Clone, Copy)]
pub struct StageKernel<E> {
    /// The Rust loop (`dispatch::<E, K>`).
    pub rust: KernelFn<E>,
    /// Its CUDA twin (`None` for a hand-written kernel: only a host backend runs it).
    pub cuda: Option<&'static CudaKernelSource>,
    /// Number of reduction totals the loop produces.
    pub reductions: usize,
    /// Number of state and scratch streams (`b0…`).
    pub n_bufs: usize,
}

impl<E> core::fmt::Debug for StageKernel<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StageKernel")
            .field("cuda", &self.cuda.map(|c| c.name))
            .field("reductions", &self.reductions)
            .field("n_bufs", &self.n_bufs)
            .finish()
    }
}

/// One tensor of a stage launch: its buffers and its hoisted scalars.
pub struct StageTensor<'a, B, E> {
    /// The parameter (the driver's copy; the last stage writes it).
    pub param: &'a mut B,
    /// The gradient.
    pub grad: &'a B,
    /// State and scratch streams, in the stage's order (slots ascending, then scratch).
    pub bufs: Vec<&'a mut B>,
    /// The stage's scalars for this tensor.
    pub scalars: &'a [E],
}

/// One row of a multi-tensor launch: elements `start .. start + len` of tensor `tensor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Index into the launch's tensors.
    pub tensor: usize,
    /// First element.
    pub start: usize,
    /// Number of elements.
    pub len: usize,
}

/// Cuts tensors of `lens` elements into rows of at most `chunk` elements, tensor by tensor, in
/// order (a tensor of 0 elements gets one empty row, so that every tensor has a row and its
/// reductions a total). Every row of a tensor runs in the same launch, and the driver adds a
/// tensor's row totals in row order.
pub fn rows(lens: &[usize], chunk: usize) -> Vec<Row> {
    let chunk = chunk.max(1);
    let mut out = Vec::new();
    for (tensor, &n) in lens.iter().enumerate() {
        if n == 0 {
            out.push(Row {
                tensor,
                start: 0,
                len: 0,
            });
        }
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            out.push(Row { tensor, start, len });
            start += len;
        }
    }
    out
}

/// A device the step driver runs on. Every operation is ordered on one stream; only
/// [`read`](Self::read), the reduction totals of [`run_stage`](Self::run_stage) and
/// [`all_finite`](Self::all_finite) wait for the device.
pub trait Backend<E: Float>: Clone + Send + Sync + 'static {
    /// A buffer of `E` on the device.
    type Buf: Send + Sync + 'static;

    /// A short name (`"host"`, `"cuda:0 (NVIDIA H100 80GB HBM3)"`).
    fn name(&self) -> String;
    /// An empty buffer (a placeholder while a buffer is lent out).
    ///
    /// # Errors
    /// [`OptimError::Device`] when the device cannot make one (a GPU allocates a 0-byte handle).
    fn empty(&self) -> Result<Self::Buf, OptimError>;
    /// Number of elements of `buf`.
    fn len(buf: &Self::Buf) -> usize;
    /// A new buffer of `n` elements, each `fill`.
    ///
    /// # Errors
    /// [`OptimError::Device`] when the device cannot allocate.
    fn alloc(&self, n: usize, fill: E) -> Result<Self::Buf, OptimError>;
    /// A new buffer holding `data`.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn upload(&self, data: &[E]) -> Result<Self::Buf, OptimError>;
    /// Overwrites `dst` (of `data.len()` elements) with `data`.
    ///
    /// # Errors
    /// [`OptimError::Device`]; [`OptimError::ShapeMismatch`] for another length.
    fn write(&self, dst: &mut Self::Buf, data: &[E]) -> Result<(), OptimError>;
    /// `src` on the host (waits for the device).
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn read(&self, src: &Self::Buf) -> Result<Vec<E>, OptimError>;
    /// A copy of `src` on the device.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn duplicate(&self, src: &Self::Buf) -> Result<Self::Buf, OptimError>;
    /// Writes `line` broadcast over `dst` (`rows × cols` row-major): `dst[i] = line[i / cols]`
    /// when `row`, else `line[i % cols]` (as [`crate::matrix::broadcast`]).
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn broadcast(
        &self,
        line: &[E],
        dst: &mut Self::Buf,
        row: bool,
        cols: usize,
    ) -> Result<(), OptimError>;
    /// For each buffer, whether every element is finite.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn all_finite(&self, bufs: &[&Self::Buf]) -> Result<Vec<bool>, OptimError>;
    /// Most elements in one row of a multi-tensor launch (see [`rows`]).
    fn chunk_len(&self) -> usize;
    /// Runs `stage` over `rows` of `tensors` (all rows in launches of the same stage, in order)
    /// and returns the reduction totals of each row (`rows.len() × stage.reductions`).
    ///
    /// # Errors
    /// [`OptimError::Device`] for a driver error or a stage this backend cannot run.
    fn run_stage(
        &self,
        stage: &StageKernel<E>,
        rows: &[Row],
        tensors: &mut [StageTensor<'_, Self::Buf, E>],
    ) -> Result<Vec<f64>, OptimError>;
    /// The GEMM family for Newton–Schulz on the device, if the backend has it.
    fn blas(&self) -> Option<&dyn super::ns::MatOps<E, Self::Buf>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cut_each_tensor_in_order() {
        let r = rows(&[5, 0, 2], 2);
        let want = [
            Row {
                tensor: 0,
                start: 0,
                len: 2,
            },
            Row {
                tensor: 0,
                start: 2,
                len: 2,
            },
            Row {
                tensor: 0,
                start: 4,
                len: 1,
            },
            Row {
                tensor: 1,
                start: 0,
                len: 0,
            },
            Row {
                tensor: 2,
                start: 0,
                len: 2,
            },
        ];
        assert_eq!(r, want);
        assert_eq!(rows(&[3], 0).len(), 3, "a chunk of 0 is taken as 1");
    }

    #[test]
    fn totals_are_regrouped_per_row() {
        // 3 totals per row from the launch, the driver reads 2: the third is dropped
        let t = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(totals_per_row(t.clone(), 3, 2, 2), [1.0, 2.0, 4.0, 5.0]);
        // 1 per row, 2 read: the missing one is 0
        assert_eq!(
            totals_per_row(vec![1.0, 2.0], 1, 2, 2),
            [1.0, 0.0, 2.0, 0.0]
        );
        // same count: unchanged
        assert_eq!(totals_per_row(t.clone(), 3, 3, 2), t);
    }
}
