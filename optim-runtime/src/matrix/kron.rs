//! `kron_precondition`: Shampoo's Kronecker-factored preconditioner.

use super::linalg::{apply_side, cutoff, pinv_root, side_gram, write_row_major};
use super::{Io, MatInOut, MatrixWord, Primitive, Report};
use crate::Float;
use faer::{Mat, MatRef};

/// Configuration of [`kron_precondition`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KronConfig {
    /// `None`: statistics are a running sum (Shampoo, Gupta et al. 2018); `Some(beta)`: an
    /// EMA `H = beta H + (1 - beta) G G^T`.
    pub beta: Option<f64>,
    /// Initial statistics `eps * I` (pytorch-optimizer's `matrix_eps`); `0` starts from zero
    /// statistics, as distributed_shampoo does. Bound be finite and `>= 0`.
    pub eps: f64,
    /// Relative eigenvalue cutoff of the pseudo-inverse roots: eigenvalues `λ <= rank_rtol ·
    /// max(λ_max, 0)` of a factor are dropped (their root is 0). `None` (default): `d · ε(E)`
    /// for a `d × d` factor stored in `E` (1.19e-7·d for `f32`, 2.2e-16·d for `f64`),
    /// distributed_shampoo's `PseudoInverseConfig(rank_rtol=None)` rule. Bound be finite and
    /// `>= 0` when set.
    pub rank_rtol: Option<f64>,
    /// Recompute the inverse roots every this many steps (and on the first step).
    pub update_freq: u64,
    /// Root exponent override: factors are raised to `-exponent` (default `1 / (2 k)`, k = 2
    /// factors for matrices and 1 for vectors: `H^{-1/4}` and `H^{-1/2}`). Bound be finite and
    /// `> 0` when set.
    pub exponent: Option<f64>,
    /// Dimensions larger than this are not preconditioned (identity factor).
    pub max_dim: usize,
}

/// Default [`KronConfig`]: running sum, `eps = 1e-6`, `rank_rtol = None` (`d · ε(E)`), refresh
/// every step, default exponents, `max_dim = 8192`.
pub const KRON_DEFAULT: KronConfig = KronConfig {
    beta: None,
    eps: 1e-6,
    rank_rtol: None,
    update_freq: 1,
    exponent: None,
    max_dim: 8192,
};

