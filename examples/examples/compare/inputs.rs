//! Inputs of the `compare` example: how a batch of flat feature rows becomes a model's input
//! tensor (flat vectors for the MLPs, 5×5 patches for the CNN).

use super::*;

/// Turns `n` flat feature rows into a model input of shape `S` (without a tape).
pub(super) trait Input<S: Shape> {
    fn make(&self, dev: &Cpu, features: Vec<f32>, n: usize) -> Tensor<S, f32, Cpu>;
}

/// Flat vectors, for the MLPs.
pub(super) struct Flat<const I: usize>;

impl<const I: usize> Input<(usize, Const<I>)> for Flat<I> {
    fn make(&self, dev: &Cpu, features: Vec<f32>, n: usize) -> Tensor<(usize, Const<I>), f32, Cpu> {
        dev.tensor_from_vec(features, (n, Const))
    }
}

/// Side of a Fashion-MNIST image, and the CNN's convolution: kernel, stride, output side,
/// channels.
pub(super) const SIDE: usize = 28;
pub(super) const KERNEL: usize = 5;
pub(super) const STRIDE: usize = 2;
pub(super) const OUT_SIDE: usize = (SIDE - KERNEL) / STRIDE + 1; // 12
pub(super) const PATCHES: usize = OUT_SIDE * OUT_SIDE; // 144
pub(super) const PATCH: usize = KERNEL * KERNEL; // 25
pub(super) const CHANNELS: usize = 16;
pub(super) const CONV_FEATURES: usize = PATCHES * CHANNELS; // 2304

/// im2col of 28×28 images into `PATCHES` rows of `PATCH` pixels (5×5, stride 2, no padding),
/// for the CNN.
pub(super) struct Patches;

impl Input<(usize, Const<PATCHES>, Const<PATCH>)> for Patches {
    fn make(
        &self,
        dev: &Cpu,
        features: Vec<f32>,
        n: usize,
    ) -> Tensor<(usize, Const<PATCHES>, Const<PATCH>), f32, Cpu> {
        let mut cols = Vec::with_capacity(n * PATCHES * PATCH);
        for img in features.chunks_exact(SIDE * SIDE) {
            for oy in 0..OUT_SIDE {
                for ox in 0..OUT_SIDE {
                    for ky in 0..KERNEL {
                        let row = (oy * STRIDE + ky) * SIDE + ox * STRIDE;
                        cols.extend_from_slice(&img[row..row + KERNEL]);
                    }
                }
            }
        }
        dev.tensor_from_vec(cols, (n, Const, Const))
    }
}

/// Flattens `(batch, patches, channels)` to `(batch, N)` (`N = patches × channels`, checked at
/// run time). dfdx's `Flatten2D` needs its nightly feature.
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct FlattenTo<const N: usize>;

impl<const N: usize> ZeroSizedModule for FlattenTo<N> {}
impl<const N: usize> NonMutableModule for FlattenTo<N> {}

impl<const N: usize, S: Dim, const C: usize, T: Tape<f32, Cpu>>
    Module<Tensor<(usize, S, Const<C>), f32, Cpu, T>> for FlattenTo<N>
{
    type Output = Tensor<(usize, Const<N>), f32, Cpu, T>;
    type Error = <Cpu as dfdx::tensor::HasErr>::Err;

    fn try_forward(
        &self,
        x: Tensor<(usize, S, Const<C>), f32, Cpu, T>,
    ) -> Result<Self::Output, Self::Error> {
        let batch = x.shape().0;
        x.try_reshape_like(&(batch, Const::<N>))
    }
}

/// The CNN of `--model cnn` with hidden width `H` (input: [`Patches`]).
pub(super) type Cnn<const H: usize> = (
    Linear<PATCH, CHANNELS>,
    ReLU,
    FlattenTo<CONV_FEATURES>,
    Linear<CONV_FEATURES, H>,
    ReLU,
    Linear<H, CLASSES>,
);
