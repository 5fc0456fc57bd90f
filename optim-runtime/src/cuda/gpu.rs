//! [`CudaBackend`]: the device step driver's [`Backend`] on a GPU, through cudarc 0.9 (the
//! version dfdx 0.13 links; feature `cuda`).
//!
//! - Stages: each generated stage is compiled with NVRTC once per process and loaded once per
//!   device ([`CudaStage::load`]); the backend caches the loaded stages per optimizer stage and
//!   element type, so a step compiles nothing after the first.
//! - [`run_stage`](Backend::run_stage) is one launch of the stage's multi-tensor entry point
//!   per [`MAX_MULTI_TENSORS`](super::MAX_MULTI_TENSORS) rows: each row of the driver's plan
//!   ([`super::backend::rows`]) is a table entry whose pointers are offset to the row's first
//!   element, with its own packed `Params` record (the tensor's scalars, packed once per stage
//!   launch). Reduction totals come back (one synchronising read) only when the stage has
//!   reductions.
//! - Buffers are cudarc `CudaSlice`s on the stream of the `CudaDevice` dfdx runs on, so every
//!   launch, copy and dfdx op is ordered on one stream.
//! - Newton–Schulz ([`MatOps`]): GEMMs through cuBLAS; the three whole-matrix scalars of its
//!   normalisation (`max |x|`, `Σ (x/amax)²` and the scaling) take one host round trip each
//!   (read, compute in `f64`, write), as do [`Backend::broadcast`] and
//!   [`Backend::all_finite`] (a read of every gradient, only under a non-finite policy other
//!   than `Propagate`). Device kernels for those are left (`docs/gpu.md`).
//!
//! Every call returns [`OptimError::Device`] on a driver, NVRTC or cuBLAS error; nothing
//! panics. Buffer lengths are checked before cudarc would assert on them.

use super::backend::{
    device_err, is_pos_zero, short_buffer as short, totals_per_row, Backend, Row, StageKernel,
    StageTensor,
};
use super::device::{CudaDevice, CudaSlice, CudaStage};
use super::ns::{GemmShape, MatOps};
use crate::error::OptimError;
use crate::Float;
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{DeviceRepr, DeviceSlice, ValidAsZeroBits};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Element types the GPU backend runs (`f32`, `f64`).
pub trait CudaFloat: Float + DeviceRepr + ValidAsZeroBits + Unpin + dfdx::dtypes::Unit {
    /// cuBLAS `gemm` for this type.
    ///
    /// # Safety
    /// As cudarc's [`Gemm::gemm`]: the buffers hold what `cfg` addresses.
    unsafe fn gemm(
        blas: &CudaBlas,
        cfg: GemmConfig<Self>,
        a: &CudaSlice<Self>,
        b: &CudaSlice<Self>,
        c: &mut CudaSlice<Self>,
    ) -> Result<(), OptimError>;
    /// The `CudaSlice` inside dfdx's storage of a `Cuda` buffer (a gradient slot).
    fn slice_of(
        v: &mut <dfdx::tensor::Cuda as dfdx::tensor::Storage<Self>>::Vec,
    ) -> &mut CudaSlice<Self>;
}

macro_rules! cuda_float {
    ($t:ty) => {
        impl CudaFloat for $t {
            unsafe fn gemm(
                blas: &CudaBlas,
                cfg: GemmConfig<Self>,
                a: &CudaSlice<Self>,
                b: &CudaSlice<Self>,
                c: &mut CudaSlice<Self>,
            ) -> Result<(), OptimError> {
                // SAFETY: forwarded from the caller.
                unsafe { Gemm::gemm(blas, cfg, a, b, c) }.map_err(|e| device_err("cuBLAS gemm", e))
            }
            fn slice_of(
                v: &mut <dfdx::tensor::Cuda as dfdx::tensor::Storage<Self>>::Vec,
            ) -> &mut CudaSlice<Self> {
                v
            }
        }
    };
}
cuda_float!(f32);
cuda_float!(f64);

