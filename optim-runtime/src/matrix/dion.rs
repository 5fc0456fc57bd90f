//! `low_rank_orthonormalize`: Dion's rank-r power iteration with QR and error feedback.

use super::linalg::{product, write_row_major};
use super::probe::next_probe;
use super::{Io, MatInOut, Primitive, Report};
use crate::Float;
use faer::{Mat, MatRef};

/// Default momentum of the error feedback (Dion's `mu`).
pub const DION_MU: f64 = 0.95;
/// Default added to the column norms of `R` (Dion's `epsilon`).
pub const DION_EPSILON: f64 = 1e-8;

matrix_config! {
    /// Arguments of `low_rank_orthonormalize` (names of the official `dion.Dion`).
    pub struct LowRankConfig {
        /// Momentum: `M = B - (1 - mu) P R^T` keeps what the rank-r update did not use (default
        /// [`DION_MU`]).
        pub mu: f64 = DION_MU,
        /// `r = rank_fraction · min(rows, cols)`, rounded up to a multiple of `rank_multiple_of`,
        /// clamped to `[1, min(rows, cols)]` (default 1: full rank).
        pub rank_fraction: f64 = 1.0,
        /// See `rank_fraction` (default 1).
        pub rank_multiple_of: usize = 1,
        /// Power iterations per step (default 1, the paper's `PowerIter1`).
        pub power_iters: u64 = 1,
        /// Added to the column norms when `R` is normalised into the next `Q` (default
        /// [`DION_EPSILON`]).
        pub epsilon: f64 = DION_EPSILON,
        /// Seed of the initial right factor when no probe was supplied (default 0; see
        /// [`super::standard_normal_probe`]).
        pub seed: u64 = 0,
    }
}

/// The rank `r` of a `rows × cols` matrix under `cfg` (the official `_init_opt_state_dion`).
pub fn dion_rank(rows: usize, cols: usize, cfg: &LowRankConfig) -> usize {
    let short = rows.min(cols);
    let mult = cfg.rank_multiple_of.max(1);
    let r = cfg.rank_fraction * short as f64;
    let r = mult as f64 * (r / mult as f64).ceil();
    if r.is_finite() && r >= 1.0 {
        (r as usize).min(short)
    } else {
        short.min(1)
    }
}

