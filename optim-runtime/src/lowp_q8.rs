//! 8-bit block-wise quantised state (`let m: q8 = ...`, `let v: uq8 = ...`), after Dettmers et
//! al. 2022, "8-bit Optimizers via Block-wise Quantization" (bitsandbytes' 8-bit optimizers).
//!
//! A buffer of `n` values is cut into blocks of [`BLOCK`] = 256 consecutive elements (the last
//! block holds the `n mod 256` rest). Each block stores one `f32` scale, the largest magnitude
//! in the block (`absmax`), and each element one byte, the index `c` of the entry of a fixed
//! 256-entry quantisation map `Q` (sorted ascending) nearest to `x / absmax`. The stored value
//! is `Q[c] · absmax`.
//!
//! **Maps** (bitsandbytes' `create_dynamic_map(signed, max_exponent_bits = 7, total_bits = 8)`,
//! the "dynamic tree" data type): for `i = 0..7`, `F_i` boundaries
//! `b_j = linspace(0.1, 1, F_i)` and the `F_i − 1` midpoints `(b_j + b_{j+1}) / 2`, scaled by
//! `10^(i − 6)`; plus `0` and `1`.
//! - [`Q8Map::Signed`] (`q8`, bitsandbytes' `"dynamic"`, its first-moment map):
//!   `F_i = 2^i + 1`, each midpoint taken with both signs: 127 positive, 127 negative, 0 and 1.
//!   Smallest magnitude `0.55e-6`; largest negative `−0.99296875` (there is no `−1`: a block
//!   whose absmax is a negative value stores it as `−0.993·absmax`, as bitsandbytes does).
//! - [`Q8Map::Unsigned`] (`uq8`, bitsandbytes' `"udynamic"`, its second-moment map):
//!   `F_i = 2^(i+1) + 1`, non-negative midpoints only: 254 of them, 0 and 1, so twice the
//!   resolution of the signed map on `[0, 1]`. Negative values are stored as 0.
//!
//! Entries are computed as bitsandbytes computes them in `float32`: `torch.linspace`'s scalar
//! formula (`start + step·j` for the first half, `end − step·(F − 1 − j)` for the second,
//! `step = (1 − 0.1) / (F − 1)`, each operation rounded to `f32`), midpoints `(a + b) / 2` and
//! the scale `f32(10^(i−6))` times the midpoint, in `f32`. (`torch.linspace` evaluates larger
//! ranges with SIMD lanes, `base + k·step`, whose last bits can differ by an ulp; so can
//! bitsandbytes' table on a given machine. The difference, ≤ 1e-7 relative, is far below the
//! map's spacing.) `tests/tools/q8_maps.py` regenerates the reference table the tests compare
//! against.
//!
//! **Quantising** a block of new values `x`: `absmax = max |x|` (`f32`, rounded to nearest from
//! the loop's type), then each `x / absmax` to the nearest map entry (a value exactly halfway
//! between two entries takes the lower one; values beyond the map's range take its end).
//! `absmax = 0` stores every element as the map's `0` with scale 0. A non-finite value (NaN,
//! ±∞) makes the whole block NaN (scale NaN): the state is lost either way, and NaN shows it.
//!
//! **Error bound** of one round trip (asserted in the tests): `|x − stored| ≤ ½·gap·absmax`,
//! where `gap` is the distance between the two map entries around `x / absmax`; relative to
//! the block's absmax at most `0.0070` (signed map, gaps up to `0.0140625`) and `0.0035`
//! (unsigned), plus `f32` rounding.
//!
//! **Over 1,000 AdamW steps** (`tests/tests/it/lowp_state.rs`, the fixed noisy quadratic of the
//! [`crate::lowp`] table, `q8` first and `uq8` second moment) against `f32` state: relative
//! final-loss gap ≤ 1.5 (measured 0.69, both at the noise floor, 0.2% of the initial loss),
//! parameters within 0.2 (measured 0.1), `v` within 0.3 of its largest value (measured 0.13).
//! Looser than `bf16_sr`: values far below their block's absmax sit where the map is coarse
//! (half a gap is 1.4% of a value at 1/20 of the absmax), so each update carries errors of a
//! few percent.
//!
//! **Bytes:** one per element each way plus `4/256` per scale access; AdamW with `f32`
//! parameters moves `16 + 4·4/256 = 16.0625` bytes per parameter
//! ([`crate::KernelPlan::bytes_per_param_exact`]).
//!
//! **How it runs** (all paths give the same codes and values, bit for bit; `tests_q8.rs` checks
//! each against the division and binary search of the first encoder). The generated loop
//! dequantises a block into a stack buffer ([`load_block`]), runs the fused update, then
//! quantises the block's new values ([`store_block`]: the absmax as an integer maximum of the
//! magnitude bits, then the codes). For `f32` on a CPU with AVX-512F ([`q8_hardware`]) the
//! codes come from a binary search over the block's 255 thresholds `⌊m · s⌋₃₂` (each midpoint
//! times the scale, exact in `f64`, rounded down to `f32`: for an `f32` `x`, `x > ⌊m · s⌋₃₂`
//! exactly when `x > m · s`), computed once per block and held in 16 registers in Eytzinger
//! order, 8 compare-and-permute steps for 16 lanes at a time, no table in memory; the values
//! from the map's 256 entries held in 16 registers, 8 permutes and a blend tree
//! (`lowp_q8_avx512.rs`). Elsewhere, and for `f64`, the encoder looks the code up in bucket
//! tables keyed by the exponent and top 7 mantissa bits of `|x / s|` (a bucket holds at most
//! one midpoint: two independent lookups, `Tables::encode`; for `f32`, division-free:
//! `encode_f32`), and the decoder is one table lookup per element. On the `lowp` bench's
//! machine (AMD EPYC, Zen 4) the AVX-512 encoder takes about 0.45× the time per element of the
//! bucket tables (whose lookups compile to two gathers per element from 72 KiB of tables per
//! map) and the decoder about 0.65× that of the gather (blocks in cache, one core); the AdamW
//! step with `q8`/`uq8` moments went from about 6.9× to 4.5× (1M parameters) and 7.1× to 3.4×
//! (10M) the `bound_8` loop that moves the same bytes with linear codes (medians of several
//! runs on a loaded machine; README, `--bench lowp`).
//!
//! **Where it differs from bitsandbytes:** bitsandbytes quantises `x · (1 / absmax)` (a
//! reciprocal) and its CUDA search sends ties alternately up or down; tensors under 4,096
//! elements stay in 32 bits there (`min_8bit_size`), here every tensor with a `q8` state is
//! quantised; bitsandbytes keeps no NaN rule; and this runs on the CPU (no CUDA twin yet).

