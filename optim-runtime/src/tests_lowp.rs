//! Conversions against hand-computed bit patterns; stochastic rounding's unbiasedness and
//! determinism.

use super::*;

/// bf16 of f32 `x` by hand: bf16 keeps the top 16 bits of the f32 pattern.
#[test]
fn bf16_round_to_nearest_even_hand_values() {
    // exactly representable: 1.0 = 0x3F80_0000 -> 0x3F80
    assert_eq!(store_bf16(1.0f32), 0x3f80);
    // 1 + 2^-8 is halfway between 1.0 (0x3F80) and 1 + 2^-7 (0x3F81): tie to even -> 0x3F80
    assert_eq!(store_bf16(1.0f32 + 2f32.powi(-8)), 0x3f80);
    // 1 + 3·2^-8 is halfway between 0x3F81 (odd) and 0x3F82 (even): tie to even -> 0x3F82
    assert_eq!(store_bf16(1.0f32 + 3.0 * 2f32.powi(-8)), 0x3f82);
    // just above the halfway point rounds up: 0x3F80_8001 -> 0x3F81
    assert_eq!(store_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    // just below rounds down: 0x3F80_7FFF -> 0x3F80
    assert_eq!(store_bf16(f32::from_bits(0x3f80_7fff)), 0x3f80);
    // negative: -1.5 = 0xBFC0_0000 -> 0xBFC0
    assert_eq!(store_bf16(-1.5f32), 0xbfc0);
    // 0.1f32 = 0x3DCC_CCCD: low half 0xCCCD > 0x8000 -> 0x3DCD
    assert_eq!(store_bf16(0.1f32), 0x3dcd);
    // f32::MAX = 0x7F7F_FFFF rounds to infinity 0x7F80
    assert_eq!(store_bf16(f32::MAX), 0x7f80);
    assert!(half::bf16::from_bits(store_bf16(f32::NAN)).is_nan());
    // f64 input rounds once, directly: 1 + 2^-8 + 2^-40 is above the tie -> 0x3F81
    assert_eq!(store_bf16(1.0f64 + 2f64.powi(-8) + 2f64.powi(-40)), 0x3f81);
    // loads are exact
    assert_eq!(load_bf16::<f32>(0x3dcd), f32::from_bits(0x3dcd_0000));
    assert_eq!(load_bf16::<f64>(0xbfc0), -1.5);
}

#[test]
fn f16_round_to_nearest_even_hand_values() {
    // 1.0 = 0x3C00; ulp at 1 is 2^-10
    assert_eq!(store_f16(1.0f32), 0x3c00);
    // 1 + 2^-11: tie between 0x3C00 (even) and 0x3C01 -> 0x3C00
    assert_eq!(store_f16(1.0f32 + 2f32.powi(-11)), 0x3c00);
    // 1 + 3·2^-11: tie between 0x3C01 and 0x3C02 (even) -> 0x3C02
    assert_eq!(store_f16(1.0f32 + 3.0 * 2f32.powi(-11)), 0x3c02);
    // 65504 is the largest finite f16 (0x7BFF); 65520 is the tie to the next (even, infinity)
    assert_eq!(store_f16(65504.0f32), 0x7bff);
    assert_eq!(store_f16(65519.0f32), 0x7bff);
    assert_eq!(store_f16(65520.0f32), 0x7c00);
    // smallest subnormal 2^-24 = 0x0001; 2^-25 is a tie with 0 -> 0 (even)
    assert_eq!(store_f16(2f32.powi(-24)), 0x0001);
    assert_eq!(store_f16(2f32.powi(-25)), 0x0000);
    assert_eq!(store_f16(1.5 * 2f32.powi(-24)), 0x0002);
    // f64 input rounds once: 1 + 2^-11 + 2^-40 is above the tie -> 0x3C01
    assert_eq!(store_f16(1.0f64 + 2f64.powi(-11) + 2f64.powi(-40)), 0x3c01);
    // -2.0 = 0xC000
    assert_eq!(store_f16(-2.0f64), 0xc000);
    assert_eq!(
        load_f16::<f32>(0x3555),
        f32::from(half::f16::from_bits(0x3555))
    );
    assert_eq!(load_f16::<f64>(0x0001), 2f64.powi(-24));
}

/// Exact values, NaN and infinities are stored as round-to-nearest stores them, whatever the
/// random bits.
#[test]
fn stochastic_rounding_keeps_exact_values() {
    for r in [0u32, u32::MAX, 0x9abc_def0] {
        assert_eq!(store_bf16_sr(1.0f32, r), 0x3f80);
        assert_eq!(store_f16_sr(-2.0f32, r), 0xc000);
        assert_eq!(store_bf16_sr(f32::INFINITY, r), 0x7f80);
        assert!(half::bf16::from_bits(store_bf16_sr(f32::NAN, r)).is_nan());
        assert_eq!(store_f16_sr(1e6f32, r), 0x7c00);
        // beyond the largest finite f16 but rounding to it: never infinity
        assert_eq!(store_f16_sr(65510.0f32, r), 0x7bff);
    }
}

/// `x = 1 + 2^-9` (a quarter of the way from 1 to 1 + 2^-7 in bf16): rounds up exactly when
/// the uniform draw is below 1/4.
#[test]
fn stochastic_rounding_threshold() {
    let x = 1.0f32 + 2f32.powi(-9);
    let below = (1u32 << 30) - 1; // u = r·2^-32 just below 1/4
    let above = 1u32 << 30; // u = 1/4
    assert_eq!(store_bf16_sr(x, below), 0x3f81);
    assert_eq!(store_bf16_sr(x, above), 0x3f80);
    assert_eq!(store_bf16_sr(-x, below), 0xbf81);
    assert_eq!(store_bf16_sr(-x, above), 0xbf80);
}

/// Over 200,000 keys the mean of the stored values equals `x` within 5 standard errors of the
/// mean of a two-point distribution (`sigma = ulp · sqrt(p (1 - p))`).
#[test]
fn stochastic_rounding_is_unbiased() {
    let n = 200_000u64;
    for (x, lo, hi, f16) in [
        (1.0 + 0.3 * 2f64.powi(-7), 1.0, 1.0 + 2f64.powi(-7), false),
        (-(0.1f64), -0.099_609_375, -0.100_097_656_25, false),
        (
            1e-3,
            0.000_999_450_683_593_75,
            0.001_000_404_357_910_156_2,
            true,
        ),
        (3e-7, 5.0 * 2f64.powi(-24), 6.0 * 2f64.powi(-24), true),
    ] {
        let key = stream_key(param_key("layer.weight", 17), 1);
        let mut sum = 0.0;
        for i in 0..n {
            let r = counter_bits(key, i);
            let b = if f16 {
                store_f16_sr(x, r)
            } else {
                store_bf16_sr(x, r)
            };
            let v = if f16 {
                StateDtype::F16.to_f64(b)
            } else {
                StateDtype::Bf16.to_f64(b)
            };
            assert!(v == lo || v == hi, "{x}: stored {v}, neighbours {lo}, {hi}");
            sum += v;
        }
        let mean = sum / n as f64;
        let p = (x - lo) / (hi - lo);
        let sigma = (hi - lo).abs() * (p * (1.0 - p)).sqrt() / (n as f64).sqrt();
        assert!(
            (mean - x).abs() < 5.0 * sigma,
            "{x}: mean {mean}, off by {} (5 sigma = {})",
            (mean - x).abs(),
            5.0 * sigma
        );
    }
}

/// The key depends on name and step; the draws on the key and the index only.
#[test]
fn counter_bits_depend_on_name_step_slot_index() {
    let k = param_key("w", 3);
    assert_ne!(k, param_key("w", 4));
    assert_ne!(k, param_key("v", 3));
    assert_ne!(stream_key(k, 0), stream_key(k, 1));
    assert_ne!(counter_bits(k, 0), counter_bits(k, 1));
    assert_eq!(
        counter_bits(k, 12345),
        counter_bits(param_key("w", 3), 12345)
    );
    // splitmix64 from state 0: first output is 0xE220A8397B1DCDAF (reference implementation)
    assert_eq!(mix64(GOLDEN), 0xe220_a839_7b1d_cdaf);
}

/// `murmur3_32` against the published `MurmurHash3_x86_32` test vectors for 4-byte inputs
/// (SMHasher's verification code as ported in the test-vector table of
/// <https://stackoverflow.com/a/31929528>, and Wikipedia's MurmurHash article: `"test"`,
/// `"aaaa"`), and `counter_bits` is it, seeded with the key's low half, below `2^32`.
#[test]
fn murmur3_reference_vectors() {
    // (bytes, seed, hash)
    for (bytes, seed, want) in [
        ([0xffu8, 0xff, 0xff, 0xff], 0u32, 0x7629_3b50u32),
        ([0x21, 0x43, 0x65, 0x87], 0, 0xf55b_516b),
        ([0x21, 0x43, 0x65, 0x87], 0x5082_edee, 0x2362_f9de),
        ([0, 0, 0, 0], 0, 0x2362_f9de),
        (*b"aaaa", 0x9747_b28c, 0x5a97_808a),
        (*b"test", 0, 0xba6b_d213),
        (*b"test", 0x9747_b28c, 0x704b_81dc),
    ] {
        let block = u32::from_le_bytes(bytes);
        assert_eq!(murmur3_32(block, seed), want, "{bytes:x?} seed {seed:#x}");
        // any high key half: the seed is the low half below 2^32 elements
        for hi in [0u64, 1, 0xdead_beef] {
            let key = hi << 32 | u64::from(seed);
            assert_eq!(counter_bits(key, u64::from(block)), want);
        }
    }
    // past 2^32 elements the index's high half h changes the seed to seed ^ h·(key_hi | 1)
    let key = 0x0000_0006_9747_b28c_u64;
    let block = u32::from_le_bytes(*b"test");
    for h in [1u64, 2, 0xffff_ffff] {
        let seed = 0x9747_b28c ^ (h as u32).wrapping_mul(7);
        assert_eq!(
            counter_bits(key, h << 32 | u64::from(block)),
            murmur3_32(block, seed)
        );
        assert_ne!(counter_bits(key, h << 32 | u64::from(block)), 0x704b_81dc);
    }
}

/// The draws of one element over consecutive steps (what stochastic rounding of one EMA sees)
/// and of consecutive elements in one step are uniform: over 65,536 draws each, every one of
/// 64 equal bins of the top 6 bits holds its share within a chi-square bound (63 degrees of
/// freedom; 125 is beyond the 99.999th percentile, about 123), and the draws of the two
/// slots of one element agree no more often than chance in their top 8 bits.
#[test]
fn counter_bits_are_uniform_across_steps_and_elements() {
    let n = 65_536u64;
    let chi2 = |draws: &mut dyn Iterator<Item = u32>| {
        let mut bins = [0u64; 64];
        for r in draws {
            bins[(r >> 26) as usize] += 1;
        }
        let e = n as f64 / 64.0;
        bins.iter()
            .map(|&b| (b as f64 - e).powi(2) / e)
            .sum::<f64>()
    };
    for index in [0u64, 1, 4095, 1 << 20] {
        let over_steps =
            chi2(&mut (0..n).map(|t| counter_bits(stream_key(param_key("w", t), 0), index)));
        assert!(over_steps < 125.0, "index {index}: chi2 {over_steps}");
    }
    for step in [1u64, 2, 1000] {
        let key = stream_key(param_key("layer.weight", step), 1);
        let over_elements = chi2(&mut (0..n).map(|i| counter_bits(key, i)));
        assert!(over_elements < 125.0, "step {step}: chi2 {over_elements}");
    }
    // slots 0 and 1 of one element: equal top bytes about n/256 times (binomial, sd ~ 16)
    let k = param_key("w", 9);
    let same = (0..n)
        .filter(|&i| {
            counter_bits(stream_key(k, 0), i) >> 24 == counter_bits(stream_key(k, 1), i) >> 24
        })
        .count() as f64;
    assert!((same - n as f64 / 256.0).abs() < 5.0 * 16.0, "{same}");
}

/// Round to nearest, ties to even, against the definition: over many `f64` values, the result
/// is one of the two neighbours, no farther than the other, and even on a tie.
#[test]
fn round_f64_is_nearest_even() {
    for dtype in [StateDtype::Bf16, StateDtype::F16] {
        for i in 0..20_000u64 {
            let r = splitmix64_at(7, i);
            // magnitudes across f16's range (subnormals included) and bf16's
            let e = (r % 40) as i32 - 26;
            let frac = (r >> 8) as f64 / (1u64 << 56) as f64;
            let x = if r & 1 == 0 { 1.0 } else { -1.0 } * (1.0 + frac) * 2f64.powi(e);
            let b = dtype.round_f64(x);
            let v = dtype.to_f64(b);
            let (lo, hi) = (
                dtype.to_f64(b.wrapping_sub(1)),
                dtype.to_f64(b.wrapping_add(1)),
            );
            let d = (v - x).abs();
            for n in [lo, hi].into_iter().filter(|n| !n.is_nan()) {
                let dn = (n - x).abs();
                assert!(d <= dn, "{dtype:?} {x}: {v} farther than {n}");
                if d == dn {
                    assert_eq!(b & 1, 0, "{dtype:?} {x}: tie not to even");
                }
            }
        }
    }
}
