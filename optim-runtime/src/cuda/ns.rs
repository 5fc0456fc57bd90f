//! Newton–Schulz (`orthogonalize`) on a device, written once against a small GEMM interface
//! ([`MatOps`]): cuBLAS implements it on a GPU
//! (`CudaBackend`, feature `cuda`), faer on the host
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

/// The layout of one GEMM `c = alpha · op(a) · op(b) + beta · c` ([`MatOps::gemm`]), in BLAS's
/// conventions: `op(x) = xᵀ` when `ta` / `tb`; `op(a)` is `m × k`, `op(b)` is `k × n`, `c` is
/// `m × n`; each operand is column-major with leading dimension `lda` / `ldb` / `ldc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmShape {
    /// Whether `a` is transposed.
    pub ta: bool,
    /// Whether `b` is transposed.
    pub tb: bool,
    /// Rows of `op(a)` and `c`.
    pub m: usize,
    /// Columns of `op(b)` and `c`.
    pub n: usize,
    /// Columns of `op(a)`, rows of `op(b)`.
    pub k: usize,
    /// Leading dimension of `a`.
    pub lda: usize,
    /// Leading dimension of `b`.
    pub ldb: usize,
    /// Leading dimension of `c`.
    pub ldc: usize,
}

impl GemmShape {
    /// `(rows, cols)` of `a` and of `b` as stored (before `op`).
    pub fn stored(&self) -> [(usize, usize); 2] {
        let (m, n, k) = (self.m, self.n, self.k);
        [
            if self.ta { (k, m) } else { (m, k) },
            if self.tb { (n, k) } else { (k, n) },
        ]
    }

    /// How many elements `a`, `b` and `c` address: `ld · (cols - 1) + rows` each (0 for an
    /// operand without columns). A buffer shorter than that is refused.
    pub fn extents(&self) -> [usize; 3] {
        let need = |(rows, cols): (usize, usize), ld: usize| {
            if cols == 0 {
                0
            } else {
                ld * (cols - 1) + rows
            }
        };
        let [a, b] = self.stored();
        [
            need(a, self.lda),
            need(b, self.ldb),
            need((self.m, self.n), self.ldc),
        ]
    }
}

/// The device operations [`orthogonalize_on`] needs. Matrices are column-major with a leading
/// dimension, as in BLAS; buffers hold at least what each call addresses.
pub trait MatOps<E: Float, B> {
    /// `c = alpha · op(a) · op(b) + beta · c` in the layout `s` (see [`GemmShape`]).
    ///
    /// # Errors
    /// [`OptimError::Device`].
    fn gemm(
        &self,
        s: GemmShape,
        alpha: E,
        a: &B,
        b: &B,
        beta: E,
        c: &mut B,
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
        let gram = GemmShape {
            ta,
            tb,
            m: d,
            n: d,
            k: inner,
            lda: cols,
            ldb: cols,
            ldc: d,
        };
        ops.gemm(gram, one, &y, &y, zero, &mut a)?;
        // B = b A + c A A
        ops.copy(&a, &mut b, d * d)?;
        let square = GemmShape {
            ta: false,
            tb: false,
            m: d,
            n: d,
            k: d,
            lda: d,
            ldb: d,
            ldc: d,
        };
        ops.gemm(square, cc, &a, &a, cb, &mut b)?;
        // X ← a X + B X: `Y ← a Y + Y B` (wide) or `Y ← a Y + B Y`
        ops.copy(&y, &mut yn, n)?;
        let ((l, ldl), (r, ldr), inner) = if wide {
            ((&y, cols), (&b, d), rows)
        } else {
            ((&b, d), (&y, cols), cols)
        };
        let step = GemmShape {
            ta: false,
            tb: false,
            m: cols,
            n: rows,
            k: inner,
            lda: ldl,
            ldb: ldr,
            ldc: cols,
        };
        ops.gemm(step, one, l, r, ca, &mut yn)?;
        std::mem::swap(&mut y, &mut yn);
    }
    ops.copy(&y, out, n)
}