use crate::float::Float;
use std::sync::OnceLock;

/// Elements per quantisation block (one `f32` scale each).
pub const BLOCK: usize = 256;

/// The number of blocks (scales) of a buffer of `len` elements: `ceil(len / 256)`.
pub const fn blocks(len: usize) -> usize {
    len.div_ceil(BLOCK)
}

/// Which quantisation map a buffer uses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Q8Map {
    /// The signed dynamic map (`let m: q8 = ...`; bitsandbytes' `"dynamic"`).
    Signed,
    /// The unsigned dynamic map (`let v: uq8 = ...`; bitsandbytes' `"udynamic"`); for
    /// non-negative state such as a second moment.
    Unsigned,
}

impl Q8Map {
    /// `"q8"` or `"uq8"` (the DSL's names; checkpoint metadata, plans).
    pub const fn name(self) -> &'static str {
        match self {
            Q8Map::Signed => "q8",
            Q8Map::Unsigned => "uq8",
        }
    }

    /// The 256 map entries, ascending.
    pub fn values(self) -> &'static [f32; 256] {
        &self.tables().values
    }

    fn tables(self) -> &'static Tables {
        static SIGNED: OnceLock<Tables> = OnceLock::new();
        static UNSIGNED: OnceLock<Tables> = OnceLock::new();
        match self {
            Q8Map::Signed => SIGNED.get_or_init(|| Tables::new(true)),
            Q8Map::Unsigned => UNSIGNED.get_or_init(|| Tables::new(false)),
        }
    }

    /// The code of the map entry nearest to `y` (ties to the lower entry).
    #[inline(always)]
    pub fn encode(self, y: f64) -> u8 {
        self.tables().encode(y)
    }

    /// The code of the map's `0`.
    pub fn zero_code(self) -> u8 {
        self.tables().zero
    }
}

