//! The AVX-512F paths of the 8-bit codec for `f32` blocks (see [`super`]): the encoder as a
//! branch-free binary search over the block's 255 thresholds held in registers, the decoder as
//! register permutes of the 256-entry map. Same codes and values as the portable code, bit for
//! bit (`tests_q8.rs` compares them on random and adversarial blocks).
//!
//! **Encoder.** `x`'s code is the number of midpoints `m` with `m · s < x` (`s` the block
//! scale; [`super::Tables::encode`] counts `m < x / s`, the same set, see
//! `encode_f32`). Each product is exact in `f64` (midpoints of at most 29 significant bits
//! times an `f32`), and for an `f32` `x`, `x > m · s` ⇔ `x > ⌊m · s⌋₃₂`, the largest `f32` not
//! above it (`vcvtpd2ps` rounding toward −∞): the threshold is below `x` exactly when the
//! product is. So once per block the 255 thresholds `⌊m · s⌋₃₂` are computed (32 `f64`
//! multiplies) into 16 registers, in Eytzinger order (the binary search tree laid out level by
//! level: node `i`'s children are `2i` and `2i + 1`), and each element descends the tree in 8
//! steps, `i ← 2i + [x > t_i]`, 16 lanes at a time: levels 1–5 look their node up with one
//! `vpermps` (16 entries), level 6 with one `vpermt2ps` (32), levels 7 and 8 with 2 and 4 and
//! blends on the index bits. The leaf `i − 256` is the code. Four vectors of 16 descend
//! together so that their dependency chains overlap.
//!
//! **Decoder.** `Q[c] · s` in `f32`: the map's 256 entries in 16 registers, 8 `vpermt2ps`
//! (32 entries each, the code's low 5 bits) and a blend tree on bits 5–7, then one multiply.

use std::arch::x86_64::*;

/// Vectors of 16 lanes that descend the tree together.
const W: usize = 4;

/// The leaves (`256 + code`) of `W` vectors of 16 `f32` `x` in the tree `t` (the 256
/// thresholds in Eytzinger order, 16 per register). `one` is a vector of ones the caller
/// hides from the optimiser, so that `2i + [x > t]` stays a masked add (LLVM otherwise widens
/// the mask to a vector first: three operations instead of one).
#[inline]
#[target_feature(enable = "avx512f")]
fn descend<const N: usize>(t: &[__m512; 16], x: [__m512; N], one: __m512i) -> [__m512i; N] {
    let (b5, b6) = (_mm512_set1_epi32(32), _mm512_set1_epi32(64));
    let mut i = [one; N];
    macro_rules! step {
        ($w:expr, $t:expr) => {{
            let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x[$w], $t);
            let ii = _mm512_add_epi32(i[$w], i[$w]);
            i[$w] = _mm512_mask_add_epi32(ii, k, ii, one);
        }};
    }
    // levels 1-4: nodes 1..16 in t[0]; level 5: 16..32 in t[1] (vpermps reads 4 index bits)
    for _ in 0..4 {
        for w in 0..N {
            step!(w, _mm512_permutexvar_ps(i[w], t[0]));
        }
    }
    for w in 0..N {
        step!(w, _mm512_permutexvar_ps(i[w], t[1]));
    }
    // level 6: 32..64 in t[2..4] (vpermt2ps reads 5 index bits)
    for w in 0..N {
        step!(w, _mm512_permutex2var_ps(t[2], i[w], t[3]));
    }
    // level 7: 64..128 in t[4..8], bit 5 picks the pair
    for w in 0..N {
        let a = _mm512_permutex2var_ps(t[4], i[w], t[5]);
        let b = _mm512_permutex2var_ps(t[6], i[w], t[7]);
        let k5 = _mm512_test_epi32_mask(i[w], b5);
        step!(w, _mm512_mask_blend_ps(k5, a, b));
    }
    // level 8: 128..256 in t[8..16], bits 5 and 6 pick the pair
    for w in 0..N {
        let a = _mm512_permutex2var_ps(t[8], i[w], t[9]);
        let b = _mm512_permutex2var_ps(t[10], i[w], t[11]);
        let c = _mm512_permutex2var_ps(t[12], i[w], t[13]);
        let d = _mm512_permutex2var_ps(t[14], i[w], t[15]);
        let k5 = _mm512_test_epi32_mask(i[w], b5);
        let k6 = _mm512_test_epi32_mask(i[w], b6);
        let lo = _mm512_mask_blend_ps(k5, a, b);
        let hi = _mm512_mask_blend_ps(k5, c, d);
        step!(w, _mm512_mask_blend_ps(k6, lo, hi));
    }
    i
}