/// `low_rank_orthonormalize(x, mu)`: one step of Dion (Ahn, Xu, Abreu & Langford, "Dion:
/// Distributed Orthonormalized Updates", 2025, Algorithm 1, single device; with the official
/// code's details, microsoft/dion `dion_reference.py`): for the `rows × cols` view `X` (the
/// gradient), the momentum `M` and the right factor `Q`,
/// ```text
/// B = M + X
/// P = B Q;  P = qr(P).Q (thin, Householder);  R = B^T P       (power_iters times, Q = R between)
/// M = B - (1 - mu) P R^T                                       (error feedback)
/// Q = R / (column norms of R + epsilon)
/// out = P Q^T
/// ```
/// A wide matrix (`rows < cols`) runs on `B^T` (as the official code: `Q` spans the shorter
/// side, `k = min(rows, cols)` rows); `out` is transposed back. `Q` (`k × r`, `r` from
/// [`dion_rank`]) starts as the first `k·r` values of the probe (row-major; standard normal,
/// unnormalised, as `torch.randn`). An all-zero `B` gives `out = 0`, `M = 0` and keeps `Q`
/// (column-normalised), as the official `fix_all_zero_or_nan`; a zero column of `R` with
/// `epsilon = 0` stays zero (the official code would divide 0 by 0). State: `momentum` (`rows·cols`)
/// and `q` (`k·r`), created on first use (re-created when a length no longer matches).
///
/// Bad input is skipped, never stored: a non-finite `x` leaves `M` and `Q` unchanged and
/// writes `out = 0` (one skipped input); a step whose `B = M + X` overflows keeps `M` and `Q`,
/// and one whose `P` or `R` is not finite stores `M = B` and keeps `Q`; both write `out = 0`
/// (a refused refresh). Every other step is one refresh. `m` holds the `rows × cols` input `X`
/// and the output.
pub fn low_rank_orthonormalize<E: Float>(
    m: MatInOut<'_, E>,
    momentum: &mut Vec<E>,
    q: &mut Vec<E>,
    probe: &[E],
    cfg: &LowRankConfig,
) -> Report {
    let mut report = Report::default();
    let (x, out) = m.split();
    let (rows, cols) = x.shape();
    let n = x.len();
    let transposed = rows < cols;
    let (a, k) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let r = dion_rank(rows, cols, cfg);
    if momentum.len() != n {
        momentum.clear();
        momentum.resize(n, E::zero());
    }
    if q.len() != k * r {
        q.clear();
        q.extend((0..k * r).map(|i| probe.get(i).copied().unwrap_or_else(E::zero)));
        report.initialised = true;
    }
    if !x.is_finite() {
        report.skipped_inputs += 1;
        out.fill(E::zero());
        return report;
    }
    let b: Vec<E> = momentum
        .iter()
        .zip(x.data())
        .map(|(&m, &g)| m + g)
        .collect();
    if !b.iter().all(|v| v.is_finite()) {
        // M + X overflowed: nothing is stored
        report.failed_refreshes += 1;
        out.fill(E::zero());
        return report;
    }
    let bm = MatRef::from_row_major_slice(&b, rows, cols);
    let bm = if transposed { bm.transpose() } else { bm };
    let q_old = MatRef::from_row_major_slice(&q[..], k, r).to_owned();
    let (p, rf) = if b.iter().all(|&v| v == E::zero()) {
        (Mat::<E>::zeros(a, r), q_old)
    } else {
        let mut p = Mat::<E>::zeros(a, r);
        let mut rf = q_old;
        for _ in 0..cfg.power_iters.max(1) {
            p = product(bm, rf.as_ref()).qr().compute_thin_Q();
            rf = product(bm.transpose(), p.as_ref());
        }
        (p, rf)
    };
    let finite = |m: &Mat<E>| (0..m.ncols()).all(|j| (0..m.nrows()).all(|i| m[(i, j)].is_finite()));
    if !(finite(&p) && finite(&rf)) {
        report.failed_refreshes += 1;
        momentum.copy_from_slice(&b);
        out.fill(E::zero());
        return report;
    }
    // M = B - (1 - mu) P R^T, in the matrix's own layout
    let fb = product(p.as_ref(), rf.transpose());
    let c = E::of_f64(1.0 - cfg.mu);
    for i in 0..rows {
        for j in 0..cols {
            let e = if transposed { fb[(j, i)] } else { fb[(i, j)] };
            momentum[i * cols + j] = b[i * cols + j] - c * e;
        }
    }
    // Q = R / (‖R_:j‖ + epsilon); a zero column with epsilon = 0 stays zero (not 0/0)
    let eps = E::of_f64(cfg.epsilon);
    let mut qn = rf;
    for j in 0..r {
        let norm = (0..k)
            .fold(E::zero(), |s, i| s + qn[(i, j)] * qn[(i, j)])
            .sqrt()
            + eps;
        if norm > E::zero() {
            for i in 0..k {
                qn[(i, j)] /= norm;
            }
        }
    }
    write_row_major(qn.as_ref(), q);
    let u = product(p.as_ref(), qn.transpose());
    if transposed {
        write_row_major(u.transpose(), out);
    } else {
        write_row_major(u.as_ref(), out);
    }
    report.refreshes += 1;
    report
}

matrix_word! {
    /// The `low_rank_orthonormalize` primitive ([`low_rank_orthonormalize`]); state `.momentum`
    /// and `.q`. The initial `Q` comes from the probe supplied with
    /// [`crate::DslOptimizer::set_probe`] before the first step, else from
    /// [`super::standard_normal_probe`]`(seed, name, step)`. Rank < 2 parameters are the
    /// `rows × 1` column (the word is for `matrix`/`tensor` rules).
    pub struct LowRank("low_rank_orthonormalize", LowRankConfig, state ["momentum", "q"]);
    check [mu: Unit, rank_fraction: Positive, epsilon: NonNeg];
}

impl<E: Float> Primitive<E> for LowRank {
    fn apply(cfg: &LowRankConfig, io: Io<'_, E>) -> Report {
        let (rows, cols, step) = (io.rows(), io.cols(), io.step);
        let [momentum, q] = io.state else {
            return Report::default();
        };
        let n = rows * cols;
        let (k, r) = (rows.min(cols), dion_rank(rows, cols, cfg));
        let mut probe = Vec::new();
        if q.len() != k * r && n > 0 {
            probe.resize(n, E::zero());
            next_probe(io.factors, cfg.seed, io.info.name, step, &mut probe);
        }
        match MatInOut::prefix(io.input, io.out, rows, cols) {
            Some(m) => low_rank_orthonormalize(m, momentum, q, &probe, cfg),
            None => Report::default(),
        }
    }
}