/// Mantissa bits of `|y|` in a bucket key (128 buckets per binary octave).
const KEY_MAN: u32 = 7;
/// The smallest binary exponent with buckets of its own: `|y| < 2^-23` (below every map entry
/// but 0 and every midpoint but none) shares bucket 0.
const KEY_EXP_MIN: i64 = -23;
/// Buckets per sign: octaves `2^-23 ..= 2^0`, 128 each; the last also takes `|y| >= 2`.
const BUCKETS: usize = ((1 - KEY_EXP_MIN) as usize) << KEY_MAN;

/// A map's entries and the midpoints between neighbours (for the nearest-entry search).
struct Tables {
    values: [f32; 256],
    /// The 255 midpoints.
    #[cfg_attr(not(test), allow(dead_code))]
    mids: [f64; 255],
    zero: u8,
    /// Per sign of `y` and bucket of `|y|` (index `sign · BUCKETS + bucket`, see [`bucket`]):
    /// how many midpoints lie below every `y` of the bucket.
    start: [u32; 2 * BUCKETS],
    /// Per sign and bucket: the bucket's one midpoint (`mids[start]`; a bucket holds at most
    /// one, asserted by the tests), `+∞` if it holds none. `y`'s code is `start`, plus one if
    /// this midpoint is below `y`.
    next: [f64; 2 * BUCKETS],
    /// The midpoints in Eytzinger order (the AVX-512 encoder's search tree, see
    /// `lowp_q8_avx512.rs`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    eyt: [f64; 256],
}

/// The bucket of `|y|` (for `y` of either sign): its binary exponent and top [`KEY_MAN`]
/// mantissa bits, clamped to `0..BUCKETS` (all `|y| < 2^-23` in bucket 0, all `|y| >= 2` in
/// the last). Each bucket is an interval of `|y|`, monotone in `|y|`.
#[inline(always)]
fn bucket(y: f64) -> usize {
    let mag = (y.to_bits() & !(1u64 << 63)) >> (52 - KEY_MAN);
    let k = mag as i64 - ((1023 + KEY_EXP_MIN) << KEY_MAN);
    k.clamp(0, BUCKETS as i64 - 1) as usize
}

/// The smallest `|y|` of bucket `k` for `0 < k < BUCKETS`: `2^e · (1 + j / 128)` (8
/// significant bits).
#[inline(always)]
fn edge(k: i64) -> f64 {
    f64::from_bits(((k + ((1023 + KEY_EXP_MIN) << KEY_MAN)) as u64) << (52 - KEY_MAN))
}

/// The interval `[lo, hi)` of `|y|` that bucket `k` holds.
fn bucket_range(k: usize) -> (f64, f64) {
    let edge = |k: usize| edge(k as i64);
    let lo = if k == 0 { 0.0 } else { edge(k) };
    let hi = if k + 1 == BUCKETS {
        f64::INFINITY
    } else {
        edge(k + 1)
    };
    (lo, hi)
}

impl Tables {
    /// bitsandbytes' `create_dynamic_map(signed, 7, 8)`, in `f32` as it computes it.
    fn new(signed: bool) -> Tables {
        let mut data: Vec<f32> = Vec::with_capacity(256);
        for i in 0..7i32 {
            let f = if signed {
                (1 << i) + 1
            } else {
                (1 << (i + 1)) + 1
            };
            let b = linspace_f32(0.1, 1.0, f);
            let scale = 10f64.powi(i - 6) as f32;
            for w in b.windows(2) {
                let mean = (w[0] + w[1]) / 2.0;
                data.push(scale * mean);
                if signed {
                    data.push(-(scale * mean));
                }
            }
        }
        data.push(0.0);
        data.push(1.0);
        data.sort_by(f32::total_cmp);
        let mut values = [0.0f32; 256];
        values.copy_from_slice(&data);
        let mut mids = [0.0f64; 255];
        for (m, w) in mids.iter_mut().zip(values.windows(2)) {
            *m = (f64::from(w[0]) + f64::from(w[1])) / 2.0;
        }
        let zero = values.iter().position(|&v| v == 0.0).unwrap_or(0) as u8;
        let mut start = [0u32; 2 * BUCKETS];
        let mut next = [f64::INFINITY; 2 * BUCKETS];
        let below = |t: &dyn Fn(f64) -> bool| mids.iter().filter(|&&m| t(m)).count() as u32;
        for k in 0..BUCKETS {
            let (lo, hi) = bucket_range(k);
            // y >= 0 with |y| in [lo, hi): the midpoints below lo are below y
            start[k] = below(&|m| m < lo);
            // y <= 0 with |y| in [lo, hi), so y in (-hi, -lo]: those at or below -hi are
            start[BUCKETS + k] = below(&|m| m <= -hi);
            for i in [k, BUCKETS + k] {
                if let Some(&m) = mids.get(start[i] as usize) {
                    next[i] = m;
                }
            }
        }
        Tables {
            values,
            mids,
            zero,
            start,
            next,
            eyt: eytzinger(&mids),
        }
    }