/// The codes of the finite `f32` block `x` under the positive finite scale `s` into `codes`
/// (`min(x.len(), codes.len())` of them): the codes of [`super::Tables::encode`]`(x / s)`
/// (module docs). `eyt`: the map's midpoints in Eytzinger order (`super::eytzinger`).
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn encode_f32(eyt: &[f64; 256], x: &[f32], s: f32, codes: &mut [u8]) {
    let n = x.len().min(codes.len());
    let (x, codes) = (&x[..n], &mut codes[..n]);
    // the thresholds, ⌊m · s⌋ in f32 (the product exact in f64)
    let mut th = [0.0f32; 256];
    let sv = _mm512_set1_pd(f64::from(s));
    for (m, t) in eyt.chunks_exact(8).zip(th.chunks_exact_mut(8)) {
        // SAFETY: `m` holds 8 `f64`s and `t` 8 `f32`s; unaligned accesses
        unsafe {
            let p = _mm512_mul_pd(_mm512_loadu_pd(m.as_ptr()), sv);
            let r = _mm512_cvt_roundpd_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(p);
            _mm256_storeu_ps(t.as_mut_ptr(), r);
        }
    }
    // SAFETY: `th` holds 256 `f32`s, 16 per load
    let t: [__m512; 16] =
        std::array::from_fn(|j| unsafe { _mm512_loadu_ps(th.as_ptr().add(16 * j)) });
    let one = std::hint::black_box(_mm512_set1_epi32(1));
    let (mut xs, mut cs) = (x.chunks_exact(16 * W), codes.chunks_exact_mut(16 * W));
    for (x, c) in (&mut xs).zip(&mut cs) {
        // SAFETY: `x` holds 16·W `f32`s and `c` 16·W bytes; unaligned accesses
        unsafe {
            let xv = std::array::from_fn(|w| _mm512_loadu_ps(x.as_ptr().add(16 * w)));
            let leaf = descend::<W>(&t, xv, one);
            for (w, l) in leaf.iter().enumerate() {
                let p = c.as_mut_ptr().add(16 * w).cast::<__m128i>();
                _mm_storeu_si128(p, _mm512_cvtepi32_epi8(*l));
            }
        }
    }
    // the rest, 16 at a time through a zero-padded vector (the padding's codes are dropped)
    let (x, c) = (xs.remainder(), cs.into_remainder());
    for (x, c) in x.chunks(16).zip(c.chunks_mut(16)) {
        let mut xb = [0.0f32; 16];
        xb[..x.len()].copy_from_slice(x);
        let mut cb = [0u8; 16];
        // SAFETY: `xb` holds 16 `f32`s and `cb` 16 bytes
        unsafe {
            let [leaf] = descend::<1>(&t, [_mm512_loadu_ps(xb.as_ptr())], one);
            _mm_storeu_si128(
                cb.as_mut_ptr().cast::<__m128i>(),
                _mm512_cvtepi32_epi8(leaf),
            );
        }
        c.copy_from_slice(&cb[..c.len()]);
    }
}

/// `q[c] · s` in `f32` for each code `c` of `codes` into `out` (`min(codes.len(),
/// out.len())` of them): the values of [`super::load`] for `f32`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn decode_f32(q: &[f32; 256], codes: &[u8], s: f32, out: &mut [f32]) {
    // SAFETY: `q` holds 256 `f32`s, 16 per load
    let t: [__m512; 16] =
        std::array::from_fn(|j| unsafe { _mm512_loadu_ps(q.as_ptr().add(16 * j)) });
    let sv = _mm512_set1_ps(s);
    let bit = |b: i32| _mm512_set1_epi32(1 << b);
    let (b5, b6, b7) = (bit(5), bit(6), bit(7));
    let value = |c: __m512i| {
        let a: [__m512; 8] =
            std::array::from_fn(|j| _mm512_permutex2var_ps(t[2 * j], c, t[2 * j + 1]));
        let k5 = _mm512_test_epi32_mask(c, b5);
        let b: [__m512; 4] =
            std::array::from_fn(|j| _mm512_mask_blend_ps(k5, a[2 * j], a[2 * j + 1]));
        let k6 = _mm512_test_epi32_mask(c, b6);
        let (lo, hi) = (
            _mm512_mask_blend_ps(k6, b[0], b[1]),
            _mm512_mask_blend_ps(k6, b[2], b[3]),
        );
        _mm512_mul_ps(
            _mm512_mask_blend_ps(_mm512_test_epi32_mask(c, b7), lo, hi),
            sv,
        )
    };
    let n = codes.len().min(out.len());
    let (mut cs, mut os) = (codes[..n].chunks_exact(16), out[..n].chunks_exact_mut(16));
    for (c, o) in (&mut cs).zip(&mut os) {
        // SAFETY: `c` holds 16 bytes and `o` 16 `f32`s; unaligned accesses
        unsafe {
            let c = _mm512_cvtepu8_epi32(_mm_loadu_si128(c.as_ptr().cast::<__m128i>()));
            _mm512_storeu_ps(o.as_mut_ptr(), value(c));
        }
    }
    let (c, o) = (cs.remainder(), os.into_remainder());
    if !c.is_empty() {
        let mut cb = [0u8; 16];
        cb[..c.len()].copy_from_slice(c);
        let mut ob = [0.0f32; 16];
        // SAFETY: `cb` holds 16 bytes and `ob` 16 `f32`s
        unsafe {
            let c = _mm512_cvtepu8_epi32(_mm_loadu_si128(cb.as_ptr().cast::<__m128i>()));
            _mm512_storeu_ps(ob.as_mut_ptr(), value(c));
        }
        o.copy_from_slice(&ob[..o.len()]);
    }
}
