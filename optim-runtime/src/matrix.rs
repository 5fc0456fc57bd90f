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

/// Default epsilon of [`factored_second_moment`]: `f32::EPSILON`, PyTorch Adafactor's
/// `eps1 = None` for `float32`.
pub const FACTORED_EPS: f64 = f32::EPSILON as f64;

/// `factored_second_moment(x, beta)`: Adafactor's second-moment estimate (Shazeer & Stern,
/// "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018, Alg. 4–5; as
/// `torch.optim.Adafactor`).
///
/// For a parameter of rank ≥ 2 (its `rows × cols` matrix view) the state is a row vector `r`
/// (`rows`) and a column vector `c` (`cols`), `rows + cols` elements in all:
/// ```text
/// r = r + (1 - beta) * (mean_over_cols(x^2) - r)
/// c = c + (1 - beta) * (mean_over_rows(x^2) - c)
/// out = r c^T / max(mean(r), eps)
/// ```
/// For rank 0 and 1 the state is the full `v = v + (1 - beta) * (x^2 - v)` and `out = v`.
/// Row and column sums are accumulated in `f64`. `state` is created (zeros) on first use.
pub fn factored_second_moment<E: Float>(
    x: &[E],
    out: &mut [E],
    state: &mut Vec<E>,
    rows: usize,
    cols: usize,
    factored: bool,
    beta: f64,
    eps: f64,
) {
    let n = rows * cols;
    if x.len() < n || out.len() < n {
        return;
    }
    let w = E::of_f64(1.0 - beta);
    if !factored {
        if state.len() != n {
            state.clear();
            state.resize(n, E::zero());
        }
        for i in 0..n {
            let v = state[i] + w * (x[i] * x[i] - state[i]);
            state[i] = v;
            out[i] = v;
        }
        return;
    }
    if state.len() != rows + cols {
        state.clear();
        state.resize(rows + cols, E::zero());
    }
    let (r, c) = state.split_at_mut(rows);
    let mut colsum = vec![0.0f64; cols];
    for i in 0..rows {
        let row = &x[i * cols..(i + 1) * cols];
        let mut s = 0.0f64;
        for (j, &v) in row.iter().enumerate() {
            let v2 = v.as_f64() * v.as_f64();
            s += v2;
            colsum[j] += v2;
        }
        let mean = E::of_f64(s / cols as f64);
        r[i] = r[i] + w * (mean - r[i]);
    }
    for j in 0..cols {
        let mean = E::of_f64(colsum[j] / rows as f64);
        c[j] = c[j] + w * (mean - c[j]);
    }
    let rmean = r.iter().map(|v| v.as_f64()).sum::<f64>() / rows as f64;
    let denom = E::of_f64(rmean.max(eps));
    for i in 0..rows {
        for j in 0..cols {
            out[i * cols + j] = r[i] * c[j] / denom;
        }
    }
}

/// Configuration of [`kron_precondition`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KronConfig {
    /// `None`: statistics are a running sum (Shampoo, Gupta et al. 2018); `Some(beta)`: an
    /// EMA `H = beta H + (1 - beta) G G^T`.
    pub beta: Option<f64>,
    /// Initial statistics `eps * I` (also keeps the inverse roots finite).
    pub eps: f64,
    /// Recompute the inverse roots every this many steps (and on the first step).
    pub update_freq: u64,
    /// Root exponent override: factors are raised to `-exponent` (default `1 / (2 k)`, k = 2
    /// factors for matrices and 1 for vectors: `H^{-1/4}` and `H^{-1/2}`).
    pub exponent: Option<f64>,
    /// Dimensions larger than this are not preconditioned (identity factor).
    pub max_dim: usize,
}

/// Default [`KronConfig`]: running sum, `eps = 1e-6`, refresh every step, default exponents,
/// `max_dim = 8192`.
pub const KRON_DEFAULT: KronConfig = KronConfig {
    beta: None,
    eps: 1e-6,
    update_freq: 1,
    exponent: None,
    max_dim: 8192,
};

