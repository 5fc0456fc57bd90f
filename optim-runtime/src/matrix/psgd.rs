//! `psgd_precondition`: PSGD's Kronecker-factored preconditioner fitted on the Lie group of
//! triangular matrices from random probes (Xi-Lin Li).

use super::linalg::{apply_side, product, write_row_major};
use super::probe::next_probe;
use super::{Io, MatInOut, Primitive, Report};
use crate::Float;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Mat, MatRef, Par};

/// Default step size of the preconditioner fit (kron_torch's `precond_lr`).
pub const PSGD_PRECOND_LR: f64 = 0.1;
/// Default largest side with a triangular (dense) factor (kron_torch's `max_size_triangular`).
pub const PSGD_MAX_SIZE_TRIANGULAR: usize = 8192;

matrix_config! {
    /// Arguments of `psgd_precondition` (kron_torch's names).
    pub struct PsgdConfig {
        /// Step size of the fit on the Lie group (default [`PSGD_PRECOND_LR`]).
        pub precond_lr: f64 = PSGD_PRECOND_LR,
        /// The factors start as `precond_init_scale^(1/k) · I` for a tensor of `k >= 1` dimensions
        /// (`precond_init_scale` for a scalar; default 1).
        pub precond_init_scale: f64 = 1.0,
        /// Sides longer than this get a diagonal factor (default [`PSGD_MAX_SIZE_TRIANGULAR`]).
        pub max_size_triangular: usize = PSGD_MAX_SIZE_TRIANGULAR,
        /// Tensors with fewer dimensions get diagonal factors only (default 2: vectors are
        /// diagonal, matrices triangular).
        pub min_ndim_triangular: usize = 2,
        /// Whether this step fits the preconditioner (default `true`); `false` only applies it.
        pub update: bool = true,
        /// Seed of the probes drawn when none was supplied (default 0; see
        /// [`super::standard_normal_probe`]).
        pub seed: u64 = 0,
    }
}

/// One Kronecker factor: the side of the `a × b` view it acts on, its size, and whether it is
/// dense upper-triangular (`d × d` values) or diagonal (`d` values).
#[derive(Debug, Clone, Copy)]
struct Factor {
    side: usize,
    d: usize,
    dense: bool,
}

impl Factor {
    fn len(&self) -> usize {
        if self.dense {
            self.d * self.d
        } else {
            self.d
        }
    }
}

/// The factors of a `rows × cols` parameter of tensor rank `rank` (kron_torch's `_init_Q_exprs`
/// without `memory_save_mode`): a matrix view (rank ≥ 2) has a rows factor and a columns factor,
/// anything else one factor over all its elements; a factor is diagonal when its size is 1,
/// larger than `max_size_triangular`, or the tensor has fewer than `min_ndim_triangular`
/// dimensions.
fn factors(rows: usize, cols: usize, rank: usize, cfg: &PsgdConfig) -> Vec<Factor> {
    let (ndim, sides) = if rank >= 2 {
        (2, vec![(0, rows), (1, cols)])
    } else {
        (rank, vec![(0, rows * cols)])
    };
    sides
        .into_iter()
        .map(|(side, d)| Factor {
            side,
            d,
            dense: !(d == 1 || d > cfg.max_size_triangular || ndim < cfg.min_ndim_triangular),
        })
        .collect()
}

/// `f` applied along its side of `m`: `Q M` / `M Q^T` (dense), rows / columns scaled by `q`
/// (diagonal); with `transpose`, `Q^T` instead of `Q`.
fn apply_factor<E: Float>(m: MatRef<'_, E>, q: &[E], f: Factor, transpose: bool) -> Mat<E> {
    if f.dense {
        let qm = MatRef::from_row_major_slice(q, f.d, f.d);
        let op = match (f.side == 0, transpose) {
            (true, false) | (false, true) => qm,
            _ => qm.transpose(),
        };
        apply_side(m, op, f.side)
    } else {
        Mat::from_fn(m.nrows(), m.ncols(), |i, j| {
            m[(i, j)] * q[if f.side == 0 { i } else { j }]
        })
    }
}