    /// The most midpoints any bucket holds, per sign (`encode` needs at most one).
    #[cfg(test)]
    fn most_candidates(&self) -> usize {
        let mids = &self.mids;
        (0..BUCKETS)
            .flat_map(|k| {
                let (lo, hi) = bucket_range(k);
                [
                    mids.iter().filter(|&&m| lo <= m && m < hi).count(),
                    mids.iter().filter(|&&m| -hi < m && m <= -lo).count(),
                ]
            })
            .max()
            .unwrap_or(0)
    }

    /// The number of midpoints below `y`: the nearest entry's index (ties to the lower one).
    /// The midpoints below `y`'s bucket ([`Tables::start`]), plus one if the bucket's own
    /// midpoint ([`Tables::next`]) is below `y`: two independent table lookups, no
    /// data-dependent branch or search. `y` is not NaN (the callers quantise finite values).
    #[inline(always)]
    fn encode(&self, y: f64) -> u8 {
        let i = usize::from(y.is_sign_negative()) * BUCKETS + bucket(y);
        (self.start[i] + u32::from(self.next[i] < y)) as u8
    }

    /// [`Tables::encode`] by binary search over the midpoints (the encoder before the bucket
    /// tables; the tests' reference).
    #[cfg(test)]
    fn encode_search(&self, y: f64) -> u8 {
        // branch-free binary search over the 255 midpoints (8 halvings)
        let mut lo = 0usize;
        let mut half = 128usize;
        while half > 0 {
            let probe = lo + half - 1;
            if probe < 255 && self.mids[probe] < y {
                lo += half;
            }
            half /= 2;
        }
        lo.min(255) as u8
    }
}

/// The 255 midpoints as a binary search tree laid out level by level (Eytzinger order),
/// 1-based: `e[1]` is the root, the median `mids[127]`, and node `i`'s children are `2i` and
/// `2i + 1`, so node `i` at depth `d` (`2^d ≤ i < 2^(d+1)`) is
/// `mids[(2(i − 2^d) + 1) · 2^(7−d) − 1]`. `e[0]`, never visited, repeats the root.
fn eytzinger(mids: &[f64; 255]) -> [f64; 256] {
    let mut e = [0.0f64; 256];
    for (i, slot) in e.iter_mut().enumerate().skip(1) {
        let d = usize::BITS - 1 - i.leading_zeros();
        let o = i - (1 << d);
        *slot = mids[(2 * o + 1) * (1 << (7 - d)) - 1];
    }
    e[0] = e[1];
    e
}

/// `torch.linspace(start, end, steps)` in `f32` (its scalar formula).
fn linspace_f32(start: f32, end: f32, steps: i32) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|j| {
            if j < half {
                start + step * j as f32
            } else {
                end - step * (steps - j - 1) as f32
            }
        })
        .collect()
}

/// One 8-bit quantised state buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Buf {
    /// The map the codes index.
    pub map: Q8Map,
    /// One code per element (empty when not allocated).
    pub codes: Vec<u8>,
    /// One scale (`absmax`) per block of [`BLOCK`] elements: `blocks(codes.len())` of them.
    pub scales: Vec<f32>,
}

impl Q8Buf {
    /// A slot under `map` that holds nothing (not allocated).
    pub fn empty(map: Q8Map) -> Self {
        Q8Buf {
            map,
            codes: Vec::new(),
            scales: Vec::new(),
        }
    }

