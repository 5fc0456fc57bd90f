//! [`ParamSlice`]s built from names, shapes, values and gradients.

use optim_dsl::ParamSlice;

/// One [`ParamSlice`].
pub fn slice<'a, E>(
    name: &'a str,
    shape: &'a [usize],
    param: &'a mut [E],
    grad: &'a [E],
) -> ParamSlice<'a, E> {
    ParamSlice {
        name,
        shape,
        param,
        grad,
    }
}

/// The [`ParamSlice`]s of parameters given as parallel lists: `names[i]` has shape
/// `shapes[i]`, values `params[i]` and gradient `grads[i]`.
pub fn slices<'a, E, N: AsRef<str>, S: AsRef<[usize]>>(
    names: &'a [N],
    shapes: &'a [S],
    params: &'a mut [Vec<E>],
    grads: &'a [Vec<E>],
) -> Vec<ParamSlice<'a, E>> {
    names
        .iter()
        .zip(shapes)
        .zip(params.iter_mut())
        .zip(grads)
        .map(|(((n, s), p), g)| slice(n.as_ref(), s.as_ref(), p, g))
        .collect()
}
