//! `factored_second_moment`: Adafactor's factored second moment.

use super::{Io, MatrixWord, Primitive, Report};
use crate::Float;

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

/// Arguments of `factored_second_moment`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FactoredConfig {
    /// EMA coefficient of the statistics (a required argument of the word; default 0).
    pub beta: f64,
    /// Floor of the row mean in the denominator (default [`FACTORED_EPS`]).
    pub eps: f64,
}

impl Default for FactoredConfig {
    fn default() -> Self {
        FactoredConfig {
            beta: 0.0,
            eps: FACTORED_EPS,
        }
    }
}

/// The `factored_second_moment` primitive ([`factored_second_moment`]); one state buffer, named
/// after the binding.
#[derive(Debug, Clone, Copy)]
pub struct Factored;

impl MatrixWord for Factored {
    type Config = FactoredConfig;
    const STATE: &'static [&'static str] = &[""];
}

impl<E: Float> Primitive<E> for Factored {
    fn apply(cfg: &FactoredConfig, io: Io<'_, E>) -> Report {
        let (rows, cols, matrix) = (io.rows(), io.cols(), io.is_matrix());
        if let Some(state) = io.state.first_mut() {
            factored_second_moment(
                io.input, io.out, state, rows, cols, matrix, cfg.beta, cfg.eps,
            );
        }
        Report::default()
    }
}
