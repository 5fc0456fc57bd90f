//! Whole-tensor (matrix) primitives: the barriers between a rule's loops. Each function is one
//! DSL word. Matrices are the row-major `rows × cols` view of a parameter (see
//! [`crate::ParamInfo`]); linear algebra runs on faer.

use crate::Float;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure as Bs};
use faer::{Accum, Mat, MatMut, MatRef, Par};

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
            let gg = side_gram(g, side, d);
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
    write_row_major(cur.as_ref(), out);
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

/// Default refresh interval of a Kronecker eigenbasis (SOAP's `precondition_frequency`).
pub const EIGENBASIS_UPDATE_FREQ: u64 = 10;
/// Default largest side with an eigenbasis (SOAP's `max_precondition_dim`).
pub const EIGENBASIS_MAX_DIM: usize = 10000;

/// Configuration of a Kronecker eigenbasis (SOAP).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EigenbasisConfig {
    /// EMA coefficient of the statistics `GG = beta GG + (1 - beta) G G^T`.
    pub beta: f64,
    /// Refresh the basis every this many updates after the first.
    pub update_freq: u64,
    /// Sides longer than this keep the identity basis.
    pub max_dim: usize,
}

fn eigen_sides(rows: usize, cols: usize, factored: bool, max_dim: usize) -> Vec<(usize, bool)> {
    if factored {
        vec![(rows, rows <= max_dim), (cols, cols <= max_dim)]
    } else {
        // vectors keep the identity basis (SOAP's precondition_1d = False)
        vec![(rows * cols, false)]
    }
}

/// Copies `m` into the row-major buffer `out` (`m.nrows() × m.ncols()` elements).
fn write_row_major<E: Float>(m: MatRef<'_, E>, out: &mut [E]) {
    let c = m.ncols();
    for i in 0..m.nrows() {
        for j in 0..c {
            out[i * c + j] = m[(i, j)];
        }
    }
}

fn side_gram<E: Float>(g: MatRef<'_, E>, side: usize, d: usize) -> Mat<E> {
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

/// `kron_eigenbasis(x)`, first use: `GG_i = (1 - beta) G_(i) G_(i)^T` for each active side and
/// `Q_i` = its eigenvectors, sorted by descending eigenvalue (SOAP, Vyas et al., "SOAP:
/// Improving and Stabilizing Shampoo using Adam", ICLR 2025, Alg. 1; pytorch-optimizer port).
/// Returns `true` when it initialised the state (the parameter's first step), `false` when the
/// state already existed or no side has a basis (nothing is done). A non-finite `x`
/// initialises the identity basis.
pub fn eigenbasis_init<E: Float>(
    x: &[E],
    gg: &mut Vec<E>,
    q: &mut Vec<E>,
    rows: usize,
    cols: usize,
    factored: bool,
    cfg: EigenbasisConfig,
) -> bool {
    let sides = eigen_sides(rows, cols, factored, cfg.max_dim);
    let total: usize = sides.iter().filter(|s| s.1).map(|s| s.0 * s.0).sum();
    if total == 0 || (gg.len() == total && q.len() == total) {
        return false;
    }
    gg.clear();
    q.clear();
    let n = rows * cols;
    let finite = x.len() >= n && x[..n].iter().all(|v| v.is_finite());
    let g = MatRef::from_row_major_slice(
        &x[..n.min(x.len())],
        rows,
        if n <= x.len() { cols } else { 0 },
    );
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        let w = E::of_f64(1.0 - cfg.beta);
        let mut stats = Mat::<E>::zeros(d, d);
        if finite && g.ncols() == cols {
            let gram = side_gram(g, side, d);
            for j in 0..d {
                for i in 0..d {
                    stats[(i, j)] = w * gram[(i, j)];
                }
            }
        }
        let basis =
            descending_eigenvectors(stats.as_ref()).unwrap_or_else(|| Mat::<E>::identity(d, d));
        for i in 0..d {
            for j in 0..d {
                gg.push(stats[(i, j)]);
            }
        }
        for i in 0..d {
            for j in 0..d {
                q.push(basis[(i, j)]);
            }
        }
    }
    true
}

fn descending_eigenvectors<E: Float>(h: MatRef<'_, E>) -> Option<Mat<E>> {
    let d = h.nrows();
    let mut reg = h.to_owned();
    for i in 0..d {
        reg[(i, i)] += E::of_f64(1e-30);
    }
    let evd = reg.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let u = evd.U();
    let out = Mat::from_fn(d, d, |i, j| u[(i, d - 1 - j)]);
    if (0..d).all(|i| (0..d).all(|j| out[(i, j)].is_finite())) {
        Some(out)
    } else {
        None
    }
}

