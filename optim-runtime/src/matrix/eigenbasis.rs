//! `kron_eigenbasis`, `rotate`, `unrotate`: SOAP's Kronecker eigenbasis.

use super::linalg::{apply_side, par_for, side_gram, write_row_major};
use super::{Io, MatIn, MatInOut, MatView, MatrixWord, Phase, Primitive, Report, ViewRule};
use crate::Float;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

/// Default refresh interval of a Kronecker eigenbasis (SOAP's `precondition_frequency`).
pub const EIGENBASIS_UPDATE_FREQ: u64 = 10;
/// Default largest side with an eigenbasis (SOAP's `max_precondition_dim`).
pub const EIGENBASIS_MAX_DIM: usize = 10000;

matrix_config! {
    /// Configuration of a Kronecker eigenbasis (SOAP).
    pub struct EigenbasisConfig {
        /// EMA coefficient of the statistics `GG = beta GG + (1 - beta) G G^T`.
        pub beta: f64 = 0.0,
        /// Refresh the basis every this many updates after the first.
        pub update_freq: u64 = EIGENBASIS_UPDATE_FREQ,
        /// Sides longer than this keep the identity basis.
        pub max_dim: usize = EIGENBASIS_MAX_DIM,
    }
}

/// The two sides `(d, has a basis)` of a `rows × cols` matrix: a side has a basis when
/// `d <= max_dim` (and `d²` fits in `usize`).
fn eigen_sides(rows: usize, cols: usize, max_dim: usize) -> [(usize, bool); 2] {
    let fits = |d: usize| d <= max_dim && d.checked_mul(d).is_some();
    [(rows, fits(rows)), (cols, fits(cols))]
}

