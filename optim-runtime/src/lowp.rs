//! Low-precision storage of optimizer state: `bf16` and `f16` buffers with `f32`/`f64` math, and
//! 8-bit block-quantised buffers ([`q8`]: `let m: q8 = ...`, `let v: uq8 = ...`).
//!
//! A rule declares the storage of a state with a type on its `let`
//! (`let m: bf16 = momentum(grad, beta1);`, see the `optimizer!` docs). The generated loop loads
//! each element of such a buffer, widens it exactly to the parameter's type `E`, computes in `E`
//! as usual, and stores the new value rounded to the buffer's type:
//!
//! - `bf16`, `f16`: round to nearest, ties to even (IEEE 754 `roundTiesToEven`, as PyTorch's
//!   `tensor.to(torch.bfloat16)`). Values beyond the largest finite value round to infinity as
//!   in IEEE 754; NaN stays NaN.
//! - `bf16_sr`, `f16_sr`: stochastic rounding. A value `x` between the neighbouring
//!   representable values `lo < |x| < hi` (same sign) is stored as `hi` with probability
//!   `(|x| - lo) / (hi - lo)` and as `lo` otherwise, so the stored value is unbiased:
//!   `E[stored] = x`, up to the `2^-32` resolution of the uniform draw (exactly for `f32` values
//!   into `bf16`, whose 16 dropped bits the draw's top 16 bits are compared with). Exact values,
//!   NaN, infinities and values that round to infinity are stored as round-to-nearest stores
//!   them.
//!
//! **Randomness.** Stochastic rounding draws one 32-bit number per stored element from a
//! counter-based generator (no generator state, nothing to checkpoint): a 64-bit key made of
//! the parameter's name (FNV-1a) and its own step count ([`param_key`], splitmix64's mixer,
//! once per parameter and step), then of the state's slot ([`stream_key`], once per loop
//! call), and per element MurmurHash3's 32-bit hash ([`murmur3_32`], Austin Appleby's
//! `MurmurHash3_x86_32` from SMHasher) of the element's index in the parameter, seeded with the
//! key ([`counter_bits`]). The element hash uses 32-bit multiplies, shifts and rotates only, so
//! the loops vectorise it in 32-bit lanes (AVX2 and AVX-512F have no 64-bit multiply). The same
//! parameter, step and element always draw the same number, so results do not depend on the
//! thread count, on how the executor cuts a tensor into chunks, or on the other parameters of
//! the step, and a run resumed from a checkpoint (which saves each parameter's step) is
//! bit-identical to one that never stopped.
//!
//! The stream changed once: up to issue 16's rework, each element drew splitmix64's 64-bit
//! output of the same key. Stochastically rounded results differ from that version's (in
//! distribution they are the same), so a run checkpointed by it and resumed by this one is not
//! bit-identical to one that never stopped; checkpoints themselves did not change.
//!
//! **Speed.** With `f32` parameters every conversion is branch-free integer code that the loops
//! vectorise (`lowp_conv.rs`), except that `f16` streams are widened and rounded to nearest per
//! block of [`q8::BLOCK`] elements by F16C where the CPU has it ([`load_f16_block`],
//! [`store_f16_block`]; the same bits either way). `f64` parameters convert through `half` and
//! the `f64` formula, element by element.
//!
//! Bytes moved: a `bf16`/`f16` buffer moves 2 bytes per element each way instead of 4 (`f32`)
//! or 8 (`f64`); AdamW with both moments in `bf16` and `f32` parameters moves
//! `4 + 4 + 2·2 (read) + 4 + 2·2 (write) = 20` bytes per parameter instead of 28.
//!
//! The parameter and its gradient may be 16-bit too (`bf16`/`f16` storage, e.g. candle `Var`s):
//! [`crate::narrow`] runs the same loops on their bits (through their 16-bit entry points), so
//! AdamW with `f32` moments moves `2 + 2 + 8 (read) + 2 + 8 (write) = 22` bytes per parameter,
//! and with `bf16` moments `2 + 2 + 4 + 2 + 4 = 14`.
//!
//! Checkpoints keep the stored type (safetensors `BF16`/`F16` tensors, see
//! [`crate::checkpoint`]).
//!
//! **Accuracy** (asserted in `tests/tests/it/lowp_state.rs`): AdamW (lr `1e-2`, betas 0.9/0.999),
//! 1,000 steps on a fixed noisy quadratic of 4,096 parameters, against the same rule with `f32`
//! state; bounds on the relative final-loss gap, the largest parameter gap (parameters are
//! O(1)), and the largest moment gap relative to the moment's largest magnitude:
//!
//! | moments | loss | param | `m` | `v` |
//! |---|---|---|---|---|
//! | `bf16` | 5e-2 | 3e-2 | 0.4 | 2 (does not track) |
//! | `bf16_sr` | 2e-3 | 1e-2 | 0.1 | 0.4 |
//! | `f16` (`m`), `f16_sr` (`v`) | 1e-4 | 2e-3 | 0.015 | 0.05 |
//! | `q8` (`m`), `uq8` (`v`), see [`q8`] | 1.5 | 0.2 | 1 | 0.3 |
//!
//! Round-to-nearest `bf16` loses every EMA increment under half an ulp: with `beta2 = 0.999`
//! the second moment's increment `(1 - beta2)(g² - v)` is about `2^-10 v`, under `bf16`'s
//! `2^-9`, so `v` freezes. Use `bf16_sr` (or `f16`, whose range suits moments of gradients
//! of order `1e-2` and above) for second moments.

