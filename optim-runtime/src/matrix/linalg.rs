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

/// `G G^T` (`side == 0`) or `G^T G` (`side == 1`), `d × d`.
pub(super) fn side_gram<E: Float>(g: MatRef<'_, E>, side: usize, d: usize) -> Mat<E> {
    let mut gg = Mat::<E>::zeros(d, d);
    if side == 0 {
        matmul(
            gg.as_mut(),
            Accum::Replace,
            g,
            g.transpose(),
            E::one(),
            par_for(d * d),
        );
    } else {
        matmul(
            gg.as_mut(),
            Accum::Replace,
            g.transpose(),
            g,
            E::one(),
            par_for(d * d),
        );
    }
    gg
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
