//! Whole-tensor (matrix) primitives: the barriers between a rule's loops. Each function is one
//! DSL word. Matrices are the row-major `rows × cols` view of a parameter (see
//! [`crate::ParamInfo`]); linear algebra runs on faer.

use crate::Float;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

/// Default Newton–Schulz iteration count (Muon).
pub const NS_STEPS: usize = 5;
/// Default quintic coefficients `(a, b, c)` (Muon).
pub const NS_COEFFS: [f64; 3] = [3.4445, -4.7750, 2.0315];
/// Default epsilon added to the Frobenius norm before normalising (Muon).
pub const NS_EPS: f64 = 1e-7;

fn par_for(n: usize) -> Par {
    // below ~128² the pool's overhead exceeds the work
    if n >= 128 * 128 {
        Par::rayon(0)
    } else {
        Par::Seq
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
    let n = rows * cols;
    if input.len() < n || output.len() < n || n == 0 {
        return;
    }
    let transpose = rows > cols;
    let view = MatRef::from_row_major_slice(&input[..n], rows, cols);
    let view = if transpose { view.transpose() } else { view };
    let (m, k) = (view.nrows(), view.ncols());
    let norm = input[..n]
        .iter()
        .map(|&v| v.as_f64() * v.as_f64())
        .sum::<f64>()
        .sqrt();
    let scale = E::one() / (E::of_f64(norm) + E::of_f64(eps));
    let mut x: Mat<E> = Mat::from_fn(m, k, |i, j| view[(i, j)] * scale);
    let mut a = Mat::<E>::zeros(m, m);
    let mut aa = Mat::<E>::zeros(m, m);
    let mut bx = Mat::<E>::zeros(m, k);
    let (ca, cb, cc) = (
        E::of_f64(coeffs[0]),
        E::of_f64(coeffs[1]),
        E::of_f64(coeffs[2]),
    );
    let par = par_for(m * k);
    for _ in 0..steps {
        matmul(
            a.as_mut(),
            Accum::Replace,
            x.as_ref(),
            x.transpose(),
            E::one(),
            par,
        );
        matmul(
            aa.as_mut(),
            Accum::Replace,
            a.as_ref(),
            a.as_ref(),
            E::one(),
            par,
        );
        // B = b A + c A A, stored in `aa`
        for j in 0..m {
            for i in 0..m {
                aa[(i, j)] = cb * a[(i, j)] + cc * aa[(i, j)];
            }
        }
        matmul(
            bx.as_mut(),
            Accum::Replace,
            aa.as_ref(),
            x.as_ref(),
            E::one(),
            par,
        );
        for j in 0..k {
            for i in 0..m {
                x[(i, j)] = ca * x[(i, j)] + bx[(i, j)];
            }
        }
    }
    for r in 0..rows {
        for c in 0..cols {
            output[r * cols + c] = if transpose { x[(c, r)] } else { x[(r, c)] };
        }
    }
}