use crate::float::Float;

#[path = "lowp_q8.rs"]
pub mod q8;

#[path = "lowp_conv.rs"]
mod conv;

/// The 16 raw bits of one stored element (a `bf16` or an `f16`, per its buffer's
/// [`StateDtype`]).
pub type Bits = u16;

/// The storage type of a low-precision state buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateDtype {
    /// bfloat16: 8 exponent bits, 7 stored mantissa bits (the range of `f32`, about 2–3
    /// significant decimal digits; relative rounding error at most `2^-9`).
    Bf16,
    /// IEEE 754 binary16: 5 exponent bits, 10 stored mantissa bits (largest finite value
    /// 65504, smallest normal `2^-14`, subnormals down to `2^-24`; relative rounding error at
    /// most `2^-12` in the normal range).
    F16,
}

impl StateDtype {
    /// `"bf16"` or `"f16"` (checkpoint metadata, plans).
    pub const fn name(self) -> &'static str {
        match self {
            StateDtype::Bf16 => "bf16",
            StateDtype::F16 => "f16",
        }
    }

    /// Parses [`StateDtype::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bf16" => Some(StateDtype::Bf16),
            "f16" => Some(StateDtype::F16),
            _ => None,
        }
    }

    /// Bytes per stored element (2).
    pub const BYTES: usize = 2;

    /// The exact value of stored bits `b`.
    pub fn to_f64(self, b: Bits) -> f64 {
        match self {
            StateDtype::Bf16 => half::bf16::from_bits(b).to_f64(),
            StateDtype::F16 => half::f16::from_bits(b).to_f64(),
        }
    }

    /// `x` rounded to nearest (ties to even), once (no double rounding through `f32`).
    pub fn round_f64(self, x: f64) -> Bits {
        match self {
            StateDtype::Bf16 => from_f64::<half::bf16>(x).to_bits(),
            StateDtype::F16 => from_f64::<half::f16>(x).to_bits(),
        }
    }
}

/// One low-precision state buffer: its type and its elements' bits (empty when not allocated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowBuf {
    /// The storage type.
    pub dtype: StateDtype,
    /// One element per parameter element.
    pub bits: Vec<Bits>,
}

impl LowBuf {
    /// A slot of type `dtype` that holds nothing (not allocated).
    pub fn empty(dtype: StateDtype) -> Self {
        LowBuf {
            dtype,
            bits: Vec::new(),
        }
    }

    /// `xs` rounded to nearest (ties to even) into a buffer of type `dtype`.
    pub fn from_values<E: Float>(dtype: StateDtype, xs: &[E]) -> Self {
        LowBuf {
            dtype,
            bits: xs.iter().map(|x| dtype.round_f64(x.as_f64())).collect(),
        }
    }

    /// The stored values, widened exactly to `E`.
    pub fn to_values<E: Float>(&self) -> Vec<E> {
        self.bits
            .iter()
            .map(|&b| E::of_f64(self.dtype.to_f64(b)))
            .collect()
    }
}

/// A 16-bit float type of the `half` crate.
trait Half: Copy {
    fn from_f32(x: f32) -> Self;
    fn to_f64(self) -> f64;
    fn from_bits(b: Bits) -> Self;
    fn to_bits(self) -> Bits;
    /// `half`'s `from_f32(x).to_bits()`, branch-free (so that loops vectorise).
    fn f32_to_bits(x: f32) -> Bits;
    /// `half`'s `from_bits(b).to_f32()`, branch-free.
    fn bits_to_f32(b: Bits) -> f32;
}

