//! `kron_precondition`: Shampoo's Kronecker-factored preconditioner.

use super::linalg::{apply_side, inverse_root, side_gram, write_row_major};
use super::{Io, MatrixWord, Primitive, Report};
use crate::Float;
use faer::{Mat, MatRef};

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
/// non-positive eigenvalues keeps its previous inverse root. The [`Report`] counts skipped
/// inputs (one per side), refreshed roots and refused refreshes.
#[allow(clippy::too_many_arguments)]
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
) -> Report {
    let mut report = Report::default();
    let n = rows * cols;
    if x.len() < n || out.len() < n {
        return report;
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
            let gg = side_gram(g, side);
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
            report.skipped_inputs += 1;
        }
        if fresh || cfg.update_freq <= 1 || step % cfg.update_freq == 0 {
            let h = MatRef::from_row_major_slice(&stats[offset..offset + len], d, d);
            match inverse_root(h, exponent) {
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
        let next = apply_side(cur.as_ref(), r, side);
        cur = next;
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

/// The `kron_precondition` primitive ([`kron_precondition`]); state `.stats` (the factors) and
/// `.roots` (their inverse roots).
#[derive(Debug, Clone, Copy)]
pub struct Kron;

impl MatrixWord for Kron {
    type Config = KronConfig;
    const STATE: &'static [&'static str] = &["stats", "roots"];
}

impl<E: Float> Primitive<E> for Kron {
    fn apply(cfg: &KronConfig, io: Io<'_, E>) -> Report {
        let (rows, cols, matrix, step) = (io.rows(), io.cols(), io.is_matrix(), io.step);
        let [stats, roots] = io.state else {
            return Report::default();
        };
        kron_precondition(
            io.input, io.out, stats, roots, rows, cols, matrix, step, *cfg,
        )
    }
}