/// `kron_precondition(x)`: Shampoo's Kronecker-factored preconditioner (Gupta, Koren & Singer,
/// "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018, Alg. 1/2), with
/// distributed_shampoo's pseudo-inverse roots (Shi et al., "A Distributed Data-Parallel
/// PyTorch Implementation of the Distributed Shampoo Optimizer", 2023;
/// github.com/facebookresearch/optimizers).
///
/// `m` holds the `rows × cols` input `x` and the output (row-major). With both `rows > 1` and
/// `cols > 1`, `x` is the matrix `G` (k = 2 factors):
/// ```text
/// L = L + G G^T,  R = R + G^T G          (beta = None; else L = beta L + (1 - beta) G G^T, ...)
/// out = L^{+(-e)} G R^{+(-e)}            e = exponent, default 1/(2k) = 1/4
/// ```
/// otherwise (a side of length 1) it is the vector `g` of `rows · cols` elements (k = 1):
/// `H = H + g g^T`, `out = H^{+(-e)} g`, default `e = 1/2`. So a `1 × n` or `n × 1` matrix gets
/// exactly the update of the vector `n` (distributed_shampoo squeezes unit dimensions); pass
/// the `n × 1` view for the vector treatment of any buffer. Generated code passes the
/// [`ViewRule::Squeeze`](super::ViewRule::Squeeze) view of the parameter.
///
/// `H^{+(-e)}` is the pseudo-inverse root of `linalg::pinv_root`: eigendecomposition in `f64`
/// whatever `E` is, eigenvalues `λ <= rank_rtol · max(λ_max, 0)` dropped (root 0), the others
/// raised to `-e` (with `rank_rtol = None`: `d · ε(E)` for a `d × d` factor). `stats` holds
/// the factors (created as `eps I`, stored in `E`) and `roots` their roots (created as
/// `eps^(-e) I`, or 0 when `eps = 0`); roots are recomputed on the first step and every
/// `update_freq` steps (`step % update_freq == 0`). A side longer than `max_dim` gets the
/// identity.
///
/// Differences: pytorch-optimizer's `Shampoo` (`matrix_eps` start, SVD roots in `E`, no
/// cutoff, every axis of an order-k tensor a factor with exponent `1/(2k)`, unit axes
/// included) agrees whenever the spectrum stays above the cutoff (its conformance case does);
/// here tensors of rank > 2 are the `shape[0] × rest` matrix of their squeezed shape.
/// distributed_shampoo (`PseudoInverseConfig(rank_atol=0, rank_rtol)`, `epsilon = 0`, `betas
/// = (0, 1)`, `factor_matrix_dtype = float64`) is `eps = 0` with the same `rank_rtol`, except
/// that its factors are accumulated in `float64` (here in `E`), and it blocks sides longer than
/// `max_preconditioner_dim` where this uses the identity; its EMA (`beta2 < 1`) is
/// bias-corrected, this one is not.
///
/// Bad input is skipped, never stored: a gradient with a non-finite entry, or whose statistics
/// would overflow, leaves every factor unchanged (one skipped input per side in the
/// [`Report`]); a refresh that fails (non-finite factor, failed decomposition, non-finite
/// root) keeps the previous root and is counted in `failed_refreshes`. Never panics.
pub fn kron_precondition<E: Float>(
    m: MatInOut<'_, E>,
    stats: &mut Vec<E>,
    roots: &mut Vec<E>,
    step: u64,
    cfg: KronConfig,
) -> Report {
    let mut report = Report::default();
    let (x, out) = m.split();
    let (rows, cols) = x.shape();
    let n = x.len();
    let factored = rows > 1 && cols > 1;
    let (vr, vc) = if factored { (rows, cols) } else { (n, 1) };
    // sides: (size, active)
    let fits = |d: usize| d <= cfg.max_dim && d.checked_mul(d).is_some();
    let sides: Vec<(usize, bool)> = if factored {
        vec![(rows, fits(rows)), (cols, fits(cols))]
    } else {
        vec![(n, fits(n))]
    };
    let k = if factored { 2.0 } else { 1.0 };
    let exponent = cfg.exponent.unwrap_or(1.0 / (2.0 * k));
    let total: usize = sides
        .iter()
        .filter(|s| s.1)
        .fold(0usize, |t, s| t.saturating_add(s.0 * s.0));
    let fresh = stats.len() != total || roots.len() != total;
    if fresh {
        let e = E::of_f64(cfg.eps);
        let r0 = E::of_f64(cfg.eps.powf(-exponent));
        let r0 = if e > E::zero() && r0.is_finite() {
            r0
        } else {
            E::zero()
        };
        stats.clear();
        roots.clear();
        for &(d, _) in sides.iter().filter(|s| s.1) {
            for i in 0..d {
                for j in 0..d {
                    let diag = i == j;
                    stats.push(if diag { e } else { E::zero() });
                    roots.push(if diag { r0 } else { E::zero() });
                }
            }
        }
    }
    let g = MatRef::from_row_major_slice(x.data(), vr, vc);
    // the new statistics of every side, committed only if all are finite
    let mut next: Vec<Vec<E>> = Vec::new();
    if x.is_finite() {
        let mut offset = 0;
        for (side, &(d, active)) in sides.iter().enumerate() {
            if !active {
                continue;
            }
            let gg = side_gram(g, side);
            let h = &stats[offset..offset + d * d];
            let mut upd = Vec::with_capacity(d * d);
            let (b, w) = match cfg.beta {
                None => (E::one(), E::one()),
                Some(b) => (E::of_f64(b), E::of_f64(1.0 - b)),
            };
            for i in 0..d {
                for j in 0..d {
                    upd.push(b * h[i * d + j] + w * gg[(i, j)]);
                }
            }
            next.push(upd);
            offset += d * d;
        }
    }
    let active = sides.iter().filter(|s| s.1).count() as u32;
    if !next.is_empty() && next.iter().all(|h| h.iter().all(|v| v.is_finite())) {
        let mut offset = 0;
        for h in next {
            stats[offset..offset + h.len()].copy_from_slice(&h);
            offset += h.len();
        }
    } else {
        report.skipped_inputs += active;
    }
    if fresh || cfg.update_freq <= 1 || step.is_multiple_of(cfg.update_freq) {
        let mut offset = 0;
        for &(d, active) in &sides {
            if !active {
                continue;
            }
            let len = d * d;
            let h = MatRef::from_row_major_slice(&stats[offset..offset + len], d, d);
            match pinv_root(h, exponent, cutoff::<E>(cfg.rank_rtol, d)) {
                Some(r) => {
                    report.refreshes += 1;
                    for i in 0..d {
                        for j in 0..d {
                            roots[offset + i * d + j] = r[(i, j)];
                        }
                    }
                }
                None => report.failed_refreshes += 1,
            }
            offset += len;
        }
    }
    // apply: out = L^-e G R^-e (identity for inactive sides)
    let mut cur: Mat<E> = g.to_owned();
    let mut offset = 0;
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        let r = MatRef::from_row_major_slice(&roots[offset..offset + d * d], d, d);
        cur = apply_side(cur.as_ref(), r, side);
        offset += d * d;
    }
    write_row_major(cur.as_ref(), out);
    report
}

impl Default for KronConfig {
    fn default() -> Self {
        KRON_DEFAULT
    }
}

matrix_word! {
    /// The `kron_precondition` primitive ([`kron_precondition`] on the [`ViewRule::Squeeze`](super::ViewRule::Squeeze)
    /// view, factored when two or more axes are longer than 1); state `.stats` (the factors) and
    /// `.roots` (their inverse roots).
    pub struct Kron("kron_precondition", KronConfig, state ["stats", "roots"], view Squeeze);
    check [eps: NonNeg, beta: Unit, rank_rtol: NonNeg, exponent: Positive];
}

impl<E: Float> Primitive<E> for Kron {
    fn apply(cfg: &KronConfig, io: Io<'_, E>) -> Report {
        let v = io.view(Self::VIEW);
        let (Some(m), [stats, roots]) =
            (MatInOut::prefix(io.input, io.out, v.rows, v.cols), io.state)
        else {
            return Report::default();
        };
        kron_precondition(m, stats, roots, io.step, *cfg)
    }
}
