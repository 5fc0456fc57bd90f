//! Branch-free `f32` ⇄ `bf16`/`f16` conversions, bit for bit those of the `half` crate's
//! portable code (`half::bf16::from_f32`, `half::f16::from_f32`, `to_f32`; F16C hardware gives
//! the same bits), written with integer operations and selects only so that the generated
//! loops vectorise (`half`'s functions branch per element, and its F16C path is not taken
//! inside the runtime's `#[target_feature]` loops). Exhaustively checked against `half` in
//! `tests_lowp_exact.rs`. Also bf16 stochastic rounding from `f32`, the same decision as the
//! `f64` formula of [`super::store_sr`] in integers.

use super::Bits;

/// `f32` to `bf16` bits, round to nearest, ties to even; NaN keeps its sign and top payload
/// bits and gets the quiet bit (`0x0040`), as `half::bf16::from_f32`.
#[inline(always)]
pub(super) fn f32_to_bf16(x: f32) -> Bits {
    let b = x.to_bits();
    // adding 0x7fff plus the lowest kept bit rounds the dropped half to nearest, ties to even;
    // the carry may run into the exponent (up to infinity), as it should
    let rne = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { (b >> 16) | 0x0040 } else { rne }) as Bits
}

/// `bf16` bits widened to `f32` (exact; NaN gets the quiet bit, as `half::bf16::to_f32`).
#[inline(always)]
pub(super) fn bf16_to_f32(h: Bits) -> f32 {
    let w = u32::from(h);
    let nan = (w & 0x7fff) > 0x7f80;
    f32::from_bits((if nan { w | 0x0040 } else { w }) << 16)
}

/// `f32` to `f16` bits, round to nearest, ties to even (subnormals included); beyond the
/// largest finite value (after rounding) infinity; NaN as `0x7e00 | payload >> 13` with its
/// sign, as `half::f16::from_f32`.
#[inline(always)]
pub(super) fn f32_to_f16(x: f32) -> Bits {
    let b = x.to_bits();
    let sign = (b >> 16) & 0x8000;
    let a = b & 0x7fff_ffff;
    let man = a & 0x007f_ffff;
    // infinity, or NaN with the quiet bit and the top payload bits
    let special = 0x7c00 | (if man != 0 { 0x0200 } else { 0 }) | (man >> 13);
    // normal f16: rebias the exponent (127 → 15), round the 13 dropped bits to nearest even;
    // a carry out of the mantissa bumps the exponent (to infinity above 65504 + half an ulp)
    let t = a.wrapping_sub(112 << 23);
    let normal = t.wrapping_add(0xfff + ((t >> 13) & 1)) >> 13;
    // subnormal f16 (|x| < 2^-14): adding 0.5 (ulp 2^-24, the f16 subnormal spacing) rounds
    // |x| to a multiple of 2^-24 in the FPU's round-to-nearest-even; its low bits are the code
    let sub = (f32::from_bits(a) + 0.5)
        .to_bits()
        .wrapping_sub(0x3f00_0000);
    let r = if a >= 0x7f80_0000 {
        special
    } else if a >= 0x4780_0000 {
        // |x| >= 2^16: infinity
        0x7c00
    } else if a >= 0x3880_0000 {
        normal
    } else {
        sub
    };
    (r | sign) as Bits
}

/// `f16` bits widened to `f32` (exact; NaN gets the quiet bit, as `half::f16::to_f32`).
#[inline(always)]
pub(super) fn f16_to_f32(h: Bits) -> f32 {
    let w = u32::from(h);
    let sign = (w & 0x8000) << 16;
    let em = w & 0x7fff;
    let exp = em & 0x7c00;
    let man = em & 0x03ff;
    // normal: rebias the exponent (15 → 127)
    let normal = (em << 13) + (112 << 23);
    // infinity, or NaN with the quiet bit
    let special = 0x7f80_0000 | (man << 13) | (if man != 0 { 0x0040_0000 } else { 0 });
    // zero or subnormal: man · 2^-24, as (2^-14 · (1 + man / 1024)) − 2^-14 (exact)
    let sub = (f32::from_bits((man << 13) + (113 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let r = if exp == 0x7c00 {
        special
    } else if exp == 0 {
        sub
    } else {
        normal
    };
    f32::from_bits(r | sign)
}

/// `f32` `x` to `bf16` with stochastic rounding by the random bits `r`: exactly
/// [`super::store_sr`]'s choice for `x` (its `f64` test `u·(hi − lo) < |x| − lo` with
/// `u = r·2^-32`, `hi − lo = 2^16` ulps of `x` and `|x| − lo` = the 16 dropped bits `d`, is
/// `r < d·2^16`, that is `(r >> 16) < d`), branch-free. NaN, infinities and magnitudes from the
/// largest finite `bf16` up are stored as round-to-nearest stores them.
#[inline(always)]
pub(super) fn f32_to_bf16_sr(x: f32, r: u32) -> Bits {
    let b = x.to_bits();
    let a = b & 0x7fff_ffff;
    let up = (r >> 16) < (a & 0xffff);
    let sr = ((b >> 16) & 0x8000) | ((a >> 16) + u32::from(up));
    if a >= 0x7f7f_0000 {
        f32_to_bf16(x)
    } else {
        sr as Bits
    }
}
