//! Borrowed row-major matrices: what the free functions of the matrix primitives take instead
//! of a loose `(slice, rows, cols)`. Their constructors check the length once, so a buffer
//! shorter or longer than its shape, or a matrix with no element, cannot reach a primitive.

use crate::{Float, OptimError};

/// A row-major `rows × cols` matrix borrowed from a slice of exactly `rows · cols > 0` elements
/// (element `(i, j)` at `i · cols + j`). Built with [`MatIn::new`], which checks the length.
#[derive(Debug, PartialEq)]
pub struct MatIn<'a, E> {
    data: &'a [E],
    rows: usize,
    cols: usize,
}

// by hand: a borrowed view is `Copy` whatever `E` is
impl<E> Clone for MatIn<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for MatIn<'_, E> {}

/// The error of a view whose buffer does not hold `rows · cols` elements, or that has none.
fn mismatch(what: &str, len: usize, rows: usize, cols: usize) -> OptimError {
    let detail = if rows == 0 || cols == 0 {
        format!("a {rows} × {cols} matrix has no element; a matrix view needs at least one")
    } else {
        format!(
            "a row-major {rows} × {cols} matrix needs {rows}·{cols} elements, but its {what} \
             has {len}"
        )
    };
    OptimError::ShapeMismatch {
        param: String::from("(matrix view)"),
        detail,
    }
}

impl<'a, E> MatIn<'a, E> {
    /// `data` seen as a row-major `rows × cols` matrix.
    ///
    /// Errors: [`OptimError::ShapeMismatch`] when `data.len() != rows · cols` (or the product
    /// overflows `usize`), or when `rows` or `cols` is 0: a primitive has nothing to do on a
    /// matrix with no element (and [`super::check_shape`] refuses such parameters).
    pub fn new(data: &'a [E], rows: usize, cols: usize) -> Result<Self, OptimError> {
        match rows.checked_mul(cols) {
            Some(n) if n == data.len() && n > 0 => Ok(MatIn { data, rows, cols }),
            _ => Err(mismatch("buffer", data.len(), rows, cols)),
        }
    }

    /// The first `rows · cols` elements of `data` as a matrix; `None` when `data` is shorter or
    /// the matrix has no element. (The barrier path lends a primitive buffers that may be
    /// longer than its view.)
    pub(crate) fn prefix(data: &'a [E], rows: usize, cols: usize) -> Option<Self> {
        let n = rows.checked_mul(cols).filter(|&n| n > 0)?;
        Some(MatIn {
            data: data.get(..n)?,
            rows,
            cols,
        })
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The elements, row-major (`rows · cols` of them).
    pub fn data(&self) -> &'a [E] {
        self.data
    }

    /// Number of elements (`rows · cols`, at least 1).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Always `false`: a view has at least one element (see [`MatIn::new`]).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<'a, E: Float> MatIn<'a, E> {
    /// Whether every element is finite (no NaN, no infinity).
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }

    /// The same matrix as a faer view.
    pub(crate) fn faer(&self) -> faer::MatRef<'a, E> {
        faer::MatRef::from_row_major_slice(self.data, self.rows, self.cols)
    }
}

/// A matrix primitive's input and its output: a [`MatIn`] and a mutable buffer of the same
/// `rows × cols` shape (row-major). Built with [`MatInOut::new`], which checks both lengths.
#[derive(Debug, PartialEq)]
pub struct MatInOut<'a, E> {
    input: MatIn<'a, E>,
    out: &'a mut [E],
}

impl<'a, E> MatInOut<'a, E> {
    /// `input` and `out` seen as row-major `rows × cols` matrices.
    ///
    /// Errors: [`OptimError::ShapeMismatch`] when `input` or `out` does not hold exactly
    /// `rows · cols` elements, or the matrix has none (as [`MatIn::new`]).
    pub fn new(
        input: &'a [E],
        out: &'a mut [E],
        rows: usize,
        cols: usize,
    ) -> Result<Self, OptimError> {
        let input = MatIn::new(input, rows, cols)?;
        if out.len() != input.len() {
            return Err(mismatch("output", out.len(), rows, cols));
        }
        Ok(MatInOut { input, out })
    }

    /// The first `rows · cols` elements of `input` and `out`; `None` when either is shorter or
    /// the matrix has no element.
    pub(crate) fn prefix(
        input: &'a [E],
        out: &'a mut [E],
        rows: usize,
        cols: usize,
    ) -> Option<Self> {
        let input = MatIn::prefix(input, rows, cols)?;
        let out = out.get_mut(..input.len())?;
        Some(MatInOut { input, out })
    }

    /// The input.
    pub fn input(&self) -> MatIn<'a, E> {
        self.input
    }

    /// The output (`rows · cols` elements, row-major).
    pub fn out(&mut self) -> &mut [E] {
        self.out
    }

    /// The input and the output, apart.
    pub fn split(self) -> (MatIn<'a, E>, &'a mut [E]) {
        (self.input, self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_refuse_a_length_that_is_not_rows_times_cols() {
        let x = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = MatIn::new(&x, 2, 3).unwrap();
        assert_eq!((m.rows(), m.cols(), m.len()), (2, 3, 6));
        assert!(MatIn::new(&x, 2, 2).is_err());
        assert!(MatIn::new(&x, 4, 2).is_err());
        assert!(MatIn::new(&x[..0], usize::MAX, 2).is_err());
        let empty = MatIn::new(&x[..0], 0, 7).unwrap_err();
        assert!(empty.to_string().contains("no element"), "{empty}");
        assert!(MatIn::prefix(&x, 3, 0).is_none());
        assert!(!MatIn::new(&[1.0, f64::NAN], 1, 2).unwrap().is_finite());
        assert!(m.is_finite());
        let mut out = [0.0f64; 5];
        let err = MatInOut::new(&x, &mut out, 2, 3).unwrap_err();
        assert!(
            matches!(&err, OptimError::ShapeMismatch { detail, .. } if detail.contains("has 5")),
            "{err}"
        );
        let mut out = [0.0f64; 6];
        let mut io = MatInOut::new(&x, &mut out, 3, 2).unwrap();
        io.out()[5] = 9.0;
        assert_eq!(io.input().data()[5], 6.0);
        assert_eq!(out[5], 9.0);
    }

    #[test]
    fn prefix_takes_the_first_elements_of_longer_buffers_only() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let mut out = [0.0f32; 4];
        let io = MatInOut::prefix(&x, &mut out, 2, 2).unwrap();
        assert_eq!(io.input().data(), &[1.0, 2.0, 3.0, 4.0]);
        assert!(MatInOut::prefix(&x, &mut out, 1, 5).is_none());
        assert!(MatIn::prefix(&x, 2, 3).is_none());
    }
}
