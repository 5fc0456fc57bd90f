//! [`CandleCuda`]: the device step driver's [`Backend`] on a candle `CudaDevice`, through
//! cudarc 0.19 (the version candle-core 0.11 uses).
//!
//! - Stages: each generated stage's CUDA source ([`StageKernel::cuda`]) is compiled with NVRTC
//!   once per process (cached by [`source_hash`]) and loaded into candle's context once per
//!   device through candle's own module cache (`get_or_load_custom_func`, module
//!   `optim_dsl_<hash>`); every launch goes to candle's stream, so it is ordered after the ops
//!   that produced the gradients and before the ops that read the updated `Var`s.
//! - [`run_stage`](Backend::run_stage): one launch of the stage's multi-tensor entry point per
//!   [`MAX_MULTI_TENSORS`] rows (the layout of `optim_runtime::cuda`: one `Params` record per
//!   row packed by [`pack_params`], one `TensorEntry` row by [`pack_table_entry`]); the
//!   reduction partials come back (one synchronising read) only when the stage has reductions.
//! - Buffers ([`DevBuf`]): state and scratch buffers are owned by the backend (`CudaSlice<u8>`
//!   on candle's stream); a `Var`'s and a gradient's elements are *lent* for one step (a device
//!   address into candle's own storage, valid while the step holds its locks), so the update
//!   is in place and nothing is copied.
//! - Ordering: like candle's own ops, everything relies on the order of candle's stream (no
//!   events of its own). `Device::new_cuda` gives CUDA's per-thread default stream: step on
//!   the thread that runs the model (or synchronise the device before stepping from another).
//! - [`broadcast`](Backend::broadcast) and [`all_finite`](Backend::all_finite) go through the
//!   host (as the dfdx backend does); there is no cuBLAS path: Newton–Schulz and the other
//!   matrix primitives run on the host through the driver's device link.
//!
//! Every call returns [`OptimError::Device`] on a driver or NVRTC error; nothing panics.
//! (candle-core's `cuda` feature selects cudarc's `dynamic-linking`: libcuda, libnvrtc,
//! cuBLAS(Lt) and cuRAND are linked, so a program built with the feature does not start on a
//! machine without them.)