macro_rules! half_impl {
    ($t:ty, $to:ident, $of:ident) => {
        impl Half for $t {
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            #[inline(always)]
            fn from_bits(b: Bits) -> Self {
                <$t>::from_bits(b)
            }
            #[inline(always)]
            fn to_bits(self) -> Bits {
                <$t>::to_bits(self)
            }
            #[inline(always)]
            fn f32_to_bits(x: f32) -> Bits {
                conv::$to(x)
            }
            #[inline(always)]
            fn bits_to_f32(b: Bits) -> f32 {
                conv::$of(b)
            }
        }
    };
}
half_impl!(half::bf16, f32_to_bf16, bf16_to_f32);
half_impl!(half::f16, f32_to_f16, f16_to_f32);

/// `x` rounded to `f32` with round-to-odd: exact values stay, others become the neighbour
/// toward zero with its last bit set. Rounding that to a format at least 2 bits narrower (bf16:
/// 8 significant bits, f16: 11, f32: 24) to nearest gives exactly the nearest value of `x`
/// itself, where rounding `x` to nearest `f32` first could round twice (`1 + 2^-8 + 2^-40`
/// would become the bf16 tie `1 + 2^-8` and then 1). (`half`'s `bf16::from_f64` goes through
/// `f32` that way.)
#[inline(always)]
fn f32_round_to_odd(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) == x || !f.is_finite() {
        // exact, NaN, infinite, or beyond `f32::MAX` (infinity in bf16 and f16 too)
        return f;
    }
    let b = f.to_bits();
    let toward_zero = if f64::from(f).abs() > x.abs() {
        b - 1
    } else {
        b
    };
    f32::from_bits(toward_zero | 1)
}

/// `x` rounded to nearest (ties to even) into `H`, once.
#[inline(always)]
fn from_f64<H: Half>(x: f64) -> H {
    H::from_f32(f32_round_to_odd(x))
}

/// Stored bits `b` widened (exactly) to `E` (`f64` through `half`; `f32` by [`Half::bits_to_f32`]).
#[inline(always)]
fn load<H: Half, E: Float>(b: Bits) -> E {
    if E::BYTES == 4 {
        E::of_f64(f64::from(H::bits_to_f32(b)))
    } else {
        E::of_f64(H::from_bits(b).to_f64())
    }
}

/// `x` rounded to nearest (ties to even), from `E` directly.
#[inline(always)]
fn store<H: Half, E: Float>(x: E) -> Bits {
    if E::BYTES == 4 {
        // exact round trip through f64 for f32
        H::f32_to_bits(x.as_f64() as f32)
    } else {
        from_f64::<H>(x.as_f64()).to_bits()
    }
}

/// `x` rounded stochastically with the 32 random bits `r` (see the module docs): up with
/// probability `(|x| - lo) / (hi - lo)` quantised to multiples of `2^-32`.
#[inline(always)]
fn store_sr<H: Half>(x: f64, r: u32) -> Bits {
    let c = from_f64::<H>(x);
    let cf = c.to_f64();
    // exact, NaN, infinite, or rounded to infinity: as round-to-nearest
    if cf == x || !cf.is_finite() {
        return c.to_bits();
    }
    let bits = c.to_bits();
    let sign = bits & 0x8000;
    let mag = bits & 0x7fff;
    let ax = x.abs();
    // `mag >= 1` when the nearest value is larger in magnitude than a finite `x`
    let (lo, hi) = if cf.abs() > ax {
        (mag - 1, mag)
    } else {
        (mag, mag + 1)
    };
    let lo_f = H::from_bits(lo).to_f64();
    // infinity when `lo` is the largest finite value: then `lo` is always chosen
    let hi_f = H::from_bits(hi).to_f64();
    // both differences are exact in f64 (Sterbenz; adjacent 16-bit floats)
    // exact: a 32-bit integer times a power of two
    let u = f64::from(r) * (1.0 / (1u64 << 32) as f64);
    if u * (hi_f - lo_f) < ax - lo_f {
        sign | hi
    } else {
        sign | lo
    }
}

/// A `bf16` element, widened exactly to `E`.
#[inline(always)]
pub fn load_bf16<E: Float>(b: Bits) -> E {
    load::<half::bf16, E>(b)
}

/// An `f16` element, widened exactly to `E`.
#[inline(always)]
pub fn load_f16<E: Float>(b: Bits) -> E {
    load::<half::f16, E>(b)
}

/// `x` as `bf16`, rounded to nearest (ties to even).
#[inline(always)]
pub fn store_bf16<E: Float>(x: E) -> Bits {
    store::<half::bf16, E>(x)
}

/// `x` as `f16`, rounded to nearest (ties to even).
#[inline(always)]
pub fn store_f16<E: Float>(x: E) -> Bits {
    store::<half::f16, E>(x)
}