/// `kron_eigenbasis(x)`, first use: `GG_i = (1 - beta) G_(i) G_(i)^T` for each active side and
/// `Q_i` = its eigenvectors, sorted by descending eigenvalue (SOAP, Vyas et al., "SOAP:
/// Improving and Stabilizing Shampoo using Adam", ICLR 2025, Alg. 1; pytorch-optimizer port).
/// The eigendecomposition of `GG_i + 1e-30 I` (the reference's regulariser) runs in `f64`
/// whatever `E` is (the reference: in the parameter dtype). Returns `true` when it initialised
/// the state (the parameter's first step), `false` when the state already existed or no side has
/// a basis (nothing is done). `x` is the `rows × cols` gradient (the [`Eigenbasis`] primitive
/// gives vectors no basis at all, as SOAP's `precondition_1d = False`). A non-finite `x`
/// initialises the identity basis (and zero statistics, as does a Gram that overflows). Never
/// panics.
pub fn eigenbasis_init<E: Float>(
    x: MatIn<'_, E>,
    gg: &mut Vec<E>,
    q: &mut Vec<E>,
    cfg: EigenbasisConfig,
) -> bool {
    let (rows, cols) = x.shape();
    let sides = eigen_sides(rows, cols, cfg.max_dim);
    let total: usize = sides
        .iter()
        .filter(|s| s.1)
        .fold(0usize, |t, s| t.saturating_add(s.0 * s.0));
    if total == 0 || (gg.len() == total && q.len() == total) {
        return false;
    }
    gg.clear();
    q.clear();
    let finite = x.is_finite();
    let g = x.faer();
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        let w = E::of_f64(1.0 - cfg.beta);
        let mut stats = Mat::<E>::zeros(d, d);
        if finite {
            let gram = side_gram(g, side);
            for j in 0..d {
                for i in 0..d {
                    stats[(i, j)] = w * gram[(i, j)];
                }
            }
            if !(0..d).all(|j| (0..d).all(|i| stats[(i, j)].is_finite())) {
                // an overflowing Gram: as for a non-finite input
                stats = Mat::<E>::zeros(d, d);
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
    let mut reg = Mat::<f64>::from_fn(d, d, |i, j| h[(i, j)].as_f64());
    for i in 0..d {
        reg[(i, i)] += 1e-30;
    }
    let evd = reg.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let u = evd.U();
    let out = Mat::from_fn(d, d, |i, j| E::of_f64(u[(i, d - 1 - j)]));
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
/// `Q = qr(GG Q).Q`. A non-finite `x`, or a side whose statistics would overflow, is skipped
/// (that side's statistics unchanged); a refresh producing a non-finite basis keeps the old one. The [`Report`] counts skipped inputs, refreshes and
/// refused refreshes.
pub fn eigenbasis_update<E: Float>(
    x: MatIn<'_, E>,
    gg: &mut [E],
    q: &mut [E],
    rotated: &mut [&mut Vec<E>],
    step: u64,
    cfg: EigenbasisConfig,
) -> Report {
    let mut report = Report::default();
    let (rows, cols) = x.shape();
    let n = x.len();
    let sides = eigen_sides(rows, cols, cfg.max_dim);
    let finite = x.is_finite();
    let g = x.faer();
    let freq = cfg.update_freq.max(1);
    let refresh = step > 1 && (step - 1).is_multiple_of(freq);
    let mut offset = 0;
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        let len = d * d;
        if gg.len() < offset + len || q.len() < offset + len {
            return report;
        }
        // the side's new statistics, stored only if finite (an overflowing Gram is skipped)
        let next: Option<Vec<E>> = finite.then(|| {
            let gram = side_gram(g, side);
            let (b, w) = (E::of_f64(cfg.beta), E::of_f64(1.0 - cfg.beta));
            (0..len)
                .map(|k| b * gg[offset + k] + w * gram[(k / d, k % d)])
                .collect()
        });
        match next {
            Some(h) if h.iter().all(|v| v.is_finite()) => {
                gg[offset..offset + len].copy_from_slice(&h);
            }
            _ => report.skipped_inputs += 1,
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
                report.refreshes += 1;
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
                report.failed_refreshes += 1;
            }
        }
        offset += len;
    }
    report
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
/// (`inverse = true`): `Q_L X Q_R^T`. Sides without a basis (longer than `max_dim`) use the
/// identity. `q` is the state written by [`eigenbasis_init`]; `m` holds the `rows × cols` input
/// `X` and the output. (The [`Rotate`] and [`Unrotate`] primitives copy vectors, which have no
/// basis.)
pub fn rotate<E: Float>(m: MatInOut<'_, E>, q: &[E], max_dim: usize, inverse: bool) {
    let (x, out) = m.split();
    let (rows, cols) = x.shape();
    let sides = eigen_sides(rows, cols, max_dim);
    let mut cur: Mat<E> = x.faer().to_owned();
    let mut offset = 0;
    for (side, &(d, active)) in sides.iter().enumerate() {
        if !active {
            continue;
        }
        if q.len() < offset + d * d {
            break;
        }
        let qm = MatRef::from_row_major_slice(&q[offset..offset + d * d], d, d);
        // Q^T on the left and Q on the right rotate; the transposes undo it
        let f = if (side == 0) != inverse {
            qm.transpose()
        } else {
            qm
        };
        let next = apply_side(cur.as_ref(), f, side);
        cur = next;
        offset += d * d;
    }
    write_row_major(cur.as_ref(), out);
}

matrix_word! {
    /// The `kron_eigenbasis` primitive: [`eigenbasis_init`] in [`Phase::Init`] (reports
    /// `initialised` on the parameter's first step), [`eigenbasis_update`] in [`Phase::Finish`]
    /// (permuting the states that live in the basis). State `.stats` and `.q`. Parameters of
    /// rank < 2 have no basis (SOAP's `precondition_1d = False`): no state, and [`Rotate`] and
    /// [`Unrotate`] copy them.
    pub struct Eigenbasis("kron_eigenbasis", EigenbasisConfig, state ["stats", "q"]);
    check [beta: Unit];
}

impl<E: Float> Primitive<E> for Eigenbasis {
    fn apply(cfg: &EigenbasisConfig, io: Io<'_, E>) -> Report {
        let MatView { rows, cols, .. } = io.view(Self::VIEW);
        let (matrix, step) = (io.is_matrix(), io.step);
        // an input shorter than the view (a broken call site) does nothing
        let (Some(x), [gg, q]) = (MatIn::prefix(io.input, rows, cols), io.state) else {
            return Report::default();
        };
        match io.phase {
            // vectors keep the identity basis (SOAP's precondition_1d = False): no state
            _ if !matrix => Report::default(),
            Phase::Init => Report {
                initialised: eigenbasis_init(x, gg, q, *cfg),
                ..Report::default()
            },
            Phase::Finish => {
                let mut refs: Vec<&mut Vec<E>> = io.rotated.iter_mut().collect();
                eigenbasis_update(x, gg, q, &mut refs, step, *cfg)
            }
            Phase::Barrier => Report::default(),
        }
    }
}

matrix_config! {
    /// Arguments of `rotate` / `unrotate` (taken from their eigenbasis).
    pub struct RotateConfig {
        /// Sides longer than this have no basis (default [`EIGENBASIS_MAX_DIM`]).
        pub max_dim: usize = EIGENBASIS_MAX_DIM,
    }
}

matrix_word! {
    /// The `rotate` primitive: `Q_L^T X Q_R` ([`rotate`]).
    pub struct Rotate("rotate", RotateConfig, state []);
}

matrix_word! {
    /// The `unrotate` primitive: `Q_L X Q_R^T` ([`rotate`] with `inverse`).
    pub struct Unrotate("unrotate", RotateConfig, state []);
}

fn rotation<E: Float>(cfg: &RotateConfig, io: Io<'_, E>, inverse: bool) -> Report {
    let MatView { rows, cols, .. } = io.view(ViewRule::Flatten);
    let matrix = io.is_matrix();
    if let Some(mut m) = MatInOut::prefix(io.input, io.out, rows, cols) {
        if matrix {
            rotate(m, io.basis_q, cfg.max_dim, inverse);
        } else {
            // a vector has no basis: the identity
            let x = m.input().data();
            m.out().copy_from_slice(x);
        }
    }
    Report::default()
}

impl<E: Float> Primitive<E> for Rotate {
    fn apply(cfg: &RotateConfig, io: Io<'_, E>) -> Report {
        rotation(cfg, io, false)
    }
}

impl<E: Float> Primitive<E> for Unrotate {
    fn apply(cfg: &RotateConfig, io: Io<'_, E>) -> Report {
        rotation(cfg, io, true)
    }
}