use candle_core::CudaDevice;
use cudarc::driver::sys::{CUdevice_attribute, CUdeviceptr};
use cudarc::driver::{result, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use optim_runtime::cuda::backend::{
    device_err, is_pos_zero, short_buffer as short, totals_per_row, Backend, Row, StageKernel,
    StageTensor,
};
use optim_runtime::cuda::{
    pack_params, pack_table_entry, source_hash, sum_partials, table_geometry, CudaKernelSource,
    MAX_BLOCKS, MAX_BUFS, MAX_MULTI_TENSORS,
};
use optim_runtime::{Float, OptimError};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

/// Rows of at most 1 Mi elements (as the dfdx backend's `GPU_CHUNK`).
const CHUNK: usize = 1 << 20;

/// A buffer of `E` on the device: owned (state, scratch) or lent (a `Var`'s or gradient's
/// elements in candle's storage, for one step).
pub struct DevBuf<E> {
    /// The allocation, when owned (`len * E::BYTES` bytes; held for its `Drop`, which frees it
    /// stream-ordered); `None` when lent.
    _own: Option<CudaSlice<u8>>,
    /// Device address of the first element.
    ptr: CUdeviceptr,
    /// Number of elements.
    len: usize,
    _elem: PhantomData<E>,
}

impl<E: Float> DevBuf<E> {
    /// `len` elements of `E` at device address `ptr`, not owned.
    ///
    /// # Safety
    /// `ptr .. ptr + len * E::BYTES` must be device memory of the backend's context holding
    /// `E`s, and stay allocated (and not be used by anything else) for as long as the buffer
    /// is used; the caller drops the buffer before giving the memory back.
    pub(crate) unsafe fn lent(ptr: CUdeviceptr, len: usize) -> Self {
        DevBuf {
            _own: None,
            ptr,
            len,
            _elem: PhantomData,
        }
    }

    fn owned(slice: CudaSlice<u8>, stream: &CudaStream) -> Self {
        let len = slice.len() / E::BYTES;
        let ptr = slice.device_ptr(stream).0;
        DevBuf {
            _own: Some(slice),
            ptr,
            len,
            _elem: PhantomData,
        }
    }

    /// Device address of element `i`.
    fn at(&self, i: usize) -> u64 {
        self.ptr + (i * E::BYTES) as u64
    }
}

/// The optimizer's device: a candle `CudaDevice` (its context and stream). Cloning shares
/// them.
#[derive(Clone)]
pub struct CandleCuda {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    max_blocks: u32,
}

impl CandleCuda {
    /// The backend on candle's device `dev`.
    pub(crate) fn new(dev: &CudaDevice) -> Self {
        let stream = dev.cuda_stream();
        let sms = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .unwrap_or(0);
        // enough resident blocks to saturate bandwidth: 8 blocks of 256 threads per SM
        let max_blocks = if sms > 0 {
            (sms as u32).saturating_mul(8)
        } else {
            MAX_BLOCKS
        };
        CandleCuda {
            dev: dev.clone(),
            stream,
            max_blocks,
        }
    }

    /// Whether `other` runs on the same candle device (hence the same stream).
    pub(crate) fn same(&self, other: &CandleCuda) -> bool {
        self.dev.id() == other.dev.id()
    }

    fn bind(&self) -> Result<(), OptimError> {
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| device_err("bind context", e))
    }

    fn alloc_bytes(&self, bytes: usize) -> Result<CudaSlice<u8>, OptimError> {
        self.stream
            .alloc_zeros::<u8>(bytes)
            .map_err(|e| device_err("alloc", e))
    }

    /// Copies `data` to `dst`'s first elements.
    fn put<E: Float>(&self, dst: &DevBuf<E>, data: &[E]) -> Result<(), OptimError> {
        if data.len() > dst.len {
            return Err(short(dst.len, data.len()));
        }
        if data.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `dst` holds at least `data.len()` elements (checked); a copy from pageable
        // memory returns once `data` has been staged, so `data` may be dropped afterwards.
        unsafe { result::memcpy_htod_async(dst.ptr, data, self.stream.cu_stream()) }
            .map_err(|e| device_err("upload", e))
    }

    /// The first `n` elements of `src` (waits for the stream).
    fn get<E: Float>(&self, src: &DevBuf<E>, n: usize) -> Result<Vec<E>, OptimError> {
        if n > src.len {
            return Err(short(src.len, n));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        self.bind()?;
        let mut out = vec![E::zero(); n];
        // SAFETY: `src` holds at least `n` elements (checked) and `out` has room for them; the
        // stream is synchronised before `out` is read or dropped.
        unsafe { result::memcpy_dtoh_async(out.as_mut_slice(), src.ptr, self.stream.cu_stream()) }
            .map_err(|e| device_err("download", e))?;
        self.stream
            .synchronize()
            .map_err(|e| device_err("download", e))?;
        Ok(out)
    }

    /// Launches `source`'s multi-tensor entry point over `entries` packed table rows (`prm`: the
    /// `Params` records, `tab`: the `TensorEntry` rows, `nmax`: the longest row). Returns
    /// `None` for a stage without reductions, else `(partials, entry width, blocks)`.
    ///
    /// # Safety
    /// Every table row must point into device buffers holding at least the row's `n` elements
    /// in the stage's layout, allocated until the launch has run.
    unsafe fn launch_table(
        &self,
        source: &CudaKernelSource,
        (hash, ptx): (u64, &str),
        prm: &[u8],
        tab: &[u8],
        nmax: usize,
        entries: usize,
    ) -> Result<Option<(Vec<f64>, usize, usize)>, OptimError> {
        let module = format!("optim_dsl_{hash:016x}");
        let func = self
            .dev
            .get_or_load_custom_func(source.multi_name, &module, ptx)
            .map_err(|e| device_err("load module", e))?;
        let upload = |b: &[u8]| {
            self.stream
                .clone_htod(b)
                .map_err(|e| device_err("upload launch table", e))
        };
        let (prm, tab) = (upload(prm)?, upload(tab)?);
        let g = table_geometry(source.n_reductions, nmax, entries, self.max_blocks);
        let red = self
            .stream
            .alloc_zeros::<f64>(g.partials)
            .map_err(|e| device_err("alloc reductions", e))?;
        let cfg = LaunchConfig {
            grid_dim: g.grid,
            block_dim: g.block,
            shared_mem_bytes: 0,
        };
        let mut args = func.builder();
        args.arg(&prm).arg(&tab).arg(&red);
        // SAFETY: `multi_name(const Params*, const TensorEntry*, double*)` takes three device
        // pointers, given as cudarc slices (kept alive until the launch has run: they are freed
        // stream-ordered after it); the rows' buffers are valid by this function's contract.
        unsafe { args.launch(cfg) }.map_err(|e| device_err("launch", e))?;
        if source.n_reductions == 0 {
            return Ok(None);
        }
        let partials = self
            .stream
            .clone_dtoh(&red)
            .map_err(|e| device_err("read reductions", e))?;
        Ok(Some((partials, g.width, g.blocks as usize)))
    }
}

/// PTX of `source` (whose [`source_hash`] is `key`), compiled with NVRTC the first time this process asks for it (default
/// options, as `optim_runtime::cuda::device::ptx`: IEEE division and square root, no fast
/// math).
///
/// # Errors
/// [`OptimError::Device`] with NVRTC's log when the source does not compile.
pub(crate) fn ptx(source: &str, key: u64) -> Result<Arc<str>, OptimError> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<str>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let lock = || cache.lock().map_err(|e| device_err("ptx cache", e));
    if let Some(p) = lock()?.get(&key) {
        return Ok(p.clone());
    }
    let compiled: Arc<str> = cudarc::nvrtc::compile_ptx(source)
        .map_err(|e| device_err("NVRTC compile", e))?
        .to_src()
        .into();
    lock()?.insert(key, compiled.clone());
    Ok(compiled)
}