/// `kron_eigenbasis(x)`, every later step (run after the step's update, like the reference):
/// `GG_i = beta GG_i + (1 - beta) G_(i) G_(i)^T`; every `update_freq` steps (`(step - 1) %
/// update_freq == 0`) each active side is refreshed by one power-iteration step with QR:
/// `est = diag(Q^T GG Q)`, columns sorted by descending `est`, every buffer in `rotated`
/// (states kept in the eigenbasis, `rows × cols`) permuted the same way along that side, and
/// `Q = qr(GG Q).Q`. A non-finite `x` is skipped (statistics unchanged); a refresh producing a
/// non-finite basis keeps the old one. Returns the number of skips.
pub fn eigenbasis_update<E: Float>(
    x: &[E],
    gg: &mut [E],
    q: &mut [E],
    rows: usize,
    cols: usize,
    factored: bool,
    step: u64,
    cfg: EigenbasisConfig,
    rotated: &mut [&mut Vec<E>],
) -> usize {
    let sides = eigen_sides(rows, cols, factored, cfg.max_dim);
    let n = rows * cols;
    if x.len() < n {
        return 0;
    }
    let mut skips = 0;
    let finite = x[..n].iter().all(|v| v.is_finite());
    let g = MatRef::from_row_major_slice(&x[..n], rows, cols);
    let refresh = cfg.update_freq > 0 && step > 1 && (step - 1) % cfg.update_freq == 0;
    let mut offset = 0;
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        let len = d * d;
        if gg.len() < offset + len || q.len() < offset + len {
            return skips;
        }
        if finite {
            let gram = side_gram(g, side, d);
            let (b, w) = (E::of_f64(cfg.beta), E::of_f64(1.0 - cfg.beta));
            for i in 0..d {
                for j in 0..d {
                    let k = offset + i * d + j;
                    gg[k] = b * gg[k] + w * gram[(i, j)];
                }
            }
        } else {
            skips += 1;
        }
        if refresh {
            let h = MatRef::from_row_major_slice(&gg[offset..offset + len], d, d);
            let qm = MatRef::from_row_major_slice(&q[offset..offset + len], d, d);
            let mut hq = Mat::<E>::zeros(d, d);
            matmul(hq.as_mut(), Accum::Replace, h, qm, E::one(), par_for(len));
            // est_j = q_j^T H q_j
            let mut est: Vec<(usize, f64)> = (0..d)
                .map(|j| {
                    (
                        j,
                        (0..d)
                            .map(|i| qm[(i, j)].as_f64() * hq[(i, j)].as_f64())
                            .sum::<f64>(),
                    )
                })
                .collect();
            est.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
            let idx: Vec<usize> = est.iter().map(|e| e.0).collect();
            let sorted = Mat::from_fn(d, d, |i, j| hq[(i, idx[j])]);
            let qr = sorted.qr().compute_thin_Q();
            if (0..d).all(|i| (0..d).all(|j| qr[(i, j)].is_finite())) {
                for buf in rotated.iter_mut() {
                    if buf.len() == n {
                        permute_side(buf, rows, cols, side, &idx);
                    }
                }
                for i in 0..d {
                    for j in 0..d {
                        q[offset + i * d + j] = qr[(i, j)];
                    }
                }
            } else {
                skips += 1;
            }
        }
        offset += len;
    }
    skips
}

/// `buf.index_select(side, idx)` for a row-major `rows × cols` buffer.
fn permute_side<E: Float>(buf: &mut [E], rows: usize, cols: usize, side: usize, idx: &[usize]) {
    let old = buf.to_vec();
    for r in 0..rows {
        for c in 0..cols {
            buf[r * cols + c] = if side == 0 {
                old[idx[r] * cols + c]
            } else {
                old[r * cols + idx[c]]
            };
        }
    }
}

