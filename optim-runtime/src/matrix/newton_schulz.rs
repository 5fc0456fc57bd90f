//! `orthogonalize`: Newton–Schulz orthogonalization (Muon).

use super::linalg::par_for;
use super::{check_shape, require, Io, MatView, MatrixWord, Primitive, Report};
use crate::{Float, ParamInfo};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure as Bs};
use faer::{Accum, MatMut, MatRef};

/// Default Newton–Schulz iteration count (Muon).
pub const NS_STEPS: usize = 5;
/// Default quintic coefficients `(a, b, c)` (Muon).
pub const NS_COEFFS: [f64; 3] = [3.4445, -4.7750, 2.0315];
/// Default epsilon added to the Frobenius norm before normalising: 0, so that
/// [`orthogonalize`] is scale-invariant (`orthogonalize(s x) = orthogonalize(x)` for every
/// `s > 0`, up to rounding).
pub const NS_EPS: f64 = 0.0;
/// Keller Jordan's epsilon (`X / (||X||_F + 1e-7)` in `zeropower_via_newtonschulz5`): pass it
/// as `eps` to reproduce his reference exactly, including its shrinking of inputs whose norm
/// is not far above `1e-7` (about 1% at `||X||_F = 1e-5`, and an almost-zero output for norms
/// far below `1e-7`).
pub const NS_EPS_KELLER: f64 = 1e-7;

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
/// X = X / (||X||_F + eps)          (computed as (X / a) / (s + eps / a) in f64, with
///                                   a = max |x_ij|, s = sqrt(sum (x_ij / a)^2) = ||X||_F / a)
/// repeat steps: A = X X^T;  B = b A + c A A;  X = a X + B X
/// ```
///
/// `input` and `output` are `rows × cols` row-major; they may not alias. With the default
/// `eps = 0` ([`NS_EPS`]) the normalisation is exact and scale-invariant over the whole range
/// of `E` (the norm neither underflows nor overflows), so a gradient of norm `1e-20` is
/// orthogonalized like the same gradient scaled to norm 1; a zero input gives a zero output.
/// An input with a non-finite entry gives an all-NaN output. Inputs shorter than `rows ·
/// cols` or an empty matrix leave `output` as it is.
///
/// Differences from Keller's reference: his normalisation is `X / (||X||_F + 1e-7)` in the
/// compute dtype ([`NS_EPS_KELLER`] reproduces it; it shrinks small inputs: a norm of `1e-5`
/// by about 1%, a norm of `1e-20` to an almost-zero output), torch.optim.Muon's is
/// `X / max(||X||_F, 1e-7)` (scale-invariant only above `1e-7`); the normalisation here is in
/// `f64`, the iteration in `E` (his default is bfloat16; his `f32` variant is what the
/// conformance test matches).
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
    let Some(n) = rows.checked_mul(cols) else {
        return;
    };
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
    // X / (||X||_F + eps) = (X / a) / (s + eps / a): exact and free of under/overflow
    let mut amax = 0.0f64;
    for v in &input[..n] {
        let v = v.as_f64();
        if !v.is_finite() {
            output[..n].iter_mut().for_each(|o| *o = E::nan());
            return;
        }
        amax = amax.max(v.abs());
    }
    if amax == 0.0 {
        output[..n].iter_mut().for_each(|o| *o = E::zero());
        return;
    }
    let s = input[..n]
        .iter()
        .map(|&v| (v.as_f64() / amax).powi(2))
        .sum::<f64>()
        .sqrt();
    let denom = s + eps / amax;
    for j in 0..k {
        for i in 0..m {
            x[(i, j)] = E::of_f64(view[(i, j)].as_f64() / amax / denom);
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
    /// Added to the Frobenius norm before normalising (default [`NS_EPS`] = 0: scale-invariant;
    /// [`NS_EPS_KELLER`] reproduces Keller's reference).
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

/// The `orthogonalize` primitive ([`orthogonalize`] on the [`super::ViewRule::Flatten`] view:
/// a conv weight `[out, in, kh, kw]` is the `out × (in·kh·kw)` matrix); no state, its workspace
/// is the parameter's.
#[derive(Debug, Clone, Copy)]
pub struct Orthogonalize;

impl MatrixWord for Orthogonalize {
    type Config = OrthogonalizeConfig;
    const STATE: &'static [&'static str] = &[];
    const WORD: &'static str = "orthogonalize";

    /// The shape check, and: `eps` finite and `>= 0`; `a`, `b`, `c` finite.
    fn check(cfg: &OrthogonalizeConfig, info: ParamInfo<'_>) -> Result<(), String> {
        let w = Self::WORD;
        check_shape(w, info)?;
        require(
            cfg.eps.is_finite() && cfg.eps >= 0.0,
            w,
            &info,
            "eps must be finite and >= 0",
        )?;
        require(
            [cfg.a, cfg.b, cfg.c].iter().all(|v| v.is_finite()),
            w,
            &info,
            "the coefficients a, b, c must be finite",
        )
    }
}

impl<E: Float> Primitive<E> for Orthogonalize {
    fn apply(cfg: &OrthogonalizeConfig, io: Io<'_, E>) -> Report {
        let MatView { rows, cols, .. } = io.view(Self::VIEW);
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