/// `kron_precondition(x)`: Shampoo's Kronecker-factored preconditioner (Gupta, Koren & Singer,
/// "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018, Alg. 1/2).
///
/// Matrix view `G` (`rows × cols`, rank ≥ 2): `L += G G^T`, `R += G^T G` (or their EMAs),
/// `out = L^{-1/4} G R^{-1/4}`. Rank 0/1 (`n` elements): `H += g g^T`, `out = H^{-1/2} g`.
/// Inverse roots come from a symmetric eigendecomposition (faer) and are recomputed every
/// `update_freq` steps. `stats` holds the factors and `roots` their inverse roots, created on
/// first use (`eps I` and its root). A side longer than `max_dim`, or of length 1 in a matrix,
/// gets the identity.
///
/// Bad input is skipped, never stored: a gradient with a non-finite entry does not enter the
/// statistics, and a factor whose eigendecomposition fails or yields non-finite or
/// non-positive eigenvalues keeps its previous inverse root. Returns the number of such skips
/// (0 normally).
pub fn kron_precondition<E: Float>(
    x: &[E],
    out: &mut [E],
    stats: &mut Vec<E>,
    roots: &mut Vec<E>,
    rows: usize,
    cols: usize,
    factored: bool,
    step: u64,
    cfg: KronConfig,
) -> usize {
    let n = rows * cols;
    if x.len() < n || out.len() < n {
        return 0;
    }
    // sides: (size, active)
    let sides: Vec<(usize, bool)> = if factored {
        vec![
            (rows, rows > 1 && rows <= cfg.max_dim),
            (cols, cols > 1 && cols <= cfg.max_dim),
        ]
    } else {
        vec![(n, n <= cfg.max_dim)]
    };
    let k = if factored { 2.0 } else { 1.0 };
    let exponent = cfg.exponent.unwrap_or(1.0 / (2.0 * k));
    let total: usize = sides.iter().filter(|s| s.1).map(|s| s.0 * s.0).sum();
    let fresh = stats.len() != total;
    if fresh {
        stats.clear();
        roots.clear();
        for &(d, active) in &sides {
            if active {
                for i in 0..d {
                    for j in 0..d {
                        stats.push(if i == j {
                            E::of_f64(cfg.eps)
                        } else {
                            E::zero()
                        });
                        roots.push(if i == j {
                            E::of_f64(cfg.eps.powf(-exponent))
                        } else {
                            E::zero()
                        });
                    }
                }
            }
        }
    }
    let mut skips = 0;
    let finite = x[..n].iter().all(|v| v.is_finite());
    let g = MatRef::from_row_major_slice(
        &x[..n],
        if factored { rows } else { n },
        if factored { cols } else { 1 },
    );
    let mut offset = 0;
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        let len = d * d;
        if finite {
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
            let h = &mut stats[offset..offset + len];
            match cfg.beta {
                None => {
                    for j in 0..d {
                        for i in 0..d {
                            h[i * d + j] += gg[(i, j)];
                        }
                    }
                }
                Some(b) => {
                    let (b, w) = (E::of_f64(b), E::of_f64(1.0 - b));
                    for j in 0..d {
                        for i in 0..d {
                            h[i * d + j] = b * h[i * d + j] + w * gg[(i, j)];
                        }
                    }
                }
            }
        } else {
            skips += 1;
        }
        if fresh || cfg.update_freq <= 1 || step % cfg.update_freq == 0 {
            let h = MatRef::from_row_major_slice(&stats[offset..offset + len], d, d);
            match inverse_root(h, exponent) {
                Some(r) => {
                    for i in 0..d {
                        for j in 0..d {
                            roots[offset + i * d + j] = r[(i, j)];
                        }
                    }
                }
                None => skips += 1,
            }
        }
        offset += len;
    }
    // apply: out = L^-e G R^-e (identity for inactive sides)
    let mut cur: Mat<E> = g.to_owned();
    let mut offset = 0;
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        let r = MatRef::from_row_major_slice(&roots[offset..offset + d * d], d, d);
        let mut next = Mat::<E>::zeros(cur.nrows(), cur.ncols());
        if side == 0 {
            matmul(
                next.as_mut(),
                Accum::Replace,
                r,
                cur.as_ref(),
                E::one(),
                par_for(cur.nrows() * cur.ncols()),
            );
        } else {
            matmul(
                next.as_mut(),
                Accum::Replace,
                cur.as_ref(),
                r,
                E::one(),
                par_for(cur.nrows() * cur.ncols()),
            );
        }
        cur = next;
        offset += d * d;
    }
    let (m, c) = (cur.nrows(), cur.ncols());
    for i in 0..m {
        for j in 0..c {
            out[i * c + j] = cur[(i, j)];
        }
    }
    skips
}

/// `H^{-exponent}` of a symmetric positive definite `H` through its eigendecomposition, or
/// `None` if the decomposition fails or an eigenvalue is non-positive or non-finite.
fn inverse_root<E: Float>(h: MatRef<'_, E>, exponent: f64) -> Option<Mat<E>> {
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