/// `Q^{-T}` applied along `f`'s side of `m` (`Q^{-T} M` or `M Q^{-1}`; diagonal: a division).
fn solve_factor<E: Float>(m: MatRef<'_, E>, q: &[E], f: Factor) -> Mat<E> {
    if f.dense {
        let qt = MatRef::from_row_major_slice(q, f.d, f.d).transpose();
        if f.side == 0 {
            let mut x = m.to_owned();
            solve_lower_triangular_in_place(qt, x.as_mut(), Par::Seq);
            x
        } else {
            // M Q^{-1} = (Q^{-T} M^T)^T
            let mut x = m.transpose().to_owned();
            solve_lower_triangular_in_place(qt, x.as_mut(), Par::Seq);
            x.transpose().to_owned()
        }
    } else {
        Mat::from_fn(m.nrows(), m.ncols(), |i, j| {
            m[(i, j)] / q[if f.side == 0 { i } else { j }]
        })
    }
}

/// The contraction of `m` with itself over every side but `f`'s: `M M^T` / `M^T M` (dense), or
/// its diagonal (diagonal factor), as a row-major `d × d` or `d` vector.
fn gram<E: Float>(m: MatRef<'_, E>, f: Factor) -> Vec<E> {
    if f.dense {
        let g = if f.side == 0 {
            product(m, m.transpose())
        } else {
            product(m.transpose(), m)
        };
        let mut out = vec![E::zero(); f.d * f.d];
        write_row_major(g.as_ref(), &mut out);
        out
    } else {
        let m = if f.side == 0 { m } else { m.transpose() };
        (0..f.d)
            .map(|k| {
                (0..m.ncols()).fold(E::zero(), |s, l| {
                    let v = m[(k, l)];
                    s + v * v
                })
            })
            .collect()
    }
}

/// kron_torch's `_lb`: a cheap lower bound of the spectral norm of the symmetric `d × d` `h`
/// whose largest absolute entry is `max_abs > 0`: `h' = h / max_abs`, `x` = the column of `h'`
/// with the largest norm, `x = x^T h'`, `x = x / ‖x‖`, `lb = ‖h' x‖ · max_abs`.
fn norm_lower_bound<E: Float>(h: &[E], d: usize, max_abs: E) -> E {
    let a: Vec<E> = h.iter().map(|&v| v / max_abs).collect();
    let col_sq = |j: usize| (0..d).fold(E::zero(), |s, i| s + a[i * d + j] * a[i * d + j]);
    let mut best = 0;
    let mut best_val = col_sq(0);
    for j in 1..d {
        let v = col_sq(j);
        if v > best_val {
            best = j;
            best_val = v;
        }
    }
    let x: Vec<E> = (0..d)
        .map(|j| (0..d).fold(E::zero(), |s, i| s + a[i * d + best] * a[i * d + j]))
        .collect();
    let nx = x.iter().fold(E::zero(), |s, &v| s + v * v).sqrt();
    let x: Vec<E> = x.iter().map(|&v| v / nx).collect();
    let y = (0..d).map(|k| (0..d).fold(E::zero(), |s, j| s + a[k * d + j] * x[j]));
    y.fold(E::zero(), |s, v| s + v * v).sqrt() * max_abs
}

/// Creates the factors `fs` in `q` as `precond_init_scale^(1/k) · I` (`k` = 2 for a matrix view,
/// the tensor rank `rank` otherwise; a scalar's factor is `precond_init_scale`) unless `q`
/// already has their length; returns whether it created them.
fn init_factors<E: Float>(q: &mut Vec<E>, fs: &[Factor], rank: usize, cfg: &PsgdConfig) -> bool {
    let total: usize = fs.iter().map(Factor::len).sum();
    if q.len() == total {
        return false;
    }
    let k = if rank >= 2 { 2 } else { rank };
    let scale = E::of_f64(if k == 0 {
        cfg.precond_init_scale
    } else {
        cfg.precond_init_scale.powf(1.0 / k as f64)
    });
    q.clear();
    for f in fs {
        if f.dense {
            q.extend((0..f.d * f.d).map(|k| if k / f.d == k % f.d { scale } else { E::zero() }));
        } else {
            q.extend((0..f.d).map(|_| scale));
        }
    }
    true
}

