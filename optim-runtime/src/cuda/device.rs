//! Compiling, loading and launching generated stages on a GPU (feature `cuda`).
//!
//! - [`ptx`]: NVRTC compile of a source, once per process (cached by [`source_hash`]).
//! - [`CudaStage::load`]: loads a stage's module into a device once (module name
//!   `optim_dsl_<hash>`), giving both entry points.
//! - [`CudaStage::run`] / [`CudaStage::run_multi`]: upload the `Params` records (and the
//!   table), launch on the device's stream, and return the reduction totals (read back, which
//!   synchronises, only when the stage has reductions). The upload is an async copy from
//!   pageable memory, which CUDA orders after the stream's earlier work: one upload per launch
//!   is fine for large tensors; many small tensors belong in one `run_multi`.
//! - [`grad_slice`]: a dfdx `Cuda` gradient's device buffer, and with it the `CudaDevice`
//!   dfdx runs on ([`CudaSlice::device`]).
//!
//! - [`CudaStage::run_rows`]: the device step driver's launch (rows of a multi-tensor plan),
//!   used by `CudaBackend`.
//!
//! `DslOptimizer::update` on dfdx `Cuda` modules goes through the step driver (`super::step`)
//! on a `CudaBackend`; see `crate::dfdx` and `docs/gpu.md`.

use super::backend::device_err;
use super::{
    grid_blocks, pack_params, pack_table_entry, source_hash, sum_partials, table_geometry,
    CudaKernelSource, BLOCK, MAX_BLOCKS, MAX_BUFS, MAX_MULTI_TENSORS,
};
use crate::{Float, OptimError};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{DevicePtr, DeviceSlice, DriverError, LaunchAsync, LaunchConfig};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

pub use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
pub use cudarc::driver::{CudaDevice, CudaFunction, CudaSlice};

/// PTX of `source`, compiled with NVRTC the first time this process asks for it (default
/// options: IEEE division and square root, no FMA contraction issue since the sources use
/// `_rn` intrinsics, no fast math).
///
/// # Errors
/// [`OptimError::Device`] with NVRTC's log when the source does not compile.
pub fn ptx(source: &str) -> Result<Ptx, OptimError> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Ptx>>> = OnceLock::new();
    let key = source_hash(source);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache
        .lock()
        .map_err(|e| device_err("ptx cache", e))?
        .get(&key)
    {
        return Ok(p.clone());
    }
    let compiled =
        cudarc::nvrtc::compile_ptx(source).map_err(|e| device_err("NVRTC compile", e))?;
    cache
        .lock()
        .map_err(|e| device_err("ptx cache", e))?
        .insert(key, compiled.clone());
    Ok(compiled)
}

/// A generated stage loaded on one device, for element type `E`.
#[derive(Debug, Clone)]
pub struct CudaStage<E> {
    dev: Arc<CudaDevice>,
    source: &'static CudaKernelSource,
    single: CudaFunction,
    multi: CudaFunction,
    max_blocks: u32,
    _elem: PhantomData<E>,
}

/// One tensor of a multi-tensor launch ([`CudaStage::run_multi`]).
#[derive(Debug)]
pub struct CudaTensor<'a, E> {
    /// Its hoisted scalars, as [`KernelCall::scalars`](crate::kernel::KernelCall::scalars).
    pub scalars: &'a [E],
    /// The parameter.
    pub param: &'a mut CudaSlice<E>,
    /// The gradient.
    pub grad: &'a CudaSlice<E>,
    /// The state and scratch streams, in the stage's order.
    pub bufs: Vec<&'a mut CudaSlice<E>>,
}

impl<E: Float> CudaStage<E> {
    /// Compiles (once per process) and loads (once per device) `source`'s module on `dev`.
    ///
    /// # Errors
    /// [`OptimError::Device`] when `E` is not `f32`/`f64`, the stage has more than
    /// [`MAX_BUFS`] streams, NVRTC fails, or the driver cannot load the module.
    pub fn load(
        dev: &Arc<CudaDevice>,
        source: &'static CudaKernelSource,
    ) -> Result<Self, OptimError> {
        static LOADING: Mutex<()> = Mutex::new(());
        let text = source.source_for::<E>().ok_or_else(|| {
            OptimError::Device(format!("no CUDA kernels for element type {}", E::NAME))
        })?;
        if source.n_bufs > MAX_BUFS {
            return Err(OptimError::Device(format!(
                "stage {} has {} streams; launches support at most {MAX_BUFS}",
                source.name, source.n_bufs
            )));
        }
        let module = format!("optim_dsl_{:016x}", source_hash(text));
        {
            let _guard = LOADING.lock().map_err(|e| device_err("module load", e))?;
            if !dev.has_func(&module, source.name) {
                dev.load_ptx(ptx(text)?, &module, &[source.name, source.multi_name])
                    .map_err(|e| device_err("load module", e))?;
            }
        }
        let get = |name: &str| {
            dev.get_func(&module, name)
                .ok_or_else(|| OptimError::Device(format!("kernel {name} missing from module")))
        };
        let sms = dev
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .unwrap_or(0);
        // enough resident blocks to saturate bandwidth: 8 blocks of 256 threads per SM
        let max_blocks = if sms > 0 {
            (sms as u32).saturating_mul(8)
        } else {
            MAX_BLOCKS
        };
        Ok(CudaStage {
            dev: dev.clone(),
            source,
            single: get(source.name)?,
            multi: get(source.multi_name)?,
            max_blocks,
            _elem: PhantomData,
        })
    }

