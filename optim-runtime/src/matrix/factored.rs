//! `factored_second_moment`: Adafactor's factored second moment.

use super::{Io, MatView, MatrixWord, Primitive, Report};
use crate::Float;

/// Default epsilon of [`factored_second_moment`]: `f32::EPSILON`, PyTorch Adafactor's
/// `eps1 = None` for `float32`.
pub const FACTORED_EPS: f64 = f32::EPSILON as f64;

/// `factored_second_moment(x, beta)`: Adafactor's second-moment estimate (Shazeer & Stern,
/// "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018, Alg. 4–5; as
/// `torch.optim.Adafactor` and `optax.adafactor`).
///
/// With `factored` (a parameter of rank ≥ 2) `x` is `view.batch` independent
/// `view.rows × view.cols` matrices — the last two axes of the parameter, the leading ones a
/// batch ([`ViewRule::LastTwo`](super::ViewRule::LastTwo)) — and the state is one row vector `r_b` (`rows`) and one
/// column vector `c_b` (`cols`) per matrix `b`, stored as all the `r_b` then all the `c_b`
/// (`batch · (rows + cols)` elements: torch's `row_var` `[B…, R, 1]` then `col_var`
/// `[B…, 1, C]`, flattened). Per matrix `X_b`:
/// ```text
/// r_b = r_b + (1 - beta) * (mean_over_cols(X_b^2) - r_b)
/// c_b = c_b + (1 - beta) * (mean_over_rows(X_b^2) - c_b)
/// out_b = r_b c_b^T / max(mean(r_b), eps)            (one normaliser per matrix)
/// ```
/// Without `factored` (rank 0 and 1) the state is the full `v = v + (1 - beta) * (x^2 - v)`
/// (`batch · rows · cols` elements) and `out = v`. Row and column sums are accumulated in
/// `f64`. `state` is created (zeros) on first use, and re-created when its length does not
/// match. Never panics: an empty view or inputs shorter than it leave `out` and `state` as they
/// are.
///
/// Difference from before issue 10: a rank > 2 tensor used to be factored as `shape[0] ×
/// rest`; it is now factored over its last two axes, as PyTorch and optax do.
pub fn factored_second_moment<E: Float>(
    x: &[E],
    out: &mut [E],
    state: &mut Vec<E>,
    view: MatView,
    factored: bool,
    beta: f64,
    eps: f64,
) {
    let MatView { batch, rows, cols } = view;
    let Some(n) = batch.checked_mul(rows).and_then(|m| m.checked_mul(cols)) else {
        return;
    };
    if n == 0 || x.len() < n || out.len() < n {
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
    let want = batch * (rows + cols);
    if state.len() != want {
        state.clear();
        state.resize(want, E::zero());
    }
    let (r_all, c_all) = state.split_at_mut(batch * rows);
    let mut colsum = vec![0.0f64; cols];
    for b in 0..batch {
        let xb = &x[b * rows * cols..(b + 1) * rows * cols];
        let r = &mut r_all[b * rows..(b + 1) * rows];
        let c = &mut c_all[b * cols..(b + 1) * cols];
        colsum.iter_mut().for_each(|s| *s = 0.0);
        for i in 0..rows {
            let row = &xb[i * cols..(i + 1) * cols];
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
        let ob = &mut out[b * rows * cols..(b + 1) * rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                ob[i * cols + j] = r[i] * c[j] / denom;
            }
        }
    }
}

matrix_config! {
    /// Arguments of `factored_second_moment`.
    pub struct FactoredConfig {
        /// EMA coefficient of the statistics (a required argument of the word; default 0).
        pub beta: f64 = 0.0,
        /// Floor of the row mean in the denominator (default [`FACTORED_EPS`]).
        pub eps: f64 = FACTORED_EPS,
    }
}

matrix_word! {
    /// The `factored_second_moment` primitive ([`factored_second_moment`] on the
    /// [`ViewRule::LastTwo`](super::ViewRule::LastTwo) view, factored for rank ≥ 2); one state buffer, named after the
    /// binding.
    pub struct Factored("factored_second_moment", FactoredConfig, state [""], view LastTwo);
    check [beta: Unit, eps: NonNeg];
}

impl<E: Float> Primitive<E> for Factored {
    fn apply(cfg: &FactoredConfig, io: Io<'_, E>) -> Report {
        let (view, matrix) = (io.view(Self::VIEW), io.is_matrix());
        if let Some(state) = io.state.first_mut() {
            factored_second_moment(io.input, io.out, state, view, matrix, cfg.beta, cfg.eps);
        }
        Report::default()
    }
}
