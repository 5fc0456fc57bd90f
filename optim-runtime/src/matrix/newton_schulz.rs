//! `orthogonalize`: Newton–Schulz orthogonalization (Muon).

use super::linalg::par_for;
use super::{require, Io, MatInOut, MatView, MatrixWord, Primitive, Report};
use crate::{Float, ParamInfo};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure as Bs};
use faer::{Accum, MatMut, MatRef, Par};

/// Default Newton–Schulz iteration count (Muon).
pub const NS_STEPS: usize = 5;
/// Default quintic coefficients `(a, b, c)` (Muon): Keller Jordan's triple, used at every
/// iteration.
pub const NS_COEFFS: [f64; 3] = [3.4445, -4.7750, 2.0315];
/// Preset `keller` (the default): [`NS_COEFFS`] at every iteration. Source: K. Jordan,
/// `zeropower_via_newtonschulz5` (github.com/KellerJordan/Muon, commit 857d1ad); pytorch_optimizer
/// 4.1 calls it `'original'`. Singular values land in about `[0.68, 1.13]` after 5 iterations.
pub const NS_KELLER: &[[f64; 3]] = &[NS_COEFFS];
/// Preset `polar_express`: one quintic per iteration (8, the last repeated after), from Amsel,
/// Persson, Musco & Gower, "The Polar Express: Optimal Matrix Sign Methods and Their Application
/// to the Muon Algorithm" (2025). These are the authors' `optimal_composition(l = 1e-3,
/// num_iters = 8, degree = 5, safety_factor_eps = 1e-2, cushion = 0.02)` output with the safety
/// factor folded into each polynomial, as pytorch_optimizer 4.1 stores them
/// (`NS_COEFFICIENTS['polar_express']`); the input is normalised by `‖X‖_F` alone. The paper's
/// printed Algorithm 1 instead lists the raw polynomials, divides them by `1.01` (`a/1.01`,
/// `b/1.01³`, `c/1.01⁵`, all but the last) and the input by `1.01·‖X‖_F + 1e-7`: a slightly
/// different map (a raw list reproduces it, see the guide).
pub const NS_POLAR_EXPRESS: &[[f64; 3]] = &[
    [8.237312490495555, -23.157747414558198, 16.680568411445915],
    [4.082441999064835, -2.893047735332586, 0.5252849256975648],
    [3.9263479922546582, -2.8547468034765298, 0.5318022422894988],
    [3.2982187133085143, -2.424541981026706, 0.48632008358844075],
    [2.2970369434552573, -1.63662558125903, 0.4002628455953627],
    [1.8763805351440397, -1.2347896577722228, 0.35891887501668385],
    [1.8564423485617974, -1.2132449880935525, 0.3568003487825883],
    [1.8749994008682747, -1.2499988017229169, 0.3749994008546422],
];
/// Preset `cubic`: the classic Newton–Schulz iteration for the polar factor,
/// `X <- 1.5 X - 0.5 X Xᵀ X` (`(a, b, c) = (1.5, -0.5, 0)`; Kovarik 1970, Björck & Bowie 1971;
/// Higham, "Functions of Matrices", 2008, ch. 8). Each singular value follows
/// `s <- 1.5 s - 0.5 s³`, which converges to 1 quadratically near 1 but slowly for small `s`:
/// it needs many more iterations than the quintics (e.g. `steps = 20`).
pub const NS_CUBIC: &[[f64; 3]] = &[[1.5, -0.5, 0.0]];
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

/// `dst = alpha · lhs · rhs` (`Accum::Replace`) or `dst += alpha · lhs · rhs` (`Accum::Add`)
/// for a product known to be symmetric: its lower half computed, then mirrored.
fn symmetric_product<E: Float>(
    mut dst: MatMut<'_, E>,
    accum: Accum,
    lhs: MatRef<'_, E>,
    rhs: MatRef<'_, E>,
    alpha: E,
    par: Par,
) {
    tri_matmul(
        dst.as_mut(),
        Bs::TriangularLower,
        accum,
        lhs,
        Bs::Rectangular,
        rhs,
        Bs::Rectangular,
        alpha,
        par,
    );
    mirror_lower(dst);
}

