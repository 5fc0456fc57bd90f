//! Shared by the no-panic property tests of the matrix primitives (`matrix_no_panic`,
//! `matrix2026_no_panic`): random element values, shapes and gradient sequences, the call site
//! the generated code uses, and a finiteness check.

use optim_dsl::matrix::{Call, Src};
use optim_dsl::Float;
use proptest::prelude::*;
use std::fmt::Debug;
use std::ops::Range;

/// A value: mostly moderate, sometimes NaN, ±inf, huge, tiny or zero.
pub fn value(hostile: bool) -> BoxedStrategy<f64> {
    if hostile {
        prop_oneof![
            6 => -3.0f64..3.0,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(1e30),
            1 => Just(-1e-30),
            1 => Just(0.0),
        ]
        .boxed()
    } else {
        prop_oneof![8 => -3.0f64..3.0, 1 => Just(0.0), 1 => -1e-3f64..1e-3].boxed()
    }
}

/// A shape: a scalar, a vector or matrix with sides 0 to 12, or a 3-D tensor with sides 0 to 4.
pub fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(0usize..13, 1),
        proptest::collection::vec(0usize..13, 2),
        proptest::collection::vec(0usize..5, 3),
    ]
}

/// A random shape, configuration and `steps` gradients of that shape (values from
/// [`value`]`(hostile)`), in that drawing order.
pub fn case<C: Debug + Clone>(
    configs: impl Strategy<Value = C>,
    hostile: bool,
    steps: Range<usize>,
) -> impl Strategy<Value = (Vec<usize>, Vec<Vec<f64>>, C)> {
    (shape(), configs, steps).prop_flat_map(move |(s, c, steps)| {
        let n: usize = s.iter().product();
        (
            Just(s),
            proptest::collection::vec(proptest::collection::vec(value(hostile), n), steps),
            Just(c),
        )
    })
}

/// Every element is finite.
pub fn finite(xs: &[impl Float]) -> bool {
    xs.iter().all(|x| x.is_finite())
}

/// `v` rounded to `E`.
pub fn cast<E: Float>(v: &[f64]) -> Vec<E> {
    v.iter().map(|&x| E::of_f64(x)).collect()
}

/// One call site reading the gradient, with state buffers `state` and scratch buffer 0.
pub fn call(state: &[usize]) -> Call<'_> {
    Call {
        input: Src::Grad,
        out: Some(0),
        state,
        basis_q: None,
        rotated: &[],
        batch: 0,
    }
}

/// What a property run asserts besides "no panic": finite outputs (finite moderate inputs),
/// finite state after every step (sane configurations: bad input is skipped, never stored).
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub finite_outputs: bool,
    pub finite_state: bool,
}
