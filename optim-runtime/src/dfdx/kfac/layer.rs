//! [`KfacLinear`]: dfdx's `Linear` with K-FAC statistic capture.

use crate::float::Float;
use dfdx::nn::modules::Linear;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorField, TensorOptions};
use dfdx::nn::{BuildModule, BuildOnDevice, Module, NonMutableModule};
use dfdx::shapes::{Const, ConstShape, Dim, Dtype, Rank1, Rank2, Shape};
use dfdx::tensor::{
    Cpu, CpuError, NoneTape, PutTape, SplitTape, Storage, Tape, Tensor, ZerosTensor,
};
use dfdx::tensor_ops::Device;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use rand_distr::Uniform;
use std::ops::DerefMut;

/// The dfdx builder type of [`KfacLinear`] (use it in an architecture type, as
/// `dfdx::nn::builders::Linear`): `dev.build_module::<(KfacLinear<64, 128>, ReLU, ...), f32>()`.
pub mod builder {
    /// Builder of [`super::KfacLinear`]`<I, O, E, D>`.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct KfacLinear<const I: usize, const O: usize>;
}

impl<const I: usize, const O: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E>
    for builder::KfacLinear<I, O>
where
    KfacLinear<I, O, E, D>: BuildModule<D, E>,
{
    type Built = KfacLinear<I, O, E, D>;
    fn try_build_on_device(device: &D) -> Result<Self::Built, D::Err> {
        Self::Built::try_build(device)
    }
}

/// dfdx's `Linear` (`y = x Wᵀ + b`, `W: [O, I]`, `b: [O]`, the same forward, initialisation and
/// tensor names `weight` and `bias`) that also records the statistics K-FAC needs, during
/// `backward()`, into the gradient slots of three buffers:
///
/// - `kfac_a`, `I × I`: `Σₙ aₙ aₙᵀ` over the rows `n` of the layer's input.
/// - `kfac_g`, `O × O`: `Σₙ ĝₙ ĝₙᵀ` with `ĝₙ = N · ∂L/∂yₙ`, `N` the number of rows of the
///   input in this forward: the gradient of the *per-example* loss `ℓₙ` when the loss is the
///   mean `L = (1/N) Σₙ ℓₙ` over those rows, as dfdx's `cross_entropy_with_logits_loss` and
///   `mse_loss` are (for `mse_loss`, `ℓₙ` is the mean over the `O` outputs of row `n`).
/// - `kfac_n`, `[1]`: the number of rows recorded.
///
/// A row is one input vector: a `[B, I]` batch has `B` rows, a `[B, S, I]` sequence batch `B·S`
/// (each position an example), a single `[I]` input one. The values of the three buffers are
/// the running averages that [`super::KfacStats::update`] keeps (zero-initialised, like
/// BatchNorm's running statistics: `do_gradient_update = false`, so no optimizer steps them
/// and dfdx's safetensors save them with the model).
///
/// **Capture mechanism** (dfdx 0.13 public API only). The forward is `Linear`'s; when the input
/// carries an `OwnedTape`, the output's tape gets one more backward operation
/// (`Tape::add_backward_op`), added right after the layer's own operations. dfdx runs backward
/// operations in reverse order of creation, so this one runs after every consumer of the
/// output has added its share to `∂L/∂y` and before the layer's own operations: it reads the
/// complete output gradient (`Gradients::get_or_alloc_mut` on a ghost of the output), and the
/// input values (kept by an untaped clone, which shares the data), and *adds* the sums above,
/// computed in `f64`, to the gradient slots of `kfac_a`, `kfac_g` and `kfac_n`. Those slots survive
/// `backward()` only if their ids are leaves of the `Gradients` (dfdx drops every other
/// non-parameter gradient at the end of backward): [`super::KfacStats::watch`] registers them
/// (`Gradients::retain_leafs`) once, after `alloc_grads`. Like gradients, the sums accumulate
/// over backward passes until [`super::KfacStats::update`] takes them. Without a tape
/// (`forward` on a `NoneTape` input, e.g. evaluation) nothing is recorded and nothing is
/// computed beyond `Linear`'s forward.
///
/// Cost per backward: `O(N I² + N O²)` flops and a copy of the output gradient — about
/// as much as the layer's own forward when `N`, `I` and `O` are alike.
///
/// Only `Cpu` runs the capture (the runtime's dfdx driver is `Cpu`-only); the module can be
/// built on any device.
#[derive(Debug, Clone)]
pub struct KfacLinear<const I: usize, const O: usize, E: Dtype, D: Storage<E>> {
    /// Weight `[O, I]` (as dfdx's `Linear`; initialised uniformly in `±1/√I`).
    pub weight: Tensor<Rank2<O, I>, E, D>,
    /// Bias `[O]` (as dfdx's `Linear`; initialised uniformly in `±1/√I`).
    pub bias: Tensor<Rank1<O>, E, D>,
    /// `I × I`: the running average of `E[a aᵀ]`, not bias-corrected (divide by `kfac_n`);
    /// its gradient slot receives the batch sums. Zero-initialised.
    pub kfac_a: Tensor<Rank2<I, I>, E, D>,
    /// `O × O`: the running average of `E[ĝ ĝᵀ]`, not bias-corrected (divide by `kfac_n`);
    /// its gradient slot receives the batch sums. Zero-initialised.
    pub kfac_g: Tensor<Rank2<O, O>, E, D>,
    /// `[1]`: the bias correction `1 − decayᵏ` after `k` updates (the running average of 1);
    /// its gradient slot receives the number of rows recorded. Zero-initialised.
    pub kfac_n: Tensor<Rank1<1>, E, D>,
}

