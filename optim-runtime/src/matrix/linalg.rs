//! Linear-algebra helpers shared by the matrix primitives (faer).

use crate::Float;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

/// Parallelism for a product touching about `n` elements.
pub(super) fn par_for(n: usize) -> Par {
    // below ~128² the pool's overhead exceeds the work
    if n >= 128 * 128 {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// Copies `m` into the row-major buffer `out` (`m.nrows() × m.ncols()` elements).
pub(super) fn write_row_major<E: Float>(m: MatRef<'_, E>, out: &mut [E]) {
    let c = m.ncols();
    for i in 0..m.nrows() {
        for j in 0..c {
            out[i * c + j] = m[(i, j)];
        }
    }
}

/// `a b`, multithreaded when the product is large.
pub(super) fn product<E: Float>(a: MatRef<'_, E>, b: MatRef<'_, E>) -> Mat<E> {
    let mut out = Mat::<E>::zeros(a.nrows(), b.ncols());
    let par = par_for(a.nrows() * b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, E::one(), par);
    out
}

/// `f x` (`side == 0`, a left factor) or `x f` (`side == 1`, a right factor).
pub(super) fn apply_side<E: Float>(x: MatRef<'_, E>, f: MatRef<'_, E>, side: usize) -> Mat<E> {
    if side == 0 {
        product(f, x)
    } else {
        product(x, f)
    }
}

/// `G G^T` (`side == 0`) or `G^T G` (`side == 1`).
pub(super) fn side_gram<E: Float>(g: MatRef<'_, E>, side: usize) -> Mat<E> {
    if side == 0 {
        product(g, g.transpose())
    } else {
        product(g.transpose(), g)
    }
}

/// The relative eigenvalue cutoff of a pseudo-inverse root of a `d × d` statistic stored in
/// `E`: `rank_rtol`, or when `None` `d · ε(E)` (`ε` = `E::epsilon()`: 1.19e-7 for `f32`,
/// 2.2e-16 for `f64`), distributed_shampoo's `PseudoInverseConfig(rank_rtol=None)` rule
/// (`L.numel() * finfo(factor dtype).eps`) with the statistics' own precision.
pub(super) fn cutoff<E: Float>(rank_rtol: Option<f64>, d: usize) -> f64 {
    rank_rtol.unwrap_or(d as f64 * E::epsilon().as_f64())
}

/// The pseudo-inverse root `H^{+(-exponent)}` of a symmetric `H` (only its lower triangle is
/// read), computed in `f64` whatever `E` is:
/// ```text
/// H = Q diag(λ) Q^T                        (faer self-adjoint eigendecomposition, f64)
/// τ = rank_rtol · max(max_i λ_i, 0)
/// H^{+(-exponent)} = Q diag(μ) Q^T,  μ_i = 0 if λ_i <= τ else λ_i^(-exponent)
/// ```
/// (distributed_shampoo's `PseudoInverseConfig` with `rank_atol = 0`). `None` — a refused
/// refresh — when `H` is not square or has a non-finite entry, the decomposition fails, or the
/// result has a non-finite entry in `E`. A `0 × 0` `H` gives the `0 × 0` result.
pub(super) fn pinv_root<E: Float>(
    h: MatRef<'_, E>,
    exponent: f64,
    rank_rtol: f64,
) -> Option<Mat<E>> {
    let d = h.nrows();
    if h.ncols() != d {
        return None;
    }
    if d == 0 {
        return Some(Mat::zeros(0, 0));
    }
    let h64 = Mat::<f64>::from_fn(d, d, |i, j| h[(i, j)].as_f64());
    if !(0..d).all(|j| (0..d).all(|i| h64[(i, j)].is_finite())) {
        return None;
    }
    let evd = h64.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let u = evd.U();
    let s = evd.S().column_vector();
    let lmax = (0..d).map(|j| s[j]).fold(f64::NEG_INFINITY, f64::max);
    if !lmax.is_finite() {
        return None;
    }
    let tau = rank_rtol * lmax.max(0.0);
    let mut scaled = Mat::<f64>::zeros(d, d);
    for j in 0..d {
        let lambda = s[j];
        let mu = if lambda <= tau {
            0.0
        } else {
            lambda.powf(-exponent)
        };
        if !mu.is_finite() {
            return None;
        }
        for i in 0..d {
            scaled[(i, j)] = u[(i, j)] * mu;
        }
    }
    let mut out = Mat::<f64>::zeros(d, d);
    matmul(
        out.as_mut(),
        Accum::Replace,
        scaled.as_ref(),
        u.transpose(),
        1.0,
        par_for(d * d),
    );
    let out = Mat::<E>::from_fn(d, d, |i, j| E::of_f64(out[(i, j)]));
    (0..d)
        .all(|j| (0..d).all(|i| out[(i, j)].is_finite()))
        .then_some(out)
}