/// Whether this CPU converts `f16` in hardware: x86-64 with F16C and AVX, detected at run time
/// (cached by std). Then [`load_f16_block`] and [`store_f16_block`] convert `f32` with
/// `vcvtph2ps` / `vcvtps2ph`.
#[inline(always)]
pub fn f16_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A block of `f16` elements widened exactly to `E` into `out` (`min(bits.len(), out.len())`
/// elements): the values of [`load_f16`], for `f32` 8 at a time by F16C where the CPU has it
/// ([`f16_hardware`]). The generated loops stage each `f16` stream through a block of the
/// stack per [`q8::BLOCK`] elements (`vcvtph2ps` cannot be reached from the vectorised
/// element loop itself, which is generic over `E` and compiled per SIMD level).
#[inline(always)]
pub fn load_f16_block<E: Float>(bits: &[Bits], out: &mut [E]) {
    load_f16_block_on(true, bits, out);
}

/// [`load_f16_block`], with the hardware path only if `hw` (and [`f16_hardware`]).
#[inline(always)]
pub(crate) fn load_f16_block_on<E: Float>(hw: bool, bits: &[Bits], out: &mut [E]) {
    #[cfg(target_arch = "x86_64")]
    if hw && f16_hardware() {
        if let Some(o) = E::f32s_mut(out) {
            // SAFETY: the CPU has F16C and AVX (checked on the line above)
            unsafe { conv::f16_to_f32_f16c(bits, o) };
            return;
        }
    }
    let _ = hw;
    for (o, &b) in out.iter_mut().zip(bits) {
        *o = load_f16::<E>(b);
    }
}

/// `xs` rounded to nearest (ties to even) into a block of `f16` bits `out`
/// (`min(xs.len(), out.len())` elements): the bits of [`store_f16`], for `f32` 8 at a time by
/// F16C where the CPU has it ([`f16_hardware`]; see [`load_f16_block`]).
#[inline(always)]
pub fn store_f16_block<E: Float>(xs: &[E], out: &mut [Bits]) {
    store_f16_block_on(true, xs, out);
}

/// [`store_f16_block`], with the hardware path only if `hw` (and [`f16_hardware`]).
#[inline(always)]
pub(crate) fn store_f16_block_on<E: Float>(hw: bool, xs: &[E], out: &mut [Bits]) {
    #[cfg(target_arch = "x86_64")]
    if hw && f16_hardware() {
        if let Some(x) = E::f32s(xs) {
            // SAFETY: the CPU has F16C and AVX (checked on the line above)
            unsafe { conv::f32_to_f16_f16c(x, out) };
            return;
        }
    }
    let _ = hw;
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = store_f16::<E>(x);
    }
}

/// A block of 16-bit elements widened exactly to `E` into `out` (`min(bits.len(), out.len())`
/// elements): `f16` when `F16` ([`load_f16_block`]), else `bf16` ([`load_bf16`] per element).
/// The generated loops over a 16-bit parameter ([`crate::narrow`]) stage its and its
/// gradient's blocks through this, so that one printed loop serves both storage types.
#[inline(always)]
pub fn load_half_block<E: Float, const F16: bool>(bits: &[Bits], out: &mut [E]) {
    if F16 {
        load_f16_block::<E>(bits, out);
    } else {
        for (o, &b) in out.iter_mut().zip(bits) {
            *o = load_bf16::<E>(b);
        }
    }
}

/// `xs` rounded to nearest (ties to even) into a block of 16-bit bits `out`
/// (`min(xs.len(), out.len())` elements): `f16` when `F16` ([`store_f16_block`]), else `bf16`
/// ([`store_bf16`] per element); see [`load_half_block`].
#[inline(always)]
pub fn store_half_block<E: Float, const F16: bool>(xs: &[E], out: &mut [Bits]) {
    if F16 {
        store_f16_block::<E>(xs, out);
    } else {
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = store_bf16::<E>(x);
        }
    }
}

/// `x` as `bf16`, rounded stochastically with the random bits `r` (from [`counter_bits`]).
#[inline(always)]
pub fn store_bf16_sr<E: Float>(x: E, r: u32) -> Bits {
    if E::BYTES == 4 {
        // the same choice, in integers (branch-free)
        conv::f32_to_bf16_sr(x.as_f64() as f32, r)
    } else {
        store_sr::<half::bf16>(x.as_f64(), r)
    }
}

