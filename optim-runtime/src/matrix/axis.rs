//! Axis reductions (`row_sum`, `row_mean`, `row_norm`, `row_rms`, `row_max` and their `col_*`
//! twins): the sum, sum of squares or maximum of an element-wise value along each row or column
//! of the parameter's `rows × cols` view, accumulated in `f64` and stored in the parameter's type,
//! one value per row (reducing over the columns) or per column. The DSL derives means, norms
//! and RMS from them, and [`broadcast`] brings per-row or per-column values back to the elements
//! that use them.

use super::{Io, Primitive, Report};
use crate::Float;

/// What is accumulated along a line.
#[derive(Clone, Copy)]
enum Kind {
    Sum,
    SumSq,
    Max,
}

/// Reduces `input` (`rows × cols`, row-major) along each row (`row`) or column into `out`
/// (`rows` or `cols` values). A maximum propagates NaN (as `torch.amax`).
fn reduce<E: Float>(input: &[E], out: &mut [E], rows: usize, cols: usize, row: bool, kind: Kind) {
    let lines = if row { rows } else { cols };
    if input.len() < rows.saturating_mul(cols) || out.len() < lines {
        return;
    }
    let init = match kind {
        Kind::Max => f64::NEG_INFINITY,
        _ => 0.0,
    };
    let mut acc = vec![init; lines];
    for r in 0..rows {
        for c in 0..cols {
            let x = input[r * cols + c].as_f64();
            let a = &mut acc[if row { r } else { c }];
            match kind {
                Kind::Sum => *a += x,
                Kind::SumSq => *a += x * x,
                Kind::Max => {
                    if x > *a || x.is_nan() {
                        *a = x;
                    }
                }
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = E::of_f64(a);
    }
}

macro_rules! axis_primitive {
    ($(#[$doc:meta])* $name:ident, $word:literal, $row:expr, $kind:ident) => {
        matrix_word! {
            $(#[$doc])*
            pub struct $name($word, (), state [], batched false);
        }

        impl<E: Float> Primitive<E> for $name {
            fn apply(_: &(), io: Io<'_, E>) -> Report {
                let (rows, cols) = (io.rows(), io.cols());
                reduce(io.input, io.out, rows, cols, $row, Kind::$kind);
                Report::default()
            }
        }
    };
}

axis_primitive!(
    /// Sum along each row (`row_sum`, `row_mean`).
    RowSum, "row_sum", true, Sum
);
axis_primitive!(
    /// Sum of squares along each row (`row_norm`, `row_rms`, `row_mean(x * x)`).
    RowSumSq, "row_norm", true, SumSq
);
axis_primitive!(
    /// Maximum along each row (`row_max`).
    RowMax, "row_max", true, Max
);
axis_primitive!(
    /// Sum along each column (`col_sum`, `col_mean`).
    ColSum, "col_sum", false, Sum
);
axis_primitive!(
    /// Sum of squares along each column (`col_norm`, `col_rms`, `col_mean(x * x)`).
    ColSumSq, "col_norm", false, SumSq
);
axis_primitive!(
    /// Maximum along each column (`col_max`).
    ColMax, "col_max", false, Max
);

/// Writes per-row (`row`) or per-column values `line` to every element of `out` (`rows × cols`,
/// row-major, `cols` columns): element `i` takes `line[i / cols]` or `line[i % cols]`.
pub fn broadcast<E: Float>(line: &[E], out: &mut [E], row: bool, cols: usize) {
    if cols == 0 {
        return;
    }
    if row {
        for (chunk, &v) in out.chunks_mut(cols).zip(line) {
            chunk.fill(v);
        }
    } else {
        for chunk in out.chunks_mut(cols) {
            for (o, &v) in chunk.iter_mut().zip(line) {
                *o = v;
            }
        }
    }
}
