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

/// `H^{-exponent}` of a symmetric positive definite `H` through its eigendecomposition, or
/// `None` if the decomposition fails or an eigenvalue is non-positive or non-finite.
pub(super) fn inverse_root<E: Float>(h: MatRef<'_, E>, exponent: f64) -> Option<Mat<E>> {
    if !(0..h.nrows()).all(|i| (0..h.ncols()).all(|j| h[(i, j)].is_finite())) {
        return None;
    }
    let evd = h.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let u = evd.U();
    let s = evd.S().column_vector();
    let d = h.nrows();
    let mut scaled = Mat::<E>::zeros(d, d);
    for j in 0..d {
        let lambda = s[j].as_f64();
        if !(lambda > 0.0 && lambda.is_finite()) {
            return None;
        }
        let f = E::of_f64(lambda.powf(-exponent));
        for i in 0..d {
            scaled[(i, j)] = u[(i, j)] * f;
        }
    }
    let mut out = Mat::<E>::zeros(d, d);
    matmul(
        out.as_mut(),
        Accum::Replace,
        scaled.as_ref(),
        u.transpose(),
        E::one(),
        par_for(d * d),
    );
    Some(out)
}