/// Checks a stage launch: scalars and stream counts, every stream and the gradient at least
/// as long as the parameter, every row inside its tensor.
fn check<E: Float>(
    s: &CudaKernelSource,
    rows: &[Row],
    tensors: &[StageTensor<'_, DevBuf<E>, E>],
) -> Result<(), OptimError> {
    let mismatch = |detail: String| OptimError::ShapeMismatch {
        param: s.name.to_string(),
        detail,
    };
    if s.n_bufs > MAX_BUFS {
        return Err(OptimError::Device(format!(
            "stage {} has {} streams; launches support at most {MAX_BUFS}",
            s.name, s.n_bufs
        )));
    }
    for x in tensors {
        let n = x.param.len;
        if x.scalars.len() != s.n_scalars || x.bufs.len() != s.n_bufs {
            return Err(mismatch(format!(
                "{} scalars and {} streams given, the kernel takes {} and {}",
                x.scalars.len(),
                x.bufs.len(),
                s.n_scalars,
                s.n_bufs
            )));
        }
        if x.grad.len < n || x.bufs.iter().any(|b| b.len < n) {
            return Err(mismatch(format!(
                "a gradient or stream is shorter than the parameter ({n} elements)"
            )));
        }
    }
    for r in rows {
        let ok = tensors
            .get(r.tensor)
            .is_some_and(|t| r.start.checked_add(r.len).is_some_and(|e| e <= t.param.len));
        if !ok {
            return Err(mismatch(format!(
                "row {}..+{} of tensor {} is outside it",
                r.start, r.len, r.tensor
            )));
        }
    }
    Ok(())
}

impl<E: Float> Backend<E> for CandleCuda {
    type Buf = DevBuf<E>;

    fn name(&self) -> String {
        format!("candle {:?}", self.dev)
    }
    fn empty(&self) -> Result<DevBuf<E>, OptimError> {
        // SAFETY: zero elements: nothing is ever read or written through it.
        Ok(unsafe { DevBuf::lent(0, 0) })
    }
    fn len(buf: &DevBuf<E>) -> usize {
        buf.len
    }
    fn alloc(&self, n: usize, fill: E) -> Result<DevBuf<E>, OptimError> {
        if n == 0 {
            return Backend::<E>::empty(self);
        }
        let b = DevBuf::owned(self.alloc_bytes(n * E::BYTES)?, &self.stream);
        if !is_pos_zero(fill) {
            self.put(&b, &vec![fill; n])?;
        }
        Ok(b)
    }
    fn upload(&self, data: &[E]) -> Result<DevBuf<E>, OptimError> {
        if data.is_empty() {
            return Backend::<E>::empty(self);
        }
        let b = DevBuf::owned(self.alloc_bytes(data.len() * E::BYTES)?, &self.stream);
        self.put(&b, data)?;
        Ok(b)
    }
    fn write(&self, dst: &mut DevBuf<E>, data: &[E]) -> Result<(), OptimError> {
        if dst.len != data.len() {
            return Err(OptimError::ShapeMismatch {
                param: "(device buffer)".into(),
                detail: format!("writing {} elements into {}", data.len(), dst.len),
            });
        }
        self.put(dst, data)
    }
    fn read(&self, src: &DevBuf<E>) -> Result<Vec<E>, OptimError> {
        self.get(src, src.len)
    }
    fn duplicate(&self, src: &DevBuf<E>) -> Result<DevBuf<E>, OptimError> {
        if src.len == 0 {
            return Backend::<E>::empty(self);
        }
        let bytes = src.len * E::BYTES;
        let b = DevBuf::owned(self.alloc_bytes(bytes)?, &self.stream);
        self.bind()?;
        // SAFETY: both buffers hold `bytes` bytes of this context's memory; the copy is
        // ordered on the stream before any later use of either.
        unsafe { result::memcpy_dtod_async(b.ptr, src.ptr, bytes, self.stream.cu_stream()) }
            .map_err(|e| device_err("copy", e))?;
        Ok(b)
    }
    fn broadcast(
        &self,
        line: &[E],
        dst: &mut DevBuf<E>,
        row: bool,
        cols: usize,
    ) -> Result<(), OptimError> {
        let mut host = vec![E::zero(); dst.len];
        optim_runtime::matrix::broadcast(line, &mut host, row, cols);
        self.put(dst, &host)
    }
    fn all_finite(&self, bufs: &[&DevBuf<E>]) -> Result<Vec<bool>, OptimError> {
        bufs.iter()
            .map(|b| Ok(self.read(b)?.iter().all(|x| x.is_finite())))
            .collect()
    }
    fn chunk_len(&self) -> usize {
        CHUNK
    }
    fn run_stage(
        &self,
        stage: &StageKernel<E>,
        rows: &[Row],
        tensors: &mut [StageTensor<'_, DevBuf<E>, E>],
    ) -> Result<Vec<f64>, OptimError> {
        let s = stage.cuda.ok_or_else(|| {
            OptimError::Device(
                "a hand-written loop has no CUDA twin; it cannot run on a GPU".into(),
            )
        })?;
        let text = s.source_for::<E>().ok_or_else(|| {
            OptimError::Device(format!("no CUDA kernels for element type {}", E::NAME))
        })?;
        check(s, rows, tensors)?;
        let hash = source_hash(text);
        let ptx = ptx(text, hash)?;
        let mut out = Vec::with_capacity(rows.len() * s.n_reductions);
        for chunk in rows.chunks(MAX_MULTI_TENSORS) {
            let (mut prm, mut tab) = (Vec::new(), Vec::new());
            let mut nmax = 0usize;
            for (i, r) in chunk.iter().enumerate() {
                let x = &tensors[r.tensor];
                nmax = nmax.max(r.len);
                pack_params(r.len, x.scalars, s.n_scalars, &mut prm);
                let bufs: Vec<u64> = x.bufs.iter().map(|b| b.at(r.start)).collect();
                let (p, g) = (x.param.at(r.start), x.grad.at(r.start));
                pack_table_entry(p, g, &bufs, s.n_bufs, i as u64, &mut tab);
            }
            // SAFETY: every row lies inside its tensor's buffers (checked: each stream and the
            // gradient hold at least the parameter's elements), borrowed for this call.
            let partials =
                unsafe { self.launch_table(s, (hash, &ptx), &prm, &tab, nmax, chunk.len()) }?;
            if let Some((p, w, blocks)) = partials {
                for i in 0..chunk.len() {
                    out.extend(sum_partials(&p[i * w..(i + 1) * w], s.n_reductions, blocks));
                }
            }
        }
        Ok(totals_per_row(
            out,
            s.n_reductions,
            stage.reductions,
            rows.len(),
        ))
    }
}