impl<const I: usize, const O: usize, E: Dtype, D: Storage<E>> NonMutableModule
    for KfacLinear<I, O, E, D>
{
}

impl<const I: usize, const O: usize, E, D> TensorCollection<E, D> for KfacLinear<I, O, E, D>
where
    E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = KfacLinear<I, O, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        // the same initialisation, in the same order, as dfdx's `Linear` (whose expression
        // this repeats): a model built from the same seed has the same weights with
        // `KfacLinear` as with `Linear` (the buffers are zero-filled and draw no random numbers)
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    Self::linear_init(),
                ),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, Self::linear_init()),
                Self::statistic("kfac_a", |s| &s.kfac_a, |s| &mut s.kfac_a),
                Self::statistic("kfac_g", |s| &s.kfac_g, |s| &mut s.kfac_g),
                Self::statistic("kfac_n", |s| &s.kfac_n, |s| &mut s.kfac_n),
            ),
            |(weight, bias, kfac_a, kfac_g, kfac_n)| KfacLinear {
                weight,
                bias,
                kfac_a,
                kfac_g,
                kfac_n,
            },
        )
    }
}

impl<const I: usize, const O: usize, E, D> KfacLinear<I, O, E, D>
where
    E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform,
    D: Device<E>,
{
    /// dfdx `Linear`'s initialisation of its weight and bias (whose expression this repeats):
    /// uniform in `±1/√I`.
    fn linear_init<S: ConstShape>() -> TensorOptions<S, E, D> {
        TensorOptions::reset_with(|t| {
            let b: E = E::ONE / E::from_usize(I).unwrap_or(E::ONE).sqrt();
            t.try_fill_with_distr(Uniform::new(-b, b))
        })
    }

    /// A statistic buffer: never trained, zero-filled (it draws no random numbers).
    fn statistic<'a, S, F1, F2>(
        name: &'a str,
        get_ref: F1,
        get_mut: F2,
    ) -> TensorField<'a, F1, F2, Self, S, E, D>
    where
        S: ConstShape,
        F1: FnMut(&Self) -> &Tensor<S, E, D>,
        F2: FnMut(&mut Self) -> &mut Tensor<S, E, D>,
    {
        let zeros = TensorOptions::detached(|t| t.try_fill_with_zeros());
        Self::tensor(name, get_ref, get_mut, zeros)
    }
}

impl<const I: usize, const O: usize, E: Float> KfacLinear<I, O, E, Cpu>
where
    Cpu: Device<E>,
    <Cpu as Storage<E>>::Vec: DerefMut<Target = Vec<E>>,
{
    /// Wraps an existing `Linear` (its tensors are shared, not copied: same ids), with zero
    /// statistics.
    ///
    /// # Errors
    /// [`CpuError`] if the statistic buffers cannot be allocated.
    pub fn try_from_linear(linear: Linear<I, O, E, Cpu>) -> Result<Self, CpuError> {
        let dev = linear.weight.device().clone();
        Ok(KfacLinear {
            kfac_a: dev.try_zeros_like(&(Const::<I>, Const::<I>))?,
            kfac_g: dev.try_zeros_like(&(Const::<O>, Const::<O>))?,
            kfac_n: dev.try_zeros_like(&(Const::<1>,))?,
            weight: linear.weight,
            bias: linear.bias,
        })
    }

    /// The plain `Linear` with the same weight and bias tensors (shared, same ids).
    pub fn linear(&self) -> Linear<I, O, E, Cpu> {
        Linear {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
        }
    }

    /// `Linear`'s forward on `x`, plus, when `x` carries a tape, the backward operation that
    /// records the statistics (see the type's docs).
    fn forward_recorded<S: Shape, S2: Shape, T: Tape<E, Cpu>>(
        &self,
        x: Tensor<S, E, Cpu, T>,
        forward: impl FnOnce(
            &Linear<I, O, E, Cpu>,
            Tensor<S, E, Cpu, T>,
        ) -> Result<Tensor<S2, E, Cpu, T>, CpuError>,
    ) -> Result<Tensor<S2, E, Cpu, T>, CpuError> {
        let linear = self.linear();
        if !T::OWNS_TAPE {
            return forward(&linear, x);
        }
        let input = x.retaped::<NoneTape>();
        let y = forward(&linear, x)?;
        let (y, mut tape) = y.split_tape();
        let out = y.ghost();
        let a_slot = self.kfac_a.ghost();
        let g_slot = self.kfac_g.ghost();
        let n_slot = self.kfac_n.ghost();
        tape.add_backward_op(move |grads| {
            // (the ghosts' type is not nameable outside dfdx, hence this closure does the
            // `Gradients` accesses and `batch_sums` the arithmetic)
            let xs = input.as_vec();
            let sums = batch_sums(&xs, grads.get_or_alloc_mut(&out)?.as_slice(), I, O);
            if let Some((a, g, n)) = sums {
                add_into(grads.get_or_alloc_mut(&a_slot)?.deref_mut(), &a);
                add_into(grads.get_or_alloc_mut(&g_slot)?.deref_mut(), &g);
                let count = grads.get_or_alloc_mut(&n_slot)?.deref_mut();
                count.resize(1, E::zero());
                count[0] = E::of_f64(count[0].as_f64() + n);
            }
            Ok(())
        });
        Ok(y.put_tape(tape))
    }
}

