//! `orthogonalize`: Newton–Schulz orthogonalization (Muon).

use super::linalg::par_for;
use super::{Io, MatrixWord, Primitive, Report};
use crate::Float;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure as Bs};
use faer::{Accum, MatMut, MatRef};

/// Default Newton–Schulz iteration count (Muon).
pub const NS_STEPS: usize = 5;
/// Default quintic coefficients `(a, b, c)` (Muon).
pub const NS_COEFFS: [f64; 3] = [3.4445, -4.7750, 2.0315];
/// Default epsilon added to the Frobenius norm before normalising (Muon).
pub const NS_EPS: f64 = 1e-7;

/// Copies the strict lower triangle of a square matrix onto its upper triangle.
fn mirror_lower<E: Float>(mut m: MatMut<'_, E>) {
    let d = m.nrows();
    for j in 0..d {
        for i in 0..j {
            m[(i, j)] = m[(j, i)];
        }
    }
}

/// `orthogonalize(x)`: the Newton–Schulz quintic iteration of Muon (Jordan et al., 2024,
/// "Muon: An optimizer for hidden layers", github.com/KellerJordan/Muon), which maps `x` to an
/// approximation of `U Vᵀ` from its SVD `x = U S Vᵀ` (singular values land in about
/// `[0.68, 1.13]` with the default coefficients):
///
/// ```text
/// X = x (transposed when rows > cols, so that X X^T is the smaller Gram matrix)
/// X = X / (||X||_F + eps)
/// repeat steps: A = X X^T;  B = b A + c A A;  X = a X + B X
/// ```
///
/// `input` and `output` are `rows × cols` row-major; they may not alias. A zero (or tiny, far
/// below `eps`) input gives an (almost) zero output, never NaN. Differences from Keller's
/// reference: the Frobenius norm is accumulated in `f64`; compute is in `E` (his default is
/// bfloat16; his `f32` variant is what the conformance test matches).
pub fn orthogonalize<E: Float>(
    input: &[E],
    output: &mut [E],
    rows: usize,
    cols: usize,
    steps: usize,
    coeffs: [f64; 3],
    eps: f64,
) {
    orthogonalize_with(
        input,
        output,
        rows,
        cols,
        steps,
        coeffs,
        eps,
        &mut Vec::new(),
    );
}

/// [`orthogonalize`] with a caller-owned workspace (`2·m·k + 2·m²` elements for the `m × k`
/// orientation, `m <= k`), grown on first use and reused after: no allocation per step in the
/// steady state. Generated code passes the parameter's own workspace.
pub fn orthogonalize_with<E: Float>(
    input: &[E],
    output: &mut [E],
    rows: usize,
    cols: usize,
    steps: usize,
    coeffs: [f64; 3],
    eps: f64,
    work: &mut Vec<E>,
) {
    let n = rows * cols;
    if input.len() < n || output.len() < n || n == 0 {
        return;
    }
    let transpose = rows > cols;
    let view = MatRef::from_row_major_slice(&input[..n], rows, cols);
    let view = if transpose { view.transpose() } else { view };
    let (m, k) = (view.nrows(), view.ncols());
    let need = 2 * m * k + 2 * m * m;
    if work.len() < need {
        work.resize(need, E::zero());
    }
    let (xs, rest) = work.split_at_mut(m * k);
    let (xns, rest) = rest.split_at_mut(m * k);
    let (as_, bs) = rest.split_at_mut(m * m);
    let mut x = MatMut::from_column_major_slice_mut(xs, m, k);
    let mut xn = MatMut::from_column_major_slice_mut(xns, m, k);
    let mut a = MatMut::from_column_major_slice_mut(as_, m, m);
    let mut b = MatMut::from_column_major_slice_mut(&mut bs[..m * m], m, m);
    let norm = input[..n]
        .iter()
        .map(|&v| v.as_f64() * v.as_f64())
        .sum::<f64>()
        .sqrt();
    let scale = E::one() / (E::of_f64(norm) + E::of_f64(eps));
    for j in 0..k {
        for i in 0..m {
            x[(i, j)] = view[(i, j)] * scale;
        }
    }
    let (ca, cb, cc) = (
        E::of_f64(coeffs[0]),
        E::of_f64(coeffs[1]),
        E::of_f64(coeffs[2]),
    );
    let par = par_for(m * k);
    for _ in 0..steps {
        // A = X X^T is symmetric: compute its lower half, then mirror it
        tri_matmul(
            a.as_mut(),
            Bs::TriangularLower,
            Accum::Replace,
            x.as_ref(),
            Bs::Rectangular,
            x.as_ref().transpose(),
            Bs::Rectangular,
            E::one(),
            par,
        );
        mirror_lower(a.as_mut());
        // B = b A + c A A, also symmetric
        for j in 0..m {
            for i in 0..m {
                b[(i, j)] = cb * a[(i, j)];
            }
        }
        tri_matmul(
            b.as_mut(),
            Bs::TriangularLower,
            Accum::Add,
            a.as_ref(),
            Bs::Rectangular,
            a.as_ref(),
            Bs::Rectangular,
            cc,
            par,
        );
        mirror_lower(b.as_mut());
        // X <- a X + B X
        for j in 0..k {
            for i in 0..m {
                xn[(i, j)] = ca * x[(i, j)];
            }
        }
        matmul(
            xn.as_mut(),
            Accum::Add,
            b.as_ref(),
            x.as_ref(),
            E::one(),
            par,
        );
        std::mem::swap(&mut x, &mut xn);
    }
    for r in 0..rows {
        for c in 0..cols {
            output[r * cols + c] = if transpose { x[(c, r)] } else { x[(r, c)] };
        }
    }
}

/// Arguments of `orthogonalize` (defaults: Muon's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrthogonalizeConfig {
    /// Newton–Schulz iterations (default [`NS_STEPS`]).
    pub steps: usize,
    /// Quintic coefficient `a` (default [`NS_COEFFS`]`[0]`).
    pub a: f64,
    /// Quintic coefficient `b` (default [`NS_COEFFS`]`[1]`).
    pub b: f64,
    /// Quintic coefficient `c` (default [`NS_COEFFS`]`[2]`).
    pub c: f64,
    /// Added to the Frobenius norm before normalising (default [`NS_EPS`]).
    pub eps: f64,
}

impl Default for OrthogonalizeConfig {
    fn default() -> Self {
        OrthogonalizeConfig {
            steps: NS_STEPS,
            a: NS_COEFFS[0],
            b: NS_COEFFS[1],
            c: NS_COEFFS[2],
            eps: NS_EPS,
        }
    }
}

/// The `orthogonalize` primitive ([`orthogonalize`]); no state, its workspace is the
/// parameter's.
#[derive(Debug, Clone, Copy)]
pub struct Orthogonalize;

impl MatrixWord for Orthogonalize {
    type Config = OrthogonalizeConfig;
    const STATE: &'static [&'static str] = &[];
}

impl<E: Float> Primitive<E> for Orthogonalize {
    fn apply(cfg: &OrthogonalizeConfig, io: Io<'_, E>) -> Report {
        let (rows, cols) = (io.rows(), io.cols());
        orthogonalize_with(
            io.input,
            io.out,
            rows,
            cols,
            cfg.steps,
            [cfg.a, cfg.b, cfg.c],
            cfg.eps,
            io.work,
        );
        Report::default()
    }
}
