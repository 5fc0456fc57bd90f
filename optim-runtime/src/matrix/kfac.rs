//! `kfac_precondition`: K-FAC-style preconditioning with user-supplied Kronecker factors.

use super::linalg::{apply_side, cutoff, pinv_root, write_row_major};
use super::{Io, MatInOut, MatView, MatrixWord, Primitive, Report};
use crate::Float;
use faer::{Mat, MatRef};

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
/// and recomputed when the factors change.
///
/// The inverses are pseudo-inverses computed in `f64` whatever `E` is (`linalg::pinv_root`
/// with exponent 1): with `D = F + damping I = Q diag(λ) Q^T`, `D^+ = Q diag(μ) Q^T`, `μ_i = 0`
/// if `λ_i <= rank_rtol · max(λ_max, 0)` else `1 / λ_i` (`rank_rtol = None`: `d · ε(E)`), so a
/// singular or slightly indefinite factor (rounding) is inverted on its numerical range
/// instead of failing. A factor with a non-finite entry, or whose decomposition fails, is
/// treated as the identity and counted as a refused refresh in the [`Report`]. `m` holds the
/// `rows × cols` input `G` and the output; `damping` and `rank_rtol` come from `cfg`. Never
/// panics.
pub fn kfac_precondition<E: Float>(
    m: MatInOut<'_, E>,
    factors: Option<&mut crate::KronFactors<E>>,
    inv: &mut Vec<E>,
    cfg: &KfacConfig,
) -> Report {
    let mut report = Report::default();
    let (x, out) = m.split();
    let (rows, cols) = x.shape();
    let KfacConfig { damping, rank_rtol } = *cfg;
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
                match pinv_root(damped.as_ref(), 1.0, cutoff::<E>(rank_rtol, d)) {
                    Some(r) => {
                        report.refreshes += 1;
                        for i in 0..d {
                            for j in 0..d {
                                inv.push(r[(i, j)]);
                            }
                        }
                    }
                    None => {
                        report.failed_refreshes += 1;
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
    let mut cur: Mat<E> = x.faer().to_owned();
    let mut offset = 0;
    if has_l {
        let l = MatRef::from_row_major_slice(&inv[..rows * rows], rows, rows);
        cur = apply_side(cur.as_ref(), l, 0);
        offset = rows * rows;
    }
    if has_r {
        let r = MatRef::from_row_major_slice(&inv[offset..offset + cols * cols], cols, cols);
        cur = apply_side(cur.as_ref(), r, 1);
    }
    write_row_major(cur.as_ref(), out);
    report
}

matrix_config! {
    /// Arguments of `kfac_precondition`.
    pub struct KfacConfig {
        /// Added to each factor's diagonal before inversion (default [`KFAC_DAMPING`]).
        pub damping: f64 = KFAC_DAMPING,
        /// Relative eigenvalue cutoff of the pseudo-inverses (default `None`: `d · ε(E)` for a
        /// `d × d` factor; see [`kfac_precondition`]).
        pub rank_rtol: Option<f64> = None,
    }
}

matrix_word! {
    /// The `kfac_precondition` primitive ([`kfac_precondition`] on the
    /// [`super::ViewRule::Flatten`] view, the one [`crate::KronFactors`] are sized for); state `.inverses` (the cached
    /// damped inverses of the parameter's [`crate::KronFactors`]).
    pub struct Kfac("kfac_precondition", KfacConfig, state ["inverses"], batched false);
    check [damping: NonNeg, rank_rtol: NonNeg];
}

impl<E: Float> Primitive<E> for Kfac {
    fn apply(cfg: &KfacConfig, io: Io<'_, E>) -> Report {
        let MatView { rows, cols, .. } = io.view(Self::VIEW);
        let (Some(m), [inv]) = (MatInOut::prefix(io.input, io.out, rows, cols), io.state) else {
            return Report::default();
        };
        kfac_precondition(m, io.factors, inv, cfg)
    }
}