/// `rotate(x, basis)` (`inverse = false`): `Q_L^T X Q_R`; `unrotate(x, basis)`
/// (`inverse = true`): `Q_L X Q_R^T`. Sides without a basis (longer than `max_dim`, or
/// vectors) use the identity. `q` is the state written by [`eigenbasis_init`].
pub fn rotate<E: Float>(
    x: &[E],
    out: &mut [E],
    q: &[E],
    rows: usize,
    cols: usize,
    factored: bool,
    max_dim: usize,
    inverse: bool,
) {
    let n = rows * cols;
    if x.len() < n || out.len() < n {
        return;
    }
    let sides = eigen_sides(rows, cols, factored, max_dim);
    let mut cur: Mat<E> = MatRef::from_row_major_slice(&x[..n], rows, cols).to_owned();
    let mut offset = 0;
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        if q.len() < offset + d * d {
            break;
        }
        let qm = MatRef::from_row_major_slice(&q[offset..offset + d * d], d, d);
        let mut next = Mat::<E>::zeros(rows, cols);
        let par = par_for(n);
        match (side, inverse) {
            (0, false) => matmul(
                next.as_mut(),
                Accum::Replace,
                qm.transpose(),
                cur.as_ref(),
                E::one(),
                par,
            ),
            (0, true) => matmul(
                next.as_mut(),
                Accum::Replace,
                qm,
                cur.as_ref(),
                E::one(),
                par,
            ),
            (_, false) => matmul(
                next.as_mut(),
                Accum::Replace,
                cur.as_ref(),
                qm,
                E::one(),
                par,
            ),
            (_, true) => matmul(
                next.as_mut(),
                Accum::Replace,
                cur.as_ref(),
                qm.transpose(),
                E::one(),
                par,
            ),
        }
        cur = next;
        offset += d * d;
    }
    write_row_major(cur.as_ref(), out);
}

/// Default damping of [`kfac_precondition`].
pub const KFAC_DAMPING: f64 = 1e-3;

/// `kfac_precondition(x, damping)`: K-FAC-style layer-wise preconditioning with user-supplied
/// Kronecker factors (Martens & Grosse, "Optimizing Neural Networks with Kronecker-factored
/// Approximate Curvature", ICML 2015, §3–4): for the `rows × cols` view `G`,
/// ```text
/// out = (S + damping I)^{-1} G (A + damping I)^{-1}
/// ```
/// where `S = factors.left` (`rows × rows`, output-gradient covariance) and `A = factors.right`
/// (`cols × cols`, input covariance `E[x x^T]`); a missing factor (or no factors) is the
/// identity, so the output is the gradient itself. The damped inverses are cached in `inv`
/// and recomputed when the factors change. A factor whose eigendecomposition fails or is not
/// positive definite after damping is treated as the identity (counted in the return value).
pub fn kfac_precondition<E: Float>(
    x: &[E],
    out: &mut [E],
    factors: Option<&mut crate::KronFactors<E>>,
    inv: &mut Vec<E>,
    rows: usize,
    cols: usize,
    damping: f64,
) -> usize {
    let n = rows * cols;
    if x.len() < n || out.len() < n {
        return 0;
    }
    let mut skips = 0;
    // a factor of the wrong size (validated before the step; kept safe here too) is the identity
    let (has_l, has_r) = match &factors {
        Some(f) => (
            f.left.as_ref().is_some_and(|v| v.len() == rows * rows),
            f.right.as_ref().is_some_and(|v| v.len() == cols * cols),
        ),
        None => (false, false),
    };
    let want = usize::from(has_l) * rows * rows + usize::from(has_r) * cols * cols;
    if let Some(f) = factors {
        if f.dirty || inv.len() != want {
            inv.clear();
            for (side, d, used) in [(&f.left, rows, has_l), (&f.right, cols, has_r)] {
                let Some(h) = side.as_ref().filter(|_| used) else {
                    continue;
                };
                let mut damped = MatRef::from_row_major_slice(&h[..d * d], d, d).to_owned();
                for i in 0..d {
                    damped[(i, i)] += E::of_f64(damping);
                }
                match inverse_root(damped.as_ref(), 1.0) {
                    Some(r) => {
                        for i in 0..d {
                            for j in 0..d {
                                inv.push(r[(i, j)]);
                            }
                        }
                    }
                    None => {
                        skips += 1;
                        for i in 0..d {
                            for j in 0..d {
                                inv.push(if i == j { E::one() } else { E::zero() });
                            }
                        }
                    }
                }
            }
            f.dirty = false;
        }
    } else {
        inv.clear();
    }
    let mut cur: Mat<E> = MatRef::from_row_major_slice(&x[..n], rows, cols).to_owned();
    let mut offset = 0;
    if has_l {
        let l = MatRef::from_row_major_slice(&inv[..rows * rows], rows, rows);
        let mut next = Mat::<E>::zeros(rows, cols);
        matmul(
            next.as_mut(),
            Accum::Replace,
            l,
            cur.as_ref(),
            E::one(),
            par_for(n),
        );
        cur = next;
        offset = rows * rows;
    }
    if has_r {
        let r = MatRef::from_row_major_slice(&inv[offset..offset + cols * cols], cols, cols);
        let mut next = Mat::<E>::zeros(rows, cols);
        matmul(
            next.as_mut(),
            Accum::Replace,
            cur.as_ref(),
            r,
            E::one(),
            par_for(n),
        );
        cur = next;
    }
    write_row_major(cur.as_ref(), out);
    skips
}
