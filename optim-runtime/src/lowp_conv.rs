//! Branch-free `f32` ⇄ `bf16`/`f16` conversions, bit for bit those of the `half` crate's
//! portable code (`half::bf16::from_f32`, `half::f16::from_f32`, `to_f32`; F16C hardware gives
//! the same bits), written with integer operations and selects only so that the generated
//! loops vectorise (`half`'s functions branch per element, and its F16C path is not taken
//! inside the runtime's `#[target_feature]` loops). Exhaustively checked against `half` in
//! `tests_lowp_exact.rs`. Also bf16 stochastic rounding from `f32`, the same decision as the
//! `f64` formula of [`super::store_sr`] in integers; and the F16C block conversions
//! ([`f16_to_f32_f16c`], [`f32_to_f16_f16c`]) that [`super::load_f16_block`] and
//! [`super::store_f16_block`] use where the CPU has F16C (the generated loops stage `f16`
//! streams through them per block; the integer `f16` code is the portable path).

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

/// `f16` bits widened to `f32` into `out`, 8 at a time with F16C's `vcvtph2ps` (the tail through
/// a zero-padded block of 8): the bits of [`f16_to_f32`] (IEEE 754 widening is exact; NaN gets
/// the quiet bit), checked on every pattern in `tests_lowp_exact.rs`. Converts
/// `min(bits.len(), out.len())` elements.
///
/// # Safety
/// The CPU must support AVX and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
pub(super) unsafe fn f16_to_f32_f16c(bits: &[Bits], out: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = bits.len().min(out.len());
    let (mut hs, mut os) = (bits[..n].chunks_exact(8), out[..n].chunks_exact_mut(8));
    for (h, o) in (&mut hs).zip(&mut os) {
        // SAFETY: `h` holds 8 `u16`s (16 bytes) and `o` 8 `f32`s (32 bytes); both unaligned
        unsafe {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast::<__m128i>()));
            _mm256_storeu_ps(o.as_mut_ptr(), v);
        }
    }
    let (h, o) = (hs.remainder(), os.into_remainder());
    if !h.is_empty() {
        let mut hb = [0 as Bits; 8];
        hb[..h.len()].copy_from_slice(h);
        let mut ob = [0f32; 8];
        // SAFETY: `hb` holds 8 `u16`s and `ob` 8 `f32`s
        unsafe {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(hb.as_ptr().cast::<__m128i>()));
            _mm256_storeu_ps(ob.as_mut_ptr(), v);
        }
        o.copy_from_slice(&ob[..o.len()]);
    }
}

/// `f32`s rounded to `f16` bits into `out`, 8 at a time with F16C's `vcvtps2ph` in round to
/// nearest, ties to even (the immediate rounding mode, not MXCSR's; the tail through a
/// zero-padded block of 8): the bits of [`f32_to_f16`] (subnormals, overflow to infinity, NaN
/// quieted with its sign and top payload bits), checked on a sweep of every rounding edge in
/// `tests_lowp_exact.rs`. Converts `min(xs.len(), out.len())` elements.
///
/// # Safety
/// The CPU must support AVX and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
pub(super) unsafe fn f32_to_f16_f16c(xs: &[f32], out: &mut [Bits]) {
    use std::arch::x86_64::{
        __m128i, _mm256_cvtps_ph, _mm256_loadu_ps, _mm_storeu_si128, _MM_FROUND_TO_NEAREST_INT,
    };
    let n = xs.len().min(out.len());
    let (mut xc, mut oc) = (xs[..n].chunks_exact(8), out[..n].chunks_exact_mut(8));
    for (x, o) in (&mut xc).zip(&mut oc) {
        // SAFETY: `x` holds 8 `f32`s (32 bytes) and `o` 8 `u16`s (16 bytes); both unaligned
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr()));
            _mm_storeu_si128(o.as_mut_ptr().cast::<__m128i>(), h);
        }
    }
    let (x, o) = (xc.remainder(), oc.into_remainder());
    if !x.is_empty() {
        let mut xb = [0f32; 8];
        xb[..x.len()].copy_from_slice(x);
        let mut ob = [0 as Bits; 8];
        // SAFETY: `xb` holds 8 `f32`s and `ob` 8 `u16`s
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(xb.as_ptr()));
            _mm_storeu_si128(ob.as_mut_ptr().cast::<__m128i>(), h);
        }
        o.copy_from_slice(&ob[..o.len()]);
    }
}

/// `f32` `x` to `f16` with stochastic rounding by the random bits `r`: exactly
/// [`super::store_sr`]'s choice for `x` (its `f64` test `u·(hi − lo) < |x| − lo`, `u = r·2^-32`),
/// branch-free. Normal `f16` range: `hi − lo` is `2^13` ulps of `x` and `|x| − lo` the 13 dropped
/// bits `d`, so the test is `(r >> 19) < d`. Subnormal range (`|x| < 2^-14`, spacing `2^-24`):
/// `|x| = M·2^(e − 150)` (`M` the 24-bit significand, `e` the biased exponent, at least 1), the
/// code is `M >> k` with `k = 126 − e` and the test is `r < dropped·2^(32 − k)`, that is
/// `r·2^(k − 32) < dropped` for `k > 32` (in 64 bits, the shift capped at 32, which keeps
/// the comparison's outcome as `dropped < 2^24`). Between the largest finite value 65504 and
/// the rounding point to infinity (65520) always `lo` (`hi` is infinity); from 65520 up, NaN
/// and infinities as round-to-nearest stores them.
#[inline(always)]
pub(super) fn f32_to_f16_sr(x: f32, r: u32) -> Bits {
    let b = x.to_bits();
    let sign = (b >> 16) & 0x8000;
    let a = b & 0x7fff_ffff;
    // normal: rebias the exponent (127 → 15), truncate, then up by the draw
    let t = a.wrapping_sub(112 << 23);
    let lo_n = t >> 13;
    let up_n = (r >> 19) < (t & 0x1fff) && lo_n != 0x7bff;
    let normal = lo_n + u32::from(up_n);
    // subnormal (and f32 subnormal inputs, e = 0 with no implicit bit)
    let e = (a >> 23).max(1);
    let m = (a & 0x007f_ffff) | if a >= 0x0080_0000 { 0x0080_0000 } else { 0 };
    let k = 126 - e.min(126);
    let (lo_s, dropped) = if k >= 32 {
        (0, u64::from(m))
    } else {
        (m >> k, u64::from(m & ((1 << k) - 1)))
    };
    let r64 = u64::from(r);
    let up_s = if k <= 32 {
        r64 < dropped << (32 - k)
    } else {
        (r64 << (k - 32).min(32)) < dropped
    };
    let sub = lo_s + u32::from(up_s);
    if a >= 0x477f_f000 {
        // 65520 and above (infinity), infinities, NaN
        f32_to_f16(x)
    } else if a >= 0x3880_0000 {
        (normal | sign) as Bits
    } else {
        (sub | sign) as Bits
    }
}