/// One fitting step of factor `f` (values `q`) from the contractions `t1 = A_(i) A_(i)^T` and
/// `t2 = B_(i) B_(i)^T` (kron_torch `_update_precond`): with `u = precond_lr (t1 - t2)` and
/// `s = t1 + t2`,
/// ```text
/// diagonal:  q = q - u * q / max(max|s|, tiny)
/// dense:     Q = Q - (triu(u) / max(lb(s), tiny)) Q       lb: `norm_lower_bound` (0 when s = 0)
/// ```
/// (`tiny` = the smallest positive normal number of `E`). Returns `false`, leaving `q`
/// unchanged, when the result would not be finite.
fn fit_factor<E: Float>(q: &mut [E], t1: &[E], t2: &[E], f: Factor, precond_lr: f64) -> bool {
    let lr = E::of_f64(precond_lr);
    let tiny = E::min_positive_value();
    let upd: Vec<E> = t1.iter().zip(t2).map(|(&a, &b)| (a - b) * lr).collect();
    let sum: Vec<E> = t1.iter().zip(t2).map(|(&a, &b)| a + b).collect();
    let max_abs = sum.iter().fold(E::zero(), |m, &v| m.max(v.abs()));
    let new: Vec<E> = if f.dense {
        let d = f.d;
        let lb = if max_abs > E::zero() {
            norm_lower_bound(&sum, d, max_abs)
        } else {
            max_abs
        };
        let den = lb.max(tiny);
        let tri = Mat::from_fn(d, d, |i, j| {
            if j >= i {
                upd[i * d + j] / den
            } else {
                E::zero()
            }
        });
        let qm = MatRef::from_row_major_slice(q, d, d);
        let step = product(tri.as_ref(), qm);
        (0..d * d).map(|k| q[k] - step[(k / d, k % d)]).collect()
    } else {
        let den = max_abs.max(tiny);
        q.iter()
            .zip(&upd)
            .map(|(&qv, &u)| qv - u * (qv / den))
            .collect()
    };
    if new.iter().all(|v| v.is_finite()) {
        q.copy_from_slice(&new);
        true
    } else {
        false
    }
}

