//! Newton–Schulz (`orthogonalize`) on a device, written once against a small GEMM interface
//! ([`MatOps`]): cuBLAS implements it on a GPU
//! ([`CudaBackend`](super::gpu::CudaBackend), feature `cuda`), faer on the host
//! ([`HostBackend`](super::host::HostBackend), for tests).
//!
//! The same iteration as [`crate::matrix::orthogonalize`], without any transposition copy: a
//! row-major `rows × cols` input, read column-major, is `Y = Xᵀ` (`cols × rows`, leading
//! dimension `cols`). With `rows <= cols` the Gram matrix is `A = X Xᵀ = Yᵀ Y` and the update
//! `X ← a X + B X` is `Y ← a Y + Y B` (`B` is symmetric); with `rows > cols` the host iterates
//! on `Xᵀ`, which is `Y` itself: `A = Y Yᵀ`, `Y ← a Y + B Y`. So the output lands in the
//! input's layout. The normalisation is the host's: `(x / amax) / (s + eps / amax)` in `f64`
//! with `s = sqrt(Σ (x / amax)²)`; a non-finite input gives an all-NaN output, a zero input a
//! zero output. The result equals the host's up to the summation order of the GEMMs and of `s`.

use crate::error::OptimError;
use crate::matrix::OrthogonalizeConfig;
use crate::Float;

/// The device operations [`orthogonalize_on`] needs. Matrices are column-major with a leading
/// dimension, as in BLAS; buffers hold at least what each call addresses.
pub trait MatOps<E: Float, B> {
    /// `c = alpha · op(a) · op(b) + beta · c`, `op(x) = xᵀ` when `ta` / `tb`; `op(a)` is
    /// `m × k`, `op(b)` is `k × n`, `c` is `m × n`.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: E,
        a: &B,
        lda: usize,
        b: &B,
        ldb: usize,
        beta: E,
        c: &mut B,
        ldc: usize,
    ) -> Result<(), OptimError>;
    /// `(max |x_i|, every x_i finite)` over the first `n` elements.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn absmax(&self, x: &B, n: usize) -> Result<(f64, bool), OptimError>;
    /// `Σ (x_i / scale)²` over the first `n` elements, in `f64`.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn sumsq_scaled(&self, x: &B, n: usize, scale: f64) -> Result<f64, OptimError>;
    /// `dst_i = E((x_i / a) / d)` (in `f64`) for the first `n` elements.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn normalize(&self, x: &B, dst: &mut B, n: usize, a: f64, d: f64) -> Result<(), OptimError>;
    /// `dst_i = src_i` for the first `n` elements.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn copy(&self, src: &B, dst: &mut B, n: usize) -> Result<(), OptimError>;
    /// `dst_i = v` for the first `n` elements.
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn fill(&self, dst: &mut B, n: usize, v: E) -> Result<(), OptimError>;
    /// A scratch buffer of `n` elements (contents unspecified).
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn scratch(&self, n: usize) -> Result<B, OptimError>;
    /// Number of elements of `b`.
    fn len_of(&self, b: &B) -> usize;
}

/// `orthogonalize(input)` into `out` (both `rows × cols` row-major) on the device of `ops`:
/// [`crate::matrix::orthogonalize`]'s iteration (see the [module docs](self)). Inputs shorter
/// than `rows · cols` or an empty matrix leave `out` as it is.
///
/// # Errors
/// What `ops` returns.
pub fn orthogonalize_on<E: Float, B, M: MatOps<E, B> + ?Sized>(
    ops: &M,
    input: &B,
    out: &mut B,
    rows: usize,
    cols: usize,
    cfg: &OrthogonalizeConfig,
) -> Result<(), OptimError> {
    let Some(n) = rows.checked_mul(cols) else {
        return Ok(());
    };
    if n == 0 || ops.len_of(input) < n || ops.len_of(out) < n {
        return Ok(());
    }
    let (amax, finite) = ops.absmax(input, n)?;
    if !finite {
        return ops.fill(out, n, E::nan());
    }
    if amax == 0.0 {
        return ops.fill(out, n, E::zero());
    }
    let s = ops.sumsq_scaled(input, n, amax)?.sqrt();
    let denom = s + cfg.eps / amax;
    let mut y = ops.scratch(n)?;
    ops.normalize(input, &mut y, n, amax, denom)?;
    // the per-iteration schedule, as the host primitive (`matrix::orthogonalize`): `coeffs`
    // when given (its last triple repeated; empty: no iteration), else `(a, b, c)` throughout
    let fixed = [[cfg.a, cfg.b, cfg.c]];
    let schedule = cfg.coeffs.unwrap_or(&fixed);
    let steps = if schedule.is_empty() { 0 } else { cfg.steps };
    let wide = rows <= cols; // Gram matrix of the rows (else of the columns)
    let d = rows.min(cols);
    let mut yn = ops.scratch(n)?;
    let mut a = ops.scratch(d * d)?;
    let mut b = ops.scratch(d * d)?;
    let (one, zero) = (E::one(), E::zero());
    for i in 0..steps {
        let [ca, cb, cc] = schedule[i.min(schedule.len() - 1)].map(E::of_f64);
        // A = X Xᵀ: `Yᵀ Y` (wide) or `Y Yᵀ`
        let (ta, tb, inner) = if wide {
            (true, false, cols)
        } else {
            (false, true, rows)
        };
        ops.gemm(
            ta, tb, d, d, inner, one, &y, cols, &y, cols, zero, &mut a, d,
        )?;
        // B = b A + c A A
        ops.copy(&a, &mut b, d * d)?;
        ops.gemm(false, false, d, d, d, cc, &a, d, &a, d, cb, &mut b, d)?;
        // X ← a X + B X: `Y ← a Y + Y B` (wide) or `Y ← a Y + B Y`
        ops.copy(&y, &mut yn, n)?;
        let ((l, ldl), (r, ldr), inner) = if wide {
            ((&y, cols), (&b, d), rows)
        } else {
            ((&b, d), (&y, cols), cols)
        };
        ops.gemm(
            false, false, cols, rows, inner, one, l, ldl, r, ldr, ca, &mut yn, cols,
        )?;
        std::mem::swap(&mut y, &mut yn);
    }
    ops.copy(&y, out, n)
}