    /// `xs` quantised block by block.
    pub fn from_values<E: Float>(map: Q8Map, xs: &[E]) -> Self {
        let mut codes = vec![0u8; xs.len()];
        let mut scales = vec![0.0f32; blocks(xs.len())];
        for ((x, c), s) in xs
            .chunks(BLOCK)
            .zip(codes.chunks_mut(BLOCK))
            .zip(&mut scales)
        {
            store_block(map, x, c, s);
        }
        Q8Buf { map, codes, scales }
    }

    /// `len` copies of `x`, quantised.
    pub fn filled(map: Q8Map, len: usize, x: f64) -> Self {
        let block: Vec<f64> = vec![x; len.min(BLOCK)];
        let mut c = vec![0u8; block.len()];
        let mut s = 0.0f32;
        store_block(map, &block, &mut c, &mut s);
        let code = c.first().copied().unwrap_or(0);
        Q8Buf {
            map,
            codes: vec![code; len],
            scales: vec![s; blocks(len)],
        }
    }

    /// The stored values (`Q[code] · absmax`).
    pub fn to_values<E: Float>(&self) -> Vec<E> {
        let q = self.map.values();
        self.codes
            .chunks(BLOCK)
            .zip(&self.scales)
            .flat_map(|(c, &s)| c.iter().map(move |&c| load::<E>(q, c, s)))
            .collect()
    }

    /// Whether the codes and scales fit each other (`scales.len() == blocks(codes.len())`).
    pub fn is_consistent(&self) -> bool {
        self.scales.len() == blocks(self.codes.len())
    }
}

/// A quantised stream as a generated loop sees it: one chunk's codes and its blocks' scales
/// (the executor cuts tensors at multiples of [`BLOCK`]).
pub struct Q8Mut<'a> {
    /// The map.
    pub map: Q8Map,
    /// The chunk's codes.
    pub codes: &'a mut [u8],
    /// The chunk's block scales (`blocks(codes.len())`).
    pub scales: &'a mut [f32],
}

/// The value of code `c` under scale `s`, in `E` (the product in `f32` for `f32`, as
/// bitsandbytes computes it; in `f64` for `f64`).
#[inline(always)]
pub fn load<E: Float>(q: &[f32; 256], c: u8, s: f32) -> E {
    let v = q[usize::from(c)];
    if E::BYTES == 4 {
        E::of_f64(f64::from(v * s))
    } else {
        E::of_f64(f64::from(v) * f64::from(s))
    }
}

/// Whether this CPU runs the AVX-512 paths of [`store_block`] and [`load_block`] for `f32`:
/// x86-64 with AVX-512F, detected at run time (cached by std).
#[inline(always)]
pub fn q8_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantises one block `x` (at most [`BLOCK`] values) into `codes` and its scale `scale`: the
/// block's absmax, then each value's nearest code (module docs). `f32` blocks are encoded
/// 16 lanes at a time by AVX-512F where the CPU has it ([`q8_hardware`]; a binary search over
/// the block's thresholds held in registers, `lowp_q8_avx512.rs`), elsewhere by the bucket
/// tables; the codes are the same (`tests_q8.rs`).
#[inline(always)]
pub fn store_block<E: Float>(map: Q8Map, x: &[E], codes: &mut [u8], scale: &mut f32) {
    store_block_on(true, map, x, codes, scale);
}

/// [`store_block`], with the AVX-512 path only if `hw` (and [`q8_hardware`]).
#[inline(always)]
pub(crate) fn store_block_on<E: Float>(
    hw: bool,
    map: Q8Map,
    x: &[E],
    codes: &mut [u8],
    scale: &mut f32,
) {
    let t = map.tables();
    let amax = match E::f32s(x) {
        // the largest |x| as the largest magnitude bit pattern (which orders non-negative
        // floats, above them infinity and NaN): an integer maximum, which vectorises
        Some(x) => f64::from(f32::from_bits(
            x.iter()
                .fold(0u32, |a, v| a.max(v.to_bits() & !(1u32 << 31))),
        )),
        None => f64::from_bits(
            x.iter()
                .fold(0u64, |a, v| a.max(v.as_f64().to_bits() & !(1u64 << 63))),
        ),
    };
    if !amax.is_finite() {
        *scale = f32::NAN;
        codes.fill(t.zero);
        return;
    }
    let s = amax as f32;
    *scale = s;
    if s == 0.0 {
        codes.fill(t.zero);
        return;
    }
    if let Some(x32) = E::f32s(x) {
        #[cfg(target_arch = "x86_64")]
        if hw && q8_hardware() {
            // SAFETY: the CPU has AVX-512F (checked on the line above)
            unsafe { avx512::encode_f32(&t.eyt, x32, s, codes) };
            return;
        }
        let _ = hw;
        return encode_f32(t, x32, f64::from(s), codes);
    }
    let inv = f64::from(s);
    // the quotients first (a loop of divisions, which vectorises), then the table lookups
    let mut ys = [0.0f64; BLOCK];
    for (c, x) in codes.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
        let ys = &mut ys[..x.len()];
        for (y, v) in ys.iter_mut().zip(x) {
            *y = v.as_f64() / inv;
        }
        for (c, &y) in c.iter_mut().zip(ys.iter()) {
            *c = t.encode(y);
        }
    }
}