/// `x` as `f16`, rounded stochastically with the random bits `r` (from [`counter_bits`]).
#[inline(always)]
pub fn store_f16_sr<E: Float>(x: E, r: u32) -> Bits {
    if E::BYTES == 4 {
        // the same choice, in integers (branch-free)
        conv::f32_to_f16_sr(x.as_f64() as f32, r)
    } else {
        store_sr::<half::f16>(x.as_f64(), r)
    }
}

/// The [splitmix64](https://prng.di.unimi.it/splitmix64.c) output function (a bijective 64-bit
/// mixer; keys of [`param_key`] and [`stream_key`]).
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The key of one parameter's step: FNV-1a of its name mixed with its step count (the
/// parameter's own count, saved in checkpoints).
pub fn param_key(name: &str, step: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h ^ mix64(step.wrapping_add(GOLDEN)))
}

/// The key of state slot `slot` under a parameter's step key, so that two states of one element
/// draw independent numbers.
#[inline(always)]
pub fn stream_key(key: u64, slot: usize) -> u64 {
    mix64(key ^ (slot as u64).wrapping_add(1).wrapping_mul(GOLDEN))
}

/// MurmurHash3's 32-bit hash (`MurmurHash3_x86_32` of Austin Appleby's SMHasher,
/// <https://github.com/aappleby/smhasher/blob/master/src/MurmurHash3.cpp>) of the 4 bytes
/// `block.to_le_bytes()` with seed `seed`: one block round (multiply, rotate, multiply, mix into
/// the seed), the length (4), and the `fmix32` finaliser. 32-bit multiplies, shifts and
/// rotates only.
#[inline(always)]
pub fn murmur3_32(block: u32, seed: u32) -> u32 {
    let k = block
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    let mut h = (seed ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64);
    // the length in bytes, then fmix32
    h ^= 4;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The 32 random bits of element `index` (its index in the whole parameter) under a stream key
/// (from [`stream_key`]): [`murmur3_32`] of the index's low 32 bits, seeded with the key's low
/// 32 bits. Past `2^32` elements the index's high half `h` enters the seed as
/// `seed ^ h·(key_hi | 1)` (`key_hi`: the key's high 32 bits), so that elements `2^32` apart
/// draw different numbers; below it the seed is the key's low half.
#[inline(always)]
pub fn counter_bits(key: u64, index: u64) -> u32 {
    let hi = (index >> 32) as u32;
    let seed = (key as u32) ^ hi.wrapping_mul((key >> 32) as u32 | 1);
    murmur3_32(index as u32, seed)
}

/// splitmix64's `index`-th output from state `key` (the per-element draw before issue 16; the
/// tests' source of pseudo-random inputs).
#[cfg(test)]
pub(crate) fn splitmix64_at(key: u64, index: u64) -> u64 {
    mix64(key.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)))
}

#[cfg(test)]
#[path = "tests_lowp.rs"]
mod tests;

#[cfg(test)]
#[path = "tests_lowp_exact.rs"]
mod tests_exact;

// ---------------------------------------------------------------------------------------------
// 16-bit parameters and gradients (`crate::narrow`).

/// A 16-bit parameter and its gradient as the executor sees them: the raw bits (one chunk of
/// the parameter, once cut).
#[derive(Debug)]
pub(crate) struct Narrow<'a> {
    pub dtype: StateDtype,
    pub param: &'a mut [Bits],
    pub grad: &'a [Bits],
}

impl<'a> Narrow<'a> {
    /// The same parameter, borrowed for a shorter time.
    pub(crate) fn reborrow(&mut self) -> Narrow<'_> {
        Narrow {
            dtype: self.dtype,
            param: &mut *self.param,
            grad: self.grad,
        }
    }

    /// The first `n` elements and the rest (the gradient cut at the same place, or where it
    /// ends).
    pub(crate) fn split_at(self, n: usize) -> (Narrow<'a>, Narrow<'a>) {
        let (p0, p1) = self.param.split_at_mut(n.min(self.param.len()));
        let (g0, g1) = self.grad.split_at(n.min(self.grad.len()));
        let d = self.dtype;
        (
            Narrow {
                dtype: d,
                param: p0,
                grad: g0,
            },
            Narrow {
                dtype: d,
                param: p1,
                grad: g1,
            },
        )
    }
}

/// Whether every element of the 16-bit `bits` is finite (its exponent field is not all ones).
pub(crate) fn all_finite_bits(dtype: StateDtype, bits: &[Bits]) -> bool {
    let exp: Bits = match dtype {
        StateDtype::Bf16 => 0x7f80,
        StateDtype::F16 => 0x7c00,
    };
    bits.iter().fold(true, |ok, &b| ok & (b & exp != exp))
}
