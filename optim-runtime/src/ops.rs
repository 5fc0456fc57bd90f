//! Element-wise math used by generated kernels (and, with `E = f64`, by hoisted scalar code).
//! Each function is one DSL word; semantics follow PyTorch where Rust's differ.

use crate::Float;

/// `sqrt(x)`; negative input gives NaN.
#[inline(always)]
pub fn sqrt<E: Float>(x: E) -> E {
    x.sqrt()
}

/// `rsqrt(x) = 1 / sqrt(x)`.
#[inline(always)]
pub fn rsqrt<E: Float>(x: E) -> E {
    E::one() / x.sqrt()
}

/// `abs(x)`.
#[inline(always)]
pub fn abs<E: Float>(x: E) -> E {
    x.abs()
}

/// `sign(x)`: `1` for `x > 0`, `-1` for `x < 0`, and `x` itself for `±0` and NaN — PyTorch's
/// `torch.sign` (Rust's `signum` returns `1` for `+0`, which would move Lion's zero entries).
#[inline(always)]
pub fn sign<E: Float>(x: E) -> E {
    if x > E::zero() {
        E::one()
    } else if x < E::zero() {
        -E::one()
    } else {
        x
    }
}

/// `exp(x)`.
#[inline(always)]
pub fn exp<E: Float>(x: E) -> E {
    x.exp()
}

/// Natural logarithm.
#[inline(always)]
pub fn ln<E: Float>(x: E) -> E {
    x.ln()
}

/// `max(a, b)`, NaN-propagating like `torch.maximum` (Rust's `f32::max` drops NaN).
#[inline(always)]
pub fn max<E: Float>(a: E, b: E) -> E {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

/// `min(a, b)`, NaN-propagating like `torch.minimum`.
#[inline(always)]
pub fn min<E: Float>(a: E, b: E) -> E {
    if a < b || a.is_nan() {
        a
    } else {
        b
    }
}

/// `clamp(x, lo, hi) = min(max(x, lo), hi)`.
#[inline(always)]
pub fn clamp<E: Float>(x: E, lo: E, hi: E) -> E {
    min(max(x, lo), hi)
}

/// `pow(x, y) = x^y`.
#[inline(always)]
pub fn pow<E: Float>(x: E, y: E) -> E {
    x.powf(y)
}

/// `lerp(a, b, t) = a + t * (b - a)` — PyTorch's `lerp_` form, used for EMA updates.
#[inline(always)]
pub fn lerp<E: Float>(a: E, b: E, t: E) -> E {
    a + t * (b - a)
}

/// `softsign(x) = x / (1 + |x|)`: a smooth, bounded sign in (-1, 1), odd, `softsign(±0) = ±0`.
/// Computed as written, like `torch.nn.functional.softsign`: NaN for NaN and for `±inf`
/// (`inf / inf`).
#[inline(always)]
pub fn softsign<E: Float>(x: E) -> E {
    x / (E::one() + x.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_torch_at_zero_and_nan() {
        assert_eq!(sign(0.0f32).to_bits(), 0.0f32.to_bits());
        assert_eq!(sign(-0.0f32).to_bits(), (-0.0f32).to_bits());
        assert_eq!(sign(-3.0f32), -1.0);
        assert!(sign(f32::NAN).is_nan());
    }

    #[test]
    fn max_propagates_nan_from_either_side() {
        assert!(max(f32::NAN, 1.0).is_nan());
        assert!(max(1.0, f32::NAN).is_nan());
        assert_eq!(max(1.0f64, 2.0), 2.0);
    }
}