/// `dst = c · src`, element by element (`dst` and `src` of the same shape).
fn scale_into<E: Float>(mut dst: MatMut<'_, E>, c: E, src: MatRef<'_, E>) {
    for j in 0..dst.ncols() {
        for i in 0..dst.nrows() {
            dst[(i, j)] = c * src[(i, j)];
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
/// X = X / (||X||_F + eps)          (computed as (X / m) / (s + eps / m) in f64, with
///                                   m = max |x_ij|, s = sqrt(sum (x_ij / m)^2) = ||X||_F / m)
/// for i in 0..steps:  (a, b, c) = coeffs[min(i, coeffs.len() - 1)]
///                     A = X X^T;  B = b A + c A A;  X = a X + B X
/// ```
///
/// Each iteration applies the odd polynomial `p_i(s) = a s + b s³ + c s⁵` to every singular
/// value. `coeffs` is the per-iteration schedule, its last triple repeated when `steps` exceeds
/// its length and its tail unused when `steps` is shorter (as pytorch_optimizer 4.1's
/// `zero_power_via_newton_schulz_5` and the Polar Express paper do): `&[NS_COEFFS]` (=
/// [`NS_KELLER`]) is Muon's fixed triple, [`NS_POLAR_EXPRESS`] the Polar Express schedule,
/// [`NS_CUBIC`] the classic cubic iteration. An empty `coeffs` runs no iteration (the output is
/// the normalised input); the [`Orthogonalize`] primitive rejects it.
///
/// `m` holds the `rows × cols` input and output (row-major, distinct buffers). With the default
/// `eps = 0` ([`NS_EPS`]) the normalisation is exact and scale-invariant over the whole range
/// of `E` (the norm neither underflows nor overflows), so a gradient of norm `1e-20` is
/// orthogonalized like the same gradient scaled to norm 1; a zero input gives a zero output.
/// An input with a non-finite entry gives an all-NaN output.
///
/// Differences from Keller's reference: his normalisation is `X / (||X||_F + 1e-7)` in the
/// compute dtype ([`NS_EPS_KELLER`] reproduces it; it shrinks small inputs: a norm of `1e-5`
/// by about 1%, a norm of `1e-20` to an almost-zero output), torch.optim.Muon's is
/// `X / max(||X||_F, 1e-7)` (scale-invariant only above `1e-7`); the normalisation here is in
/// `f64`, the iteration in `E` (his default is bfloat16; his `f32` variant is what the
/// conformance test matches).
pub fn orthogonalize<E: Float>(m: MatInOut<'_, E>, steps: usize, coeffs: &[[f64; 3]], eps: f64) {
    orthogonalize_with(m, steps, coeffs, eps, &mut Vec::new());
}

/// [`orthogonalize`] with a caller-owned workspace (`2·m·k + 2·m²` elements for the `m × k`
/// orientation, `m <= k`), grown on first use and reused after: no allocation per step in the
/// steady state. Generated code passes the parameter's own workspace.
pub fn orthogonalize_with<E: Float>(
    m: MatInOut<'_, E>,
    steps: usize,
    coeffs: &[[f64; 3]],
    eps: f64,
    work: &mut Vec<E>,
) {
    let (input, output) = m.split();
    let (rows, cols) = input.shape();
    let transpose = rows > cols;
    let view = input.faer();
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
    for v in input.data() {
        let v = v.as_f64();
        if !v.is_finite() {
            output.fill(E::nan());
            return;
        }
        amax = amax.max(v.abs());
    }
    if amax == 0.0 {
        output.fill(E::zero());
        return;
    }
    let s = input
        .data()
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
    let par = par_for(m * k);
    let last = coeffs.len().saturating_sub(1);
    let steps = if coeffs.is_empty() { 0 } else { steps };
    for i in 0..steps {
        let [ca, cb, cc] = coeffs[i.min(last)].map(E::of_f64);
        // A = X X^T is symmetric: compute its lower half, then mirror it
        let xt = x.as_ref().transpose();
        symmetric_product(a.as_mut(), Accum::Replace, x.as_ref(), xt, E::one(), par);
        // B = b A + c A A, also symmetric
        scale_into(b.as_mut(), cb, a.as_ref());
        symmetric_product(b.as_mut(), Accum::Add, a.as_ref(), a.as_ref(), cc, par);
        // X <- a X + B X
        scale_into(xn.as_mut(), ca, x.as_ref());
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

matrix_config! {
    /// Arguments of `orthogonalize` (defaults: Muon's).
    pub struct OrthogonalizeConfig {
        /// Newton–Schulz iterations (default [`NS_STEPS`]).
        pub steps: usize = NS_STEPS,
        /// Quintic coefficient `a` at every iteration when `coeffs` is `None` (default
        /// [`NS_COEFFS`]`[0]`).
        pub a: f64 = NS_COEFFS[0],
        /// Quintic coefficient `b` (default [`NS_COEFFS`]`[1]`), as `a`.
        pub b: f64 = NS_COEFFS[1],
        /// Quintic coefficient `c` (default [`NS_COEFFS`]`[2]`), as `a`.
        pub c: f64 = NS_COEFFS[2],
        /// A per-iteration schedule of `(a, b, c)` triples replacing `a`, `b`, `c` (the DSL's
        /// `coeffs = polar_express` or `coeffs = [(a, b, c), ...]`; see [`orthogonalize`] for how
        /// it maps to iterations). Default `None`: the fixed triple `(a, b, c)`.
        pub coeffs: Option<&'static [[f64; 3]]> = None,
        /// Added to the Frobenius norm before normalising (default [`NS_EPS`] = 0: scale-invariant;
        /// [`NS_EPS_KELLER`] reproduces Keller's reference).
        pub eps: f64 = NS_EPS,
    }
}

matrix_word! {
    /// The `orthogonalize` primitive ([`orthogonalize`] on the [`super::ViewRule::Flatten`] view:
    /// a conv weight `[out, in, kh, kw]` is the `out × (in·kh·kw)` matrix); no state, its workspace
    /// is the parameter's.
    pub struct Orthogonalize("orthogonalize", OrthogonalizeConfig, state []);
    check [eps: NonNeg] then check_coefficients;
}

/// [`Orthogonalize`]'s checks beyond `eps`: `a`, `b`, `c` finite; `coeffs`, when given, not
/// empty and finite.
fn check_coefficients(
    cfg: &OrthogonalizeConfig,
    w: &str,
    info: &ParamInfo<'_>,
) -> Result<(), String> {
    require(
        [cfg.a, cfg.b, cfg.c].iter().all(|v| v.is_finite()),
        w,
        info,
        "the coefficients a, b, c must be finite",
    )?;
    let schedule = cfg.coeffs.unwrap_or(&[]);
    require(
        cfg.coeffs.is_none() || !schedule.is_empty(),
        w,
        info,
        "the coefficient schedule `coeffs` must hold at least one (a, b, c) triple",
    )?;
    require(
        schedule.iter().flatten().all(|v| v.is_finite()),
        w,
        info,
        "the coefficient schedule `coeffs` must be finite",
    )
}

impl<E: Float> Primitive<E> for Orthogonalize {
    fn apply(cfg: &OrthogonalizeConfig, io: Io<'_, E>) -> Report {
        let MatView { rows, cols, .. } = io.view(Self::VIEW);
        let fixed = [[cfg.a, cfg.b, cfg.c]];
        let coeffs = cfg.coeffs.unwrap_or(&fixed);
        if let Some(m) = MatInOut::prefix(io.input, io.out, rows, cols) {
            orthogonalize_with(m, cfg.steps, coeffs, cfg.eps, io.work);
        }
        Report::default()
    }
}