/// Loaded stages by (element type, entry point, source hash).
type StageCache = HashMap<(TypeId, &'static str, u64), Arc<dyn Any + Send + Sync>>;

/// The step driver's device on a GPU (see the [module docs](self)). Cloning shares the device,
/// the cuBLAS handle and the stage cache.
#[derive(Clone)]
pub struct CudaBackend {
    dev: Arc<CudaDevice>,
    blas: Arc<CudaBlas>,
    stages: Arc<Mutex<StageCache>>,
    chunk: usize,
}

impl core::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("ordinal", &self.dev.ordinal())
            .field("chunk", &self.chunk)
            .finish()
    }
}

/// Default [`Backend::chunk_len`]: rows of 1 Mi elements (a 100 M-element tensor is 100 rows
/// of one launch; 4 elements per thread at the grid's 1024 blocks of 256 threads).
pub const GPU_CHUNK: usize = 1 << 20;

impl CudaBackend {
    /// The backend on `dev` (pass the `CudaDevice` dfdx runs on, e.g. a gradient buffer's
    /// `CudaSlice::device()`, so that everything is ordered on its stream), with a cuBLAS
    /// handle on that stream.
    ///
    /// # Errors
    /// [`OptimError::Device`] when cuBLAS cannot be initialised.
    pub fn new(dev: Arc<CudaDevice>) -> Result<Self, OptimError> {
        let blas = CudaBlas::new(dev.clone()).map_err(|e| device_err("cuBLAS init", e))?;
        Ok(CudaBackend {
            dev,
            blas: Arc::new(blas),
            stages: Arc::default(),
            chunk: GPU_CHUNK,
        })
    }

    /// The backend on GPU `ordinal` (a new `CudaDevice`: use [`new`](Self::new) with dfdx's
    /// device to share its stream).
    ///
    /// # Errors
    /// [`OptimError::Device`] when there is no such GPU or no driver.
    pub fn on_ordinal(ordinal: usize) -> Result<Self, OptimError> {
        Self::new(CudaDevice::new(ordinal).map_err(|e| device_err("CUDA device", e))?)
    }

    /// With rows of `chunk` elements (at least 1).
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// The device.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Whether `dev` is this backend's device (the same `CudaDevice`, hence the same stream).
    pub fn is_on(&self, dev: &Arc<CudaDevice>) -> bool {
        Arc::ptr_eq(&self.dev, dev)
    }

