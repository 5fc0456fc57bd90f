//! The element types a generated kernel runs on.

/// An element type of parameters, gradients and state buffers: `f32` or `f64`.
///
/// Generated kernels are generic over `E: Float`; host-side scalar math (bias corrections, schedule
/// values, shape scalars) is done in `f64` and converted with [`Float::of_f64`] once per step and
/// tensor, as PyTorch does with Python floats.
pub trait Float:
    num_traits::Float
    + faer::traits::RealField
    + core::ops::AddAssign
    + core::ops::SubAssign
    + core::ops::MulAssign
    + core::ops::DivAssign
    + DfdxDtype
    + Default
    + Send
    + Sync
    + core::fmt::Debug
    + core::fmt::Display
    + 'static
{
    /// `"f32"` or `"f64"` (used in plans and checkpoints).
    const NAME: &'static str;
    /// Size of one element in bytes (4 or 8).
    const BYTES: usize;
    /// Converts a host-side `f64` scalar (rounding to nearest for `f32`).
    fn of_f64(x: f64) -> Self;
    /// Widens to `f64` (exact).
    fn as_f64(self) -> f64;
    /// `xs` as `f32`s when `Self` is `f32`, `None` for `f64`: hands a generic slice to
    /// `f32`-only code (the F16C conversions of [`crate::lowp::load_f16_block`]).
    fn f32s(xs: &[Self]) -> Option<&[f32]>;
    /// `xs` as mutable `f32`s when `Self` is `f32`, `None` for `f64`.
    fn f32s_mut(xs: &mut [Self]) -> Option<&mut [f32]>;
}

/// What the dfdx driver needs of an element type (feature `dfdx`): a dfdx `Dtype` whose CPU
/// gradients it can borrow. Without the feature, an empty trait of every type. Not public API.
#[cfg(feature = "dfdx")]
#[doc(hidden)]
pub trait DfdxDtype: dfdx::dtypes::Dtype {
    /// Moves the gradient buffer of `t` out of `grads` (allocating zeros if absent), leaving an
    /// empty buffer in its place. Used by the dfdx driver to borrow gradients without copying.
    fn take_grad<S: dfdx::shapes::Shape>(
        grads: &mut dfdx::tensor::Gradients<Self, dfdx::tensor::Cpu>,
        t: &dfdx::tensor::Tensor<S, Self, dfdx::tensor::Cpu>,
    ) -> Result<Vec<Self>, dfdx::tensor::CpuError>;
    /// Puts a buffer taken by [`DfdxDtype::take_grad`] back.
    fn put_grad<S: dfdx::shapes::Shape>(
        grads: &mut dfdx::tensor::Gradients<Self, dfdx::tensor::Cpu>,
        t: &dfdx::tensor::Tensor<S, Self, dfdx::tensor::Cpu>,
        buf: Vec<Self>,
    ) -> Result<(), dfdx::tensor::CpuError>;
}

#[cfg(feature = "dfdx")]
macro_rules! cpu_grad_access {
    ($($t:ty),*) => {$(
        impl DfdxDtype for $t {
            fn take_grad<S: dfdx::shapes::Shape>(
                grads: &mut dfdx::tensor::Gradients<Self, dfdx::tensor::Cpu>,
                t: &dfdx::tensor::Tensor<S, Self, dfdx::tensor::Cpu>,
            ) -> Result<Vec<Self>, dfdx::tensor::CpuError> {
                let g = grads.get_or_alloc_mut(t)?;
                Ok(std::mem::take(&mut **g))
            }
            fn put_grad<S: dfdx::shapes::Shape>(
                grads: &mut dfdx::tensor::Gradients<Self, dfdx::tensor::Cpu>,
                t: &dfdx::tensor::Tensor<S, Self, dfdx::tensor::Cpu>,
                buf: Vec<Self>,
            ) -> Result<(), dfdx::tensor::CpuError> {
                let g = grads.get_or_alloc_mut(t)?;
                **g = buf;
                Ok(())
            }
        }
    )*};
}

#[cfg(feature = "dfdx")]
cpu_grad_access!(f32, f64);

/// What the dfdx driver needs of an element type: nothing without the feature `dfdx`.
#[cfg(not(feature = "dfdx"))]
#[doc(hidden)]
pub trait DfdxDtype {}

#[cfg(not(feature = "dfdx"))]
impl<T> DfdxDtype for T {}

impl Float for f32 {
    const NAME: &'static str = "f32";
    const BYTES: usize = 4;
    #[inline(always)]
    fn of_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn f32s(xs: &[Self]) -> Option<&[f32]> {
        Some(xs)
    }
    #[inline(always)]
    fn f32s_mut(xs: &mut [Self]) -> Option<&mut [f32]> {
        Some(xs)
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    const BYTES: usize = 8;
    #[inline(always)]
    fn of_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn f32s(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn f32s_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}
