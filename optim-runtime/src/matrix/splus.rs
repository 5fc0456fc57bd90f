//! `eigen_sign`: SPlus's sign of a matrix in the eigenbases of the gradient's Gram statistics.

use super::linalg::{apply_side, side_gram, write_row_major};
use super::{Io, MatIn, MatInOut, Phase, Primitive, Report};
use crate::Float;
use faer::{Mat, MatRef};

/// Default EMA coefficient of the Gram statistics (SPlus's `beta2`).
pub const EIGEN_SIGN_BETA: f64 = 0.999;
/// Default refresh interval of the eigenbases (SPlus's `inverse_steps`).
pub const EIGEN_SIGN_UPDATE_FREQ: u64 = 100;
/// Default bound on the sides with a basis (SPlus's `max_dim`; a side needs `d < max_dim`).
pub const EIGEN_SIGN_MAX_DIM: usize = 10000;
/// Default diagonal shift before the eigendecomposition (SPlus's `eps`).
pub const EIGEN_SIGN_EPS: f64 = 1e-30;

matrix_config! {
    /// Arguments of `eigen_sign`.
    pub struct EigenSignConfig {
        /// EMA coefficient of the statistics `S = lerp(S, G G^T, 1 - beta)` (default
        /// [`EIGEN_SIGN_BETA`]).
        pub beta: f64 = EIGEN_SIGN_BETA,
        /// Refresh the bases at step 1 and every step `t` with `t % update_freq == 0` (default
        /// [`EIGEN_SIGN_UPDATE_FREQ`]; 0 is treated as 1).
        pub update_freq: u64 = EIGEN_SIGN_UPDATE_FREQ,
        /// Only sides of length `d < max_dim` have a basis (default [`EIGEN_SIGN_MAX_DIM`]).
        pub max_dim: usize = EIGEN_SIGN_MAX_DIM,
        /// Added to the diagonal of the statistics before their eigendecomposition (default
        /// [`EIGEN_SIGN_EPS`]).
        pub eps: f64 = EIGEN_SIGN_EPS,
    }
}

/// The sides of a `rows × cols` matrix with a basis: `(side, d)` for `d < max_dim`.
fn active_sides(rows: usize, cols: usize, max_dim: usize) -> Vec<(usize, usize)> {
    [(0, rows), (1, cols)]
        .into_iter()
        .filter(|&(_, d)| d < max_dim)
        .collect()
}

/// Number of state elements (`stats` and `q` alike): `Σ d²` over the active sides.
fn state_len(rows: usize, cols: usize, max_dim: usize) -> usize {
    active_sides(rows, cols, max_dim)
        .iter()
        .map(|s| s.1 * s.1)
        .sum()
}

/// `eigen_sign(x, grad, beta)`, the direction of a step (SPlus, Frans, Levine & Abbeel, "A
/// Stable Whitening Optimizer for Efficient Neural Network Training", 2025; as ported by
/// pytorch-optimizer 4.1 `SPlus`): for the `rows × cols` matrix `X` (the momentum),
/// ```text
/// out = Q_L sign(Q_L^T X Q_R) Q_R^T          (sign(0) = 0; a side without a basis: Q = I)
/// ```
/// with the bases `Q_L`, `Q_R` of the previous refresh (the identity until the first one). A
/// side has a basis when its length is `< max_dim`. `stats` and `q` hold, for each such side in
/// order (rows, then columns), the `d × d` statistics and basis (row-major); they are created
/// here on first use (zeros and the identity), and re-created if their length no longer
/// matches (a changed `max_dim`). `m` holds the `rows × cols` input `X` and the output.
pub fn eigen_sign<E: Float>(
    m: MatInOut<'_, E>,
    stats: &mut Vec<E>,
    q: &mut Vec<E>,
    max_dim: usize,
) {
    let (x, out) = m.split();
    let (rows, cols) = x.shape();
    let total = state_len(rows, cols, max_dim);
    if stats.len() != total || q.len() != total {
        stats.clear();
        stats.resize(total, E::zero());
        q.clear();
        for (_, d) in active_sides(rows, cols, max_dim) {
            q.extend((0..d * d).map(|k| if k / d == k % d { E::one() } else { E::zero() }));
        }
    }
    let mut cur: Mat<E> = x.faer().to_owned();
    // rotate: Q_L^T X Q_R
    let mut offset = 0;
    for (side, d) in active_sides(rows, cols, max_dim) {
        let qm = MatRef::from_row_major_slice(&q[offset..offset + d * d], d, d);
        let f = if side == 0 { qm.transpose() } else { qm };
        cur = apply_side(cur.as_ref(), f, side);
        offset += d * d;
    }
    for j in 0..cols {
        for i in 0..rows {
            cur[(i, j)] = crate::ops::sign(cur[(i, j)]);
        }
    }
    // unrotate: Q_L S Q_R^T
    let mut offset = 0;
    for (side, d) in active_sides(rows, cols, max_dim) {
        let qm = MatRef::from_row_major_slice(&q[offset..offset + d * d], d, d);
        let f = if side == 0 { qm } else { qm.transpose() };
        cur = apply_side(cur.as_ref(), f, side);
        offset += d * d;
    }
    write_row_major(cur.as_ref(), out);
}