    /// Waits for every queued operation.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    pub fn synchronize(&self) -> Result<(), OptimError> {
        self.dev
            .synchronize()
            .map_err(|e| device_err("synchronize", e))
    }

    fn stage<E: CudaFloat>(
        &self,
        kernel: &StageKernel<E>,
    ) -> Result<Arc<CudaStage<E>>, OptimError> {
        let source = kernel.cuda.ok_or_else(|| {
            OptimError::Device(
                "a hand-written loop has no CUDA twin; it cannot run on a GPU".into(),
            )
        })?;
        let text = source.source_for::<E>().unwrap_or("");
        let key = (
            TypeId::of::<E>(),
            source.multi_name,
            super::source_hash(text),
        );
        let mut cache = self
            .stages
            .lock()
            .map_err(|e| device_err("stage cache", e))?;
        if let Some(s) = cache
            .get(&key)
            .and_then(|s| s.clone().downcast::<CudaStage<E>>().ok())
        {
            return Ok(s);
        }
        let loaded = Arc::new(CudaStage::<E>::load(&self.dev, source)?);
        cache.insert(key, loaded.clone());
        Ok(loaded)
    }

    fn upload_into<E: CudaFloat>(
        &self,
        dst: &mut CudaSlice<E>,
        data: &[E],
    ) -> Result<(), OptimError> {
        if data.len() > dst.len() {
            return Err(short(dst.len(), data.len()));
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut(0..data.len());
        self.dev
            .htod_sync_copy_into(data, &mut view)
            .map_err(|e| device_err("upload", e))
    }

    fn read_n<E: CudaFloat>(&self, src: &CudaSlice<E>, n: usize) -> Result<Vec<E>, OptimError> {
        if n > src.len() {
            return Err(short(src.len(), n));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut out = vec![E::zero(); n];
        self.dev
            .dtoh_sync_copy_into(&src.slice(0..n), &mut out)
            .map_err(|e| device_err("download", e))?;
        Ok(out)
    }
}

impl<E: CudaFloat> Backend<E> for CudaBackend {
    type Buf = CudaSlice<E>;

    fn name(&self) -> String {
        format!("cuda:{}", self.dev.ordinal())
    }
    fn empty(&self) -> Result<CudaSlice<E>, OptimError> {
        self.dev.null().map_err(|e| device_err("empty buffer", e))
    }
    fn len(buf: &CudaSlice<E>) -> usize {
        buf.len()
    }
    fn alloc(&self, n: usize, fill: E) -> Result<CudaSlice<E>, OptimError> {
        if is_pos_zero(fill) {
            return self.dev.alloc_zeros(n).map_err(|e| device_err("alloc", e));
        }
        self.upload(&vec![fill; n])
    }
    fn upload(&self, data: &[E]) -> Result<CudaSlice<E>, OptimError> {
        if data.is_empty() {
            return Backend::<E>::empty(self);
        }
        self.dev
            .htod_sync_copy(data)
            .map_err(|e| device_err("upload", e))
    }
    fn write(&self, dst: &mut CudaSlice<E>, data: &[E]) -> Result<(), OptimError> {
        if dst.len() != data.len() {
            return Err(OptimError::ShapeMismatch {
                param: "(device buffer)".into(),
                detail: format!("writing {} elements into {}", data.len(), dst.len()),
            });
        }
        self.upload_into(dst, data)
    }
    fn read(&self, src: &CudaSlice<E>) -> Result<Vec<E>, OptimError> {
        self.read_n(src, src.len())
    }
    fn duplicate(&self, src: &CudaSlice<E>) -> Result<CudaSlice<E>, OptimError> {
        if src.len() == 0 {
            return Backend::<E>::empty(self);
        }
        src.try_clone().map_err(|e| device_err("copy", e))
    }
    fn broadcast(
        &self,
        line: &[E],
        dst: &mut CudaSlice<E>,
        row: bool,
        cols: usize,
    ) -> Result<(), OptimError> {
        let mut host = vec![E::zero(); dst.len()];
        crate::matrix::broadcast(line, &mut host, row, cols);
        self.upload_into(dst, &host)
    }
    fn all_finite(&self, bufs: &[&CudaSlice<E>]) -> Result<Vec<bool>, OptimError> {
        bufs.iter()
            .map(|b| Ok(crate::optimizer::all_finite(&self.read(b)?)))
            .collect()
    }
    fn chunk_len(&self) -> usize {
        self.chunk
    }
    fn run_stage(
        &self,
        stage: &StageKernel<E>,
        rows: &[Row],
        tensors: &mut [StageTensor<'_, CudaSlice<E>, E>],
    ) -> Result<Vec<f64>, OptimError> {
        let loaded = self.stage(stage)?;
        let totals = loaded.run_rows(rows, tensors)?;
        let per = loaded.source().n_reductions;
        Ok(totals_per_row(totals, per, stage.reductions, rows.len()))
    }
    fn blas(&self) -> Option<&dyn MatOps<E, CudaSlice<E>>> {
        Some(self)
    }
}

fn dim(x: usize) -> Result<i32, OptimError> {
    i32::try_from(x).map_err(|_| OptimError::Device(format!("GEMM dimension {x} exceeds i32")))
}

impl<E: CudaFloat> MatOps<E, CudaSlice<E>> for CudaBackend {
    fn gemm(
        &self,
        s: GemmShape,
        alpha: E,
        a: &CudaSlice<E>,
        b: &CudaSlice<E>,
        beta: E,
        c: &mut CudaSlice<E>,
    ) -> Result<(), OptimError> {
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        // what each operand addresses (column-major, leading dimension ld)
        let [(ar, _), (br, _)] = s.stored();
        let [na, nb, nc] = s.extents();
        if ld_short(s.lda, ar) || ld_short(s.ldb, br) || ld_short(s.ldc, s.m) {
            return Err(OptimError::Device(
                "GEMM leading dimension too small".into(),
            ));
        }
        if a.len() < na || b.len() < nb || c.len() < nc {
            return Err(short(c.len(), nc));
        }
        let cfg = GemmConfig {
            transa: op(s.ta),
            transb: op(s.tb),
            m: dim(s.m)?,
            n: dim(s.n)?,
            k: dim(s.k)?,
            alpha,
            lda: dim(s.lda)?,
            ldb: dim(s.ldb)?,
            beta,
            ldc: dim(s.ldc)?,
        };
        // SAFETY: every operand holds what `cfg` addresses (checked above) and the handle runs
        // on the device's stream, after the writes that produced the operands.
        unsafe { E::gemm(&self.blas, cfg, a, b, c) }
    }
    fn absmax(&self, x: &CudaSlice<E>, n: usize) -> Result<(f64, bool), OptimError> {
        let v = self.read_n(x, n)?;
        let mut amax = 0.0f64;
        let mut finite = true;
        for e in v {
            let e = e.as_f64();
            finite &= e.is_finite();
            amax = amax.max(e.abs());
        }
        Ok((amax, finite))
    }
    fn sumsq_scaled(&self, x: &CudaSlice<E>, n: usize, scale: f64) -> Result<f64, OptimError> {
        Ok(self
            .read_n(x, n)?
            .iter()
            .map(|e| {
                let y = e.as_f64() / scale;
                y * y
            })
            .sum())
    }
    fn normalize(
        &self,
        x: &CudaSlice<E>,
        dst: &mut CudaSlice<E>,
        n: usize,
        a: f64,
        d: f64,
    ) -> Result<(), OptimError> {
        let v: Vec<E> = self
            .read_n(x, n)?
            .iter()
            .map(|e| E::of_f64((e.as_f64() / a) / d))
            .collect();
        self.upload_into(dst, &v)
    }
    fn copy(&self, src: &CudaSlice<E>, dst: &mut CudaSlice<E>, n: usize) -> Result<(), OptimError> {
        if src.len() < n || dst.len() < n {
            return Err(short(src.len().min(dst.len()), n));
        }
        if n == 0 {
            return Ok(());
        }
        let mut to = dst.slice_mut(0..n);
        self.dev
            .dtod_copy(&src.slice(0..n), &mut to)
            .map_err(|e| device_err("copy", e))
    }
    fn fill(&self, dst: &mut CudaSlice<E>, n: usize, v: E) -> Result<(), OptimError> {
        if dst.len() < n {
            return Err(short(dst.len(), n));
        }
        if n == 0 {
            return Ok(());
        }
        if is_pos_zero(v) {
            let mut to = dst.slice_mut(0..n);
            return self
                .dev
                .memset_zeros(&mut to)
                .map_err(|e| device_err("fill", e));
        }
        self.upload_into(dst, &vec![v; n])
    }
    fn scratch(&self, n: usize) -> Result<CudaSlice<E>, OptimError> {
        self.dev.alloc_zeros(n).map_err(|e| device_err("alloc", e))
    }
    fn len_of(&self, b: &CudaSlice<E>) -> usize {
        b.len()
    }
}

fn ld_short(ld: usize, rows: usize) -> bool {
    ld < rows.max(1)
}