    /// The stage's record.
    pub fn source(&self) -> &'static CudaKernelSource {
        self.source
    }

    /// Runs the stage on one tensor and returns its reduction totals (`n_reductions` values;
    /// reading them back waits for the kernel, a stage without reductions returns at once).
    ///
    /// # Errors
    /// [`OptimError::ShapeMismatch`] for a wrong number of scalars or streams or a length
    /// mismatch; [`OptimError::Device`] for a driver error.
    pub fn run(
        &self,
        scalars: &[E],
        param: &mut CudaSlice<E>,
        grad: &CudaSlice<E>,
        bufs: &mut [&mut CudaSlice<E>],
    ) -> Result<Vec<f64>, OptimError> {
        let s = self.source;
        let n = param.len();
        self.check(scalars, n, grad.len(), bufs.iter().map(|b| b.len()))?;
        let mut prm = Vec::new();
        pack_params(n, scalars, s.n_scalars, &mut prm);
        let prm = self
            .dev
            .htod_copy(prm)
            .map_err(|e| device_err("upload scalars", e))?;
        let blocks = grid_blocks(n, self.max_blocks);
        let red = self
            .dev
            .alloc_zeros::<f64>((s.n_reductions * blocks as usize).max(1))
            .map_err(|e| device_err("alloc reductions", e))?;
        let mut args: Vec<u64> = Vec::with_capacity(s.n_args());
        args.push(*prm.device_ptr());
        args.push(*param.device_ptr());
        args.push(*grad.device_ptr());
        args.extend(bufs.iter().map(|b| *b.device_ptr()));
        args.push(*red.device_ptr());
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature (`4 + n_bufs` device addresses,
        // checked above); every buffer has `n` elements (checked above) and outlives the
        // launch: `prm` and `red` are freed stream-ordered after it, the others are borrowed
        // for this call and the caller's later use is ordered on the same stream.
        unsafe { launch_u64(self.single.clone(), cfg, &args) }
            .map_err(|e| device_err("launch", e))?;
        if s.n_reductions == 0 {
            return Ok(Vec::new());
        }
        let partials = self
            .dev
            .dtoh_sync_copy(&red)
            .map_err(|e| device_err("read reductions", e))?;
        Ok(sum_partials(&partials, s.n_reductions, blocks as usize))
    }

    /// Runs the stage on many tensors with one launch per [`MAX_MULTI_TENSORS`] tensors
    /// (`blockIdx.y` selects the tensor) and returns each tensor's reduction totals.
    ///
    /// # Errors
    /// As [`run`](Self::run), for any tensor.
    pub fn run_multi(
        &self,
        tensors: &mut [CudaTensor<'_, E>],
    ) -> Result<Vec<Vec<f64>>, OptimError> {
        let s = self.source;
        let mut out = Vec::with_capacity(tensors.len());
        for chunk in tensors.chunks_mut(MAX_MULTI_TENSORS) {
            let mut prm = Vec::new();
            let mut tab = Vec::new();
            let mut nmax = 0usize;
            for (t, x) in chunk.iter().enumerate() {
                let n = x.param.len();
                self.check(x.scalars, n, x.grad.len(), x.bufs.iter().map(|b| b.len()))?;
                nmax = nmax.max(n);
                pack_params(n, x.scalars, s.n_scalars, &mut prm);
                let bufs: Vec<u64> = x.bufs.iter().map(|b| *b.device_ptr()).collect();
                pack_table_entry(
                    *x.param.device_ptr(),
                    *x.grad.device_ptr(),
                    &bufs,
                    s.n_bufs,
                    t as u64,
                    &mut tab,
                );
            }
            // SAFETY: the table rows were packed for this stage's layout, every tensor's buffers
            // were checked to have its `n` elements and are borrowed for this call.
            let partials = unsafe { self.launch_table(prm, tab, nmax, chunk.len()) }?;
            for t in 0..chunk.len() {
                out.push(match &partials {
                    Some((p, w, blocks)) => {
                        sum_partials(&p[t * w..(t + 1) * w], s.n_reductions, *blocks)
                    }
                    None => Vec::new(),
                });
            }
        }
        Ok(out)
    }

    /// Runs the stage over `rows` of `tensors` (the device step driver's plan, see
    /// [`super::backend::rows`]): one launch of the multi-tensor entry point per
    /// [`MAX_MULTI_TENSORS`] rows, each row a table entry whose pointers start at the row's
    /// first element, with its own `Params` record (`n` = the row's length, the tensor's
    /// scalars). Returns each row's reduction totals (`rows.len() × n_reductions`, rows in
    /// order; read back, which waits for the device, only when the stage has reductions).
    ///
    /// # Errors
    /// [`OptimError::ShapeMismatch`] for a row outside its tensor, a wrong number of scalars
    /// or streams, or a stream shorter than the parameter; [`OptimError::Device`] for a
    /// driver error.
    pub fn run_rows(
        &self,
        rows: &[super::backend::Row],
        tensors: &mut [super::backend::StageTensor<'_, CudaSlice<E>, E>],
    ) -> Result<Vec<f64>, OptimError> {
        let s = self.source;
        for x in tensors.iter() {
            self.check(
                x.scalars,
                x.param.len(),
                x.grad.len(),
                x.bufs.iter().map(|b| b.len()),
            )?;
        }
        for r in rows {
            let ok = tensors.get(r.tensor).is_some_and(|t| {
                r.start
                    .checked_add(r.len)
                    .is_some_and(|e| e <= t.param.len())
            });
            if !ok {
                return Err(OptimError::ShapeMismatch {
                    param: s.name.to_string(),
                    detail: format!(
                        "row {}..+{} of tensor {} is outside it",
                        r.start, r.len, r.tensor
                    ),
                });
            }
        }
        let offset = |base: u64, start: usize| base + (start * E::BYTES) as u64;
        let mut out = Vec::with_capacity(rows.len() * s.n_reductions);
        for chunk in rows.chunks(MAX_MULTI_TENSORS) {
            let mut prm = Vec::new();
            let mut tab = Vec::new();
            let mut nmax = 0usize;
            for (i, r) in chunk.iter().enumerate() {
                let x = &tensors[r.tensor];
                nmax = nmax.max(r.len);
                pack_params(r.len, x.scalars, s.n_scalars, &mut prm);
                let bufs: Vec<u64> = x
                    .bufs
                    .iter()
                    .map(|b| offset(*b.device_ptr(), r.start))
                    .collect();
                pack_table_entry(
                    offset(*x.param.device_ptr(), r.start),
                    offset(*x.grad.device_ptr(), r.start),
                    &bufs,
                    s.n_bufs,
                    i as u64,
                    &mut tab,
                );
            }
            // SAFETY: every row lies inside its tensor's buffers (checked above: each stream
            // holds at least the parameter's elements), which are borrowed for this call.
            if let Some((p, w, blocks)) = unsafe { self.launch_table(prm, tab, nmax, chunk.len()) }?
            {
                for i in 0..chunk.len() {
                    out.extend(sum_partials(&p[i * w..(i + 1) * w], s.n_reductions, blocks));
                }
            }
        }
        Ok(out)
    }

    /// One launch of the multi-tensor entry point over `entries` packed table rows (`prm`: the
    /// `Params` records, `tab`: the `TensorEntry` rows, `nmax`: the longest row): uploads both,
    /// launches, and reads back the per-block reduction partials. Returns `None` for a stage
    /// without reductions, else `(partials, entry width, blocks)`: entry `i`'s partials are
    /// `partials[i * width..(i + 1) * width]`.
    ///
    /// # Safety
    /// Every table row must point into device buffers that hold at least the row's `n`
    /// elements in this stage's layout and stay borrowed for the call (`prm`, `tab` and the
    /// partials are freed stream-ordered after the launch).
    unsafe fn launch_table(
        &self,
        prm: Vec<u8>,
        tab: Vec<u8>,
        nmax: usize,
        entries: usize,
    ) -> Result<Option<(Vec<f64>, usize, usize)>, OptimError> {
        let s = self.source;
        let prm = self
            .dev
            .htod_copy(prm)
            .map_err(|e| device_err("upload scalars", e))?;
        let tab = self
            .dev
            .htod_copy(tab)
            .map_err(|e| device_err("upload table", e))?;
        let g = table_geometry(s.n_reductions, nmax, entries, self.max_blocks);
        let red = self
            .dev
            .alloc_zeros::<f64>(g.partials)
            .map_err(|e| device_err("alloc reductions", e))?;
        let cfg = LaunchConfig {
            grid_dim: g.grid,
            block_dim: g.block,
            shared_mem_bytes: 0,
        };
        let args = [*prm.device_ptr(), *tab.device_ptr(), *red.device_ptr()];
        // SAFETY: `multi_name(const Params*, const TensorEntry*, double*)` takes three device
        // addresses; the rows' buffers are valid by this function's contract.
        unsafe { launch_u64(self.multi.clone(), cfg, &args) }
            .map_err(|e| device_err("launch", e))?;
        if s.n_reductions == 0 {
            return Ok(None);
        }
        let partials = self
            .dev
            .dtoh_sync_copy(&red)
            .map_err(|e| device_err("read reductions", e))?;
        Ok(Some((partials, g.width, g.blocks as usize)))
    }

    fn check(
        &self,
        scalars: &[E],
        n: usize,
        grad: usize,
        bufs: impl ExactSizeIterator<Item = usize>,
    ) -> Result<(), OptimError> {
        let s = self.source;
        let mismatch = |detail: String| OptimError::ShapeMismatch {
            param: s.name.to_string(),
            detail,
        };
        if scalars.len() != s.n_scalars {
            return Err(mismatch(format!(
                "{} scalars given, the kernel takes {}",
                scalars.len(),
                s.n_scalars
            )));
        }
        if bufs.len() != s.n_bufs {
            return Err(mismatch(format!(
                "{} streams given, the kernel takes {}",
                bufs.len(),
                s.n_bufs
            )));
        }
        if grad < n {
            return Err(mismatch(format!(
                "gradient has {grad} elements, parameter {n}"
            )));
        }
        for (j, len) in bufs.enumerate() {
            if len < n {
                return Err(mismatch(format!(
                    "stream b{j} has {len} elements, parameter {n}"
                )));
            }
        }
        Ok(())
    }
}

/// Launches `f` with `args` (device addresses or other 8-byte values) as its parameters.
///
/// # Safety
/// `args` must match the kernel's parameter list, and every address must stay valid until the
/// kernel has run (see cudarc's `LaunchAsync::launch`).
unsafe fn launch_u64(f: CudaFunction, cfg: LaunchConfig, a: &[u64]) -> Result<(), DriverError> {
    // SAFETY (all arms): forwarded from the caller.
    unsafe {
        match *a {
            [a0] => f.launch(cfg, (a0,)),
            [a0, a1] => f.launch(cfg, (a0, a1)),
            [a0, a1, a2] => f.launch(cfg, (a0, a1, a2)),
            [a0, a1, a2, a3] => f.launch(cfg, (a0, a1, a2, a3)),
            [a0, a1, a2, a3, a4] => f.launch(cfg, (a0, a1, a2, a3, a4)),
            [a0, a1, a2, a3, a4, a5] => f.launch(cfg, (a0, a1, a2, a3, a4, a5)),
            [a0, a1, a2, a3, a4, a5, a6] => f.launch(cfg, (a0, a1, a2, a3, a4, a5, a6)),
            [a0, a1, a2, a3, a4, a5, a6, a7] => f.launch(cfg, (a0, a1, a2, a3, a4, a5, a6, a7)),
            [a0, a1, a2, a3, a4, a5, a6, a7, a8] => {
                f.launch(cfg, (a0, a1, a2, a3, a4, a5, a6, a7, a8))
            }
            [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] => {
                f.launch(cfg, (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9))
            }
            [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10] => {
                f.launch(cfg, (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10))
            }
            [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] => {
                f.launch(cfg, (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11))
            }
            _ => Err(DriverError(
                cudarc::driver::sys::CUresult::CUDA_ERROR_INVALID_VALUE,
            )),
        }
    }
}

/// The device buffer of `t`'s gradient in `grads` (allocated if missing). Its
/// [`CudaSlice::device`] is the `CudaDevice` dfdx runs on, whose stream [`CudaStage`] launches
/// on.
///
/// # Errors
/// [`OptimError::Device`] if dfdx cannot allocate the gradient.
pub fn grad_slice<'g, S: dfdx::shapes::Shape, E: Float, T>(
    grads: &'g mut dfdx::tensor::Gradients<E, dfdx::tensor::Cuda>,
    t: &dfdx::tensor::Tensor<S, E, dfdx::tensor::Cuda, T>,
) -> Result<&'g mut CudaSlice<E>, OptimError> {
    let g = grads
        .get_or_alloc_mut(t)
        .map_err(|e| device_err("gradient", e))?;
    Ok(&mut **g)
}