/// `psgd_precondition(x)`: PSGD-Kron's preconditioned direction (Xi-Lin Li, "Preconditioned
/// Stochastic Gradient Descent", IEEE TNNLS 2018, and "Stochastic Hessian fittings with Lie
/// groups", 2024; as in kron_torch @884427c, `Kron`). `G` is the `rows × cols` view of `x`
/// (the debiased momentum) for rank ≥ 2, the column of its elements otherwise; `Q` is a list of
/// Kronecker factors (see `factors`), each upper-triangular or diagonal, starting at
/// `precond_init_scale^(1/k) I`. With `update` (the reference's preconditioner-update step) and
/// the probe `V` (standard normal, shape of `x`):
/// ```text
/// G = G + sqrt(eps_f32) mean(|G|) V                (in place: the damped G is preconditioned)
/// A = Q_L G Q_R^T,   B = Q_L^{-T} V Q_R^{-1}      (diagonal factors: scalings / divisions)
/// for each factor i:  Q_i = fit(Q_i, A_(i) A_(i)^T, B_(i) B_(i)^T)     (see `fit_factor`)
/// ```
/// then, with the updated factors, `out = Q_L^T Q_L G Q_R^T Q_R` (diagonal: `q² ·`). `eps_f32`
/// is `f32::EPSILON` for both element types, as in the reference; `mean(|G|)` is accumulated in
/// `f64`. The probe is `probe` (one standard normal value per element; the [`Psgd`] primitive
/// passes the user-supplied one or [`super::standard_normal_probe`]'s, keyed by `(seed, name,
/// step)`); with fewer than `rows·cols` values there is no fit. `m` holds the `rows × cols`
/// input `x` and the output; `rank` is the parameter's tensor rank. `q` (the state) is created
/// on first use (and re-created if its length does not match the factors).
///
/// Bad input is skipped: a non-finite `x` neither damps nor fits (one skipped input), and a
/// fit whose result is not finite (a singular factor, an overflow) keeps the factor (a refused
/// refresh); every fitted factor is one refresh.
pub fn psgd_precondition<E: Float>(
    m: MatInOut<'_, E>,
    q: &mut Vec<E>,
    probe: &[E],
    rank: usize,
    cfg: &PsgdConfig,
) -> Report {
    let (x, out) = m.split();
    let (rows, cols) = x.shape();
    let n = x.len();
    let fs = factors(rows, cols, rank, cfg);
    let mut report = Report {
        initialised: init_factors(q, &fs, rank, cfg),
        ..Report::default()
    };
    let (a, b) = if rank >= 2 { (rows, cols) } else { (n, 1) };
    let mut g: Mat<E> = MatRef::from_row_major_slice(x.data(), a, b).to_owned();
    let finite = x.is_finite();
    if cfg.update && !finite {
        report.skipped_inputs += 1;
    }
    if cfg.update && finite && probe.len() >= n {
        let v = MatRef::from_row_major_slice(&probe[..n], a, b);
        let mean_abs = x.data().iter().map(|v| v.as_f64().abs()).sum::<f64>() / n as f64;
        let damp = E::of_f64(f64::from(f32::EPSILON)).sqrt() * E::of_f64(mean_abs);
        for j in 0..b {
            for i in 0..a {
                g[(i, j)] += damp * v[(i, j)];
            }
        }
        // A = Q G along every side; conjB = Q^{-T} V along every side (old factors)
        let mut am = g.clone();
        let mut bm = v.to_owned();
        let mut offset = 0;
        for &f in &fs {
            let qf = &q[offset..offset + f.len()];
            am = apply_factor(am.as_ref(), qf, f, false);
            bm = solve_factor(bm.as_ref(), qf, f);
            offset += f.len();
        }
        let mut offset = 0;
        for &f in &fs {
            let t1 = gram(am.as_ref(), f);
            let t2 = gram(bm.as_ref(), f);
            let len = f.len();
            if fit_factor(&mut q[offset..offset + len], &t1, &t2, f, cfg.precond_lr) {
                report.refreshes += 1;
            } else {
                report.failed_refreshes += 1;
            }
            offset += len;
        }
    }
    // P = Q^T Q G along every side (updated factors)
    let mut offset = 0;
    for &f in &fs {
        let qf = &q[offset..offset + f.len()];
        g = apply_factor(g.as_ref(), qf, f, false);
        g = apply_factor(g.as_ref(), qf, f, true);
        offset += f.len();
    }
    write_row_major(g.as_ref(), out);
    report
}

matrix_word! {
    /// The `psgd_precondition` primitive ([`psgd_precondition`]); state `.q` (the factors, in
    /// order rows then columns, each `d × d` row-major or `d` values). The probe of a fitting step
    /// is the one supplied with [`crate::DslOptimizer::set_probe`] for this step, else drawn from
    /// [`super::standard_normal_probe`]`(seed, name, step)`. `precond_init_scale` must be `> 0`:
    /// the factors must start invertible.
    pub struct Psgd("psgd_precondition", PsgdConfig, state ["q"]);
    check [precond_lr: NonNeg, precond_init_scale: Positive];
}

impl<E: Float> Primitive<E> for Psgd {
    fn apply(cfg: &PsgdConfig, io: Io<'_, E>) -> Report {
        let (rows, cols, rank, step) = (io.rows(), io.cols(), io.info.rank(), io.step);
        let [q] = io.state else {
            return Report::default();
        };
        let n = rows * cols;
        let mut probe = Vec::new();
        if cfg.update && n > 0 {
            probe.resize(n, E::zero());
            next_probe(io.factors, cfg.seed, io.info.name, step, &mut probe);
        }
        match MatInOut::prefix(io.input, io.out, rows, cols) {
            Some(m) => psgd_precondition(m, q, &probe, rank, cfg),
            None => Report::default(),
        }
    }
}