/// `eigen_sign`'s statistics and refresh, after the step (the reference updates the statistics
/// before the sign, but they do not enter this step's direction, and refreshes after it): for
/// each side with a basis,
/// ```text
/// S = lerp(S, G G^T, 1 - beta)   (rows side)       S = lerp(S, G^T G, 1 - beta)   (columns side)
/// if step == 1 or step % update_freq == 0:  Q = eigenvectors(S + eps I)   (in f64, rounded to E)
/// ```
/// `lerp` is `torch.lerp`'s two-branch form. The order and signs of the eigenvectors do not
/// change the direction (the sign is taken element-wise in the rotated basis). A gradient with
/// a non-finite entry, or whose new statistics would not be finite (an overflow of `G G^T`),
/// leaves the statistics unchanged (one skipped input per side); a
/// decomposition that fails or is not finite keeps the previous basis (a refused refresh).
/// Does nothing before [`eigen_sign`] created the state. `grad` is the `rows × cols` gradient
/// `G`.
pub fn eigen_sign_update<E: Float>(
    grad: MatIn<'_, E>,
    stats: &mut [E],
    q: &mut [E],
    step: u64,
    cfg: EigenSignConfig,
) -> Report {
    let mut report = Report::default();
    let (rows, cols) = grad.shape();
    let total = state_len(rows, cols, cfg.max_dim);
    if stats.len() != total || q.len() != total {
        return report;
    }
    let finite = grad.is_finite();
    let g = grad.faer();
    let refresh = step == 1 || step.is_multiple_of(cfg.update_freq.max(1));
    let w = E::of_f64(1.0 - cfg.beta);
    let half = E::of_f64(0.5);
    let mut offset = 0;
    for (side, d) in active_sides(rows, cols, cfg.max_dim) {
        let len = d * d;
        let s = &mut stats[offset..offset + len];
        // torch.lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w)
        let lerp = |a: E, b: E| {
            if w < half {
                a + w * (b - a)
            } else {
                b - (b - a) * (E::one() - w)
            }
        };
        // the new statistics, stored only when finite (a huge gradient can overflow G G^T)
        let new: Option<Vec<E>> = finite
            .then(|| side_gram(g, side))
            .map(|gram| (0..len).map(|k| lerp(s[k], gram[(k / d, k % d)])).collect())
            .filter(|v: &Vec<E>| v.iter().all(|x| x.is_finite()));
        match new {
            Some(v) => s.copy_from_slice(&v),
            None => report.skipped_inputs += 1,
        }
        if refresh {
            // in f64, as `kron_eigenbasis`: the basis is rounded to `E` once
            let h = Mat::from_fn(d, d, |i, j| {
                s[i * d + j].as_f64() + if i == j { cfg.eps } else { 0.0 }
            });
            let basis = h
                .self_adjoint_eigen(faer::Side::Lower)
                .ok()
                .map(|evd| Mat::from_fn(d, d, |i, j| E::of_f64(evd.U()[(i, j)])))
                .filter(|u| (0..d).all(|i| (0..d).all(|j| u[(i, j)].is_finite())));
            match basis {
                Some(u) => {
                    report.refreshes += 1;
                    write_row_major(u.as_ref(), &mut q[offset..offset + len]);
                }
                None => report.failed_refreshes += 1,
            }
        }
        offset += len;
    }
    report
}

matrix_word! {
    /// The `eigen_sign` primitive: [`eigen_sign`] at its barrier, [`eigen_sign_update`] after the
    /// step (on the gradient). State `.stats` and `.q`. Parameters of rank < 2 (vectors, scalars)
    /// get `sign(x)` and keep no state, as SPlus does for non-matrices; rank > 2 (a `tensor`
    /// rule) works on the `rows × cols` view.
    pub struct EigenSign("eigen_sign", EigenSignConfig, state ["stats", "q"]);
    check [beta: Unit, eps: NonNeg];
}

impl<E: Float> Primitive<E> for EigenSign {
    fn apply(cfg: &EigenSignConfig, io: Io<'_, E>) -> Report {
        let (rows, cols, matrix, step) = (io.rows(), io.cols(), io.is_matrix(), io.step);
        let [stats, q] = io.state else {
            return Report::default();
        };
        match io.phase {
            Phase::Barrier if matrix => {
                let created = stats.is_empty() && q.is_empty();
                if let Some(m) = MatInOut::prefix(io.input, io.out, rows, cols) {
                    eigen_sign(m, stats, q, cfg.max_dim);
                }
                Report {
                    initialised: created && !q.is_empty(),
                    ..Report::default()
                }
            }
            Phase::Barrier => {
                for (o, &x) in io.out.iter_mut().zip(io.input) {
                    *o = crate::ops::sign(x);
                }
                Report::default()
            }
            Phase::Finish if matrix => match MatIn::prefix(io.input, rows, cols) {
                Some(g) => eigen_sign_update(g, stats, q, step, *cfg),
                None => Report::default(),
            },
            _ => Report::default(),
        }
    }
}