/// [`Tables::encode`]`(x / s)` for each `x` of a block of `f32` values (as `E`), without the
/// division: with `x`, `s` in `f32` and the midpoints and bucket edges of at most 29
/// significant bits (asserted by the tests), each product `m · s` is exact in `f64`, and
/// `m < x / s` rounded ⇔ `m < x / s` ⇔ `m · s < x` (`x / s` is either exactly `m` or farther
/// from it than half an `f64` ulp). So the bucket is estimated from `|x| · (1 / s)` (off by at
/// most a few ulps, so by at most one bucket, at an edge) and corrected by comparing `|x|`
/// with its edges times `s`, and the bucket's midpoint is compared as `m · s < x`. A first,
/// vectorised loop computes the table indices; a second does the lookups.
#[inline(always)]
fn encode_f32(t: &Tables, x: &[f32], s: f64, codes: &mut [u8]) {
    let inv = 1.0 / s;
    let mut idx = [0u32; BLOCK];
    let last = BUCKETS as i64 - 1;
    for (c, x) in codes.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
        let idx = &mut idx[..x.len()];
        for (i, v) in idx.iter_mut().zip(x) {
            let a = f64::from(*v).abs();
            let k = bucket(a * inv) as i64;
            let (lo, hi) = (edge(k), edge(k + 1));
            let lo = if k == 0 { 0.0 } else { lo };
            let hi = if k == last { f64::INFINITY } else { hi };
            let k = k - i64::from(a < lo * s) + i64::from(a >= hi * s);
            *i = u32::from(v.is_sign_negative()) * BUCKETS as u32 + k as u32;
        }
        for ((c, v), &i) in c.iter_mut().zip(x).zip(idx.iter()) {
            let i = (i as usize).min(2 * BUCKETS - 1);
            *c = (t.start[i] + u32::from(t.next[i] * s < f64::from(*v))) as u8;
        }
    }
}

/// Dequantises one block's `codes` under scale `s` into `out` (as [`load`] each; `out` and
/// `codes` of the same length, at most [`BLOCK`] in the generated loops). `f32` blocks are
/// decoded 16 at a time by AVX-512F register permutes where the CPU has it ([`q8_hardware`]),
/// the same values bit for bit.
#[inline(always)]
pub fn load_block<E: Float>(q: &[f32; 256], codes: &[u8], s: f32, out: &mut [E]) {
    load_block_on(true, q, codes, s, out);
}

/// [`load_block`], with the AVX-512 path only if `hw` (and [`q8_hardware`]).
#[inline(always)]
pub(crate) fn load_block_on<E: Float>(
    hw: bool,
    q: &[f32; 256],
    codes: &[u8],
    s: f32,
    out: &mut [E],
) {
    #[cfg(target_arch = "x86_64")]
    if hw && q8_hardware() {
        if let Some(o) = E::f32s_mut(out) {
            // SAFETY: the CPU has AVX-512F (checked above)
            unsafe { avx512::decode_f32(q, codes, s, o) };
            return;
        }
    }
    let _ = hw;
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = load::<E>(q, c, s);
    }
}

// The AVX-512 intrinsics and target features are stable since Rust 1.89 (the workspace's
// `rust-version`; the runtime's dispatch in `kernel.rs` enables `avx512f` too).
#[cfg(target_arch = "x86_64")]
#[path = "lowp_q8_avx512.rs"]
mod avx512;

#[cfg(test)]
#[path = "tests_q8.rs"]
mod tests;