/// `(Σ a aᵀ, Σ ĝ ĝᵀ, N)` of one forward (see [`KfacLinear`]), in `f64`: `xs` is the input,
/// row-major `N × i`, `gy` the output gradient `∂L/∂y`, `N × o` (dfdx allocates a gradient
/// with its tensor's layout, row-major for matmul + bias). `None` when there is no row, or the
/// lengths do not fit (a layout this code does not know): then nothing is recorded.
pub(super) fn batch_sums<E: Float>(
    xs: &[E],
    gy: &[E],
    i: usize,
    o: usize,
) -> Option<(Mat<f64>, Mat<f64>, f64)> {
    let rows = xs.len().checked_div(i)?;
    if rows == 0 || gy.len() != rows * o || xs.len() != rows * i {
        return None;
    }
    let n = rows as f64;
    let a = Mat::<f64>::from_fn(rows, i, |r, c| xs[r * i + c].as_f64());
    let g = Mat::<f64>::from_fn(rows, o, |r, c| n * gy[r * o + c].as_f64());
    Some((gram(&a), gram(&g), n))
}

/// `mᵀ m`, multithreaded when large.
fn gram(m: &Mat<f64>) -> Mat<f64> {
    let d = m.ncols();
    let mut out = Mat::<f64>::zeros(d, d);
    let par = if m.nrows() * d * d >= 1 << 22 {
        Par::rayon(0)
    } else {
        Par::Seq
    };
    matmul(
        out.as_mut(),
        Accum::Replace,
        m.transpose(),
        m.as_ref(),
        1.0,
        par,
    );
    out
}

/// `slot += s` (row-major; a slot of another length is first reset to `s`'s size, zero-filled).
fn add_into<E: Float>(slot: &mut Vec<E>, s: &Mat<f64>) {
    let d = s.ncols();
    if slot.len() != d * d {
        slot.clear();
        slot.resize(d * d, E::zero());
    }
    for r in 0..d {
        for c in 0..d {
            let v = &mut slot[r * d + c];
            *v = E::of_f64(v.as_f64() + s[(r, c)]);
        }
    }
}

macro_rules! kfac_forward {
    ($([$($dims:ident),*] $in:ty => $out:ty;)*) => {$(
        impl<$($dims: Dim,)* const I: usize, const O: usize, E: Float, T: Tape<E, Cpu>>
            Module<Tensor<$in, E, Cpu, T>> for KfacLinear<I, O, E, Cpu>
        where
            Cpu: Device<E>,
            <Cpu as Storage<E>>::Vec: DerefMut<Target = Vec<E>>,
            Linear<I, O, E, Cpu>:
                Module<Tensor<$in, E, Cpu, T>, Output = Tensor<$out, E, Cpu, T>, Error = CpuError>,
        {
            type Output = Tensor<$out, E, Cpu, T>;
            type Error = CpuError;

            fn try_forward(&self, x: Tensor<$in, E, Cpu, T>) -> Result<Self::Output, CpuError> {
                self.forward_recorded(x, |l, x| l.try_forward(x))
            }
        }
    )*};
}

kfac_forward! {
    [] (Const<I>,) => (Const<O>,);
    [B] (B, Const<I>) => (B, Const<O>);
    [B, S] (B, S, Const<I>) => (B, S, Const<O>);
}
