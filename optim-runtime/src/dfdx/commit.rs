//! The commit of a device step into a dfdx tensor: publishing the optimizer's master copy of a
//! parameter (design (b) of issue 12, see `docs/gpu.md`).
//!
//! dfdx 0.13 keeps a tensor's value buffer crate-private, so a kernel cannot update a model's
//! tensor in place. The device step driver updates its own copy (the *master*) and
//! [`publish`] writes it into the tensor through dfdx's public API, keeping the tensor's id
//! (so the user's `Gradients`, keyed by id, stay valid and nothing leaks):
//!
//! 1. the master buffer is swapped into the tensor's gradient slot (no copy) and
//!    `Gradients::get` makes a tensor of it (one device copy), then the slot gets its gradient
//!    back: `grads` is unchanged;
//! 2. `try_fill_with_zeros` clears the tensor (a non-finite value there would survive step 3
//!    as NaN: `0 · inf = NaN`);
//! 3. `try_axpy(-0.0, copy, 1.0)` writes `p = p·(−0) + x·1 = −0 + x = x`, exactly, for every
//!    `x` including `±inf`, NaN and `−0` (`+0` for `alpha` would turn `x = −0` into `+0`).
//!
//! Device traffic per element: 8 bytes for the copy, 4 for the fill, 12 for the axpy. The
//! module is generic over the dfdx device, so the same code is tested on `Cpu`.

use crate::error::OptimError;
use crate::float::Float;
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, Tensor};
use dfdx::tensor_ops::Device;

fn device_error(what: &str, e: impl core::fmt::Debug) -> OptimError {
    OptimError::Device(format!("{what}: {e:?}"))
}

/// Writes `master` (exactly the tensor's element count, in its row-major order) into `param`,
/// keeping `param`'s id; `grads` and `master` are unchanged on return (see the
/// [module docs](self)). `len` gives a buffer's element count and `swap` exchanges the
/// tensor's gradient buffer with a master buffer (allocating a zero gradient when it has none,
/// as `update` gives it).
///
/// # Errors
/// [`OptimError::ShapeMismatch`] when `master` has another length (checked before anything is
/// written); [`OptimError::Device`] when dfdx fails (a failed fill or axpy leaves the tensor
/// partly written: the device is unusable then).
pub(crate) fn publish<S, E, D, V>(
    name: &str,
    param: &mut Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    master: &mut V,
    len: fn(&V) -> usize,
    swap: impl Fn(&mut Gradients<E, D>, &Tensor<S, E, D>, &mut V) -> Result<(), OptimError>,
) -> Result<(), OptimError>
where
    S: Shape,
    E: Float,
    D: Device<E>,
{
    let n = param.shape().num_elements();
    if len(master) != n {
        return Err(OptimError::ShapeMismatch {
            param: name.to_string(),
            detail: format!(
                "the device copy has {} elements, the tensor {n}",
                len(master)
            ),
        });
    }
    // `swap` allocates the slot when missing, so `get` below cannot panic
    swap(grads, param, master)?;
    let copy = grads.get(param);
    swap(grads, param, master)?;
    param
        .try_fill_with_zeros()
        .map_err(|e| device_error("publish (fill)", e))?;
    // `copy` has `param`'s shape and strides (`Gradients::get` takes them from `param`), so
    // dfdx's shape assertions hold
    param
        .try_axpy(-0.0, &copy, 1.0)
        .map_err(|e| device_error("publish (axpy)", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::shapes::Rank1;
    use dfdx::tensor::{AsArray, Cpu, TensorFrom};

    fn swap<S: Shape>(
        grads: &mut Gradients<f32, Cpu>,
        t: &Tensor<S, f32, Cpu>,
        m: &mut Vec<f32>,
    ) -> Result<(), OptimError> {
        std::mem::swap(&mut **grads.get_or_alloc_mut(t).unwrap(), m);
        Ok(())
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn publish_writes_the_master_exactly_and_leaves_grads_alone() {
        let dev = Cpu::default();
        // the tensor holds non-finite values (as after a diverged step): the fill clears them
        let mut p: Tensor<Rank1<6>, f32, Cpu> =
            dev.tensor([f32::INFINITY, f32::NAN, 1.0, -2.0, f32::NEG_INFINITY, 5.0]);
        let mut grads = Gradients::<f32, Cpu>::leaky();
        **grads.get_or_alloc_mut(&p).unwrap() = vec![0.5, -0.5, 1.5, 0.0, 2.0, 3.0];
        let want = [
            -0.0f32,
            1.25,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            7.0,
        ];
        let mut master = want.to_vec();
        publish("w", &mut p, &mut grads, &mut master, Vec::len, swap).unwrap();
        assert_eq!(
            bits(&p.array()),
            bits(&want),
            "every bit, -0 and NaN included"
        );
        assert_eq!(bits(&master), bits(&want), "the master is handed back");
        assert_eq!(
            grads.get(&p).array(),
            [0.5, -0.5, 1.5, 0.0, 2.0, 3.0],
            "the gradient slot of the same id is unchanged"
        );
    }

    #[test]
    fn the_naive_publish_is_wrong_where_publish_is_right() {
        // `try_axpy(0, master, 1)` over a tensor holding inf gives NaN (0 · inf) and `+0` for
        // a `-0` master value: the reasons for the fill and for `alpha = -0.0`
        let dev = Cpu::default();
        let mut naive: Tensor<Rank1<2>, f32, Cpu> = dev.tensor([f32::INFINITY, 3.0]);
        let master: Tensor<Rank1<2>, f32, Cpu> = dev.tensor([1.0, -0.0]);
        naive.try_axpy(0.0, &master, 1.0).unwrap();
        let got = naive.array();
        assert!(got[0].is_nan());
        assert_eq!(got[1].to_bits(), 0.0f32.to_bits());

        let mut p: Tensor<Rank1<2>, f32, Cpu> = dev.tensor([f32::INFINITY, 3.0]);
        let mut grads = Gradients::<f32, Cpu>::leaky();
        let mut m = vec![1.0f32, -0.0];
        publish("w", &mut p, &mut grads, &mut m, Vec::len, swap).unwrap();
        assert_eq!(bits(&p.array()), bits(&[1.0, -0.0]));
        assert_eq!(
            grads.get(&p).array(),
            [0.0, 0.0],
            "a missing slot is allocated as zeros"
        );
    }

    #[test]
    fn publish_refuses_a_master_of_another_length_before_writing() {
        let dev = Cpu::default();
        let mut p: Tensor<Rank1<3>, f32, Cpu> = dev.tensor([1.0, 2.0, 3.0]);
        let mut grads = Gradients::<f32, Cpu>::leaky();
        let mut master = vec![9.0f32; 2];
        let err = publish("layer.w", &mut p, &mut grads, &mut master, Vec::len, swap).unwrap_err();
        assert!(
            matches!(&err, OptimError::ShapeMismatch { param, .. } if param == "layer.w"),
            "{err:?}"
        );
        assert_eq!(p.array(), [1.0, 2.0, 3.0]);
        assert_eq!(master, [9.0, 9.0]);
    }
}
