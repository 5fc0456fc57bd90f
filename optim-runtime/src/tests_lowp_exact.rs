//! The branch-free conversions give exactly the bits of the code they replaced: `half`'s
//! conversions (round to nearest) and the `f64` formula of `store_sr` (stochastic rounding to
//! `bf16` and to `f16`, at and around each input's threshold draw),
//! over every 16-bit pattern, a strided sweep of `f32` patterns with every rounding edge, and
//! pseudo-random inputs. So do the `f16` block conversions the generated loops use
//! (`load_f16_block`, `store_f16_block`: F16C where this CPU has it, as in the benchmarks) and
//! their portable path. `exhaustive_f32` (ignored; run it in release) covers all 2^32 `f32`s.

use super::*;

/// `f32` patterns: a stride through all 2^32 plus, for every sign and exponent, the mantissas
/// at and around each rounding point of bf16 (16 dropped bits) and f16 (13, and more below
/// 2^-14).
fn f32_patterns() -> impl Iterator<Item = u32> {
    let stride = (0..=u32::MAX / 4099).map(|k| k.wrapping_mul(4099));
    let edges = (0..512u32).flat_map(|se| {
        let top = se << 23;
        let mut v = Vec::new();
        for sh in 0..=23u32 {
            let half = 1u32 << sh >> 1;
            for base in [
                0u32,
                1 << sh,
                2 << sh,
                3 << sh,
                0x7f_ffff & !((1 << sh) - 1),
            ] {
                for d in [0u32, 1, 2] {
                    for m in [
                        (base + half).wrapping_sub(d),
                        base + half + d,
                        base + d,
                        base.wrapping_sub(d),
                    ] {
                        v.push(top | (m & 0x7f_ffff));
                    }
                }
            }
        }
        v
    });
    stride.chain(edges)
}

/// The old stochastic store of an `f32`: the `f64` formula.
fn sr_ref(x: f32, r: u32) -> Bits {
    store_sr::<half::bf16>(f64::from(x), r)
}

/// The draw at which `f16` stochastic rounding of `x` switches from up to down: `ceil(p·2^32)`
/// with `p = (|x| − lo) / (hi − lo)` from `half`'s neighbours of `|x|` (exact in `f64`), capped
/// to `u32`; `None` where `x` is not finite or its neighbour above is infinity.
fn f16_threshold(x: f32) -> Option<u32> {
    let ax = f64::from(x.abs());
    let c = half::f16::from_f32(x.abs());
    if !ax.is_finite() || c.is_infinite() {
        return None;
    }
    let b = c.to_bits();
    let (lo, hi) = if c.to_f64() > ax {
        (b - 1, b)
    } else {
        (b, b + 1)
    };
    let (lo, hi) = (
        half::f16::from_bits(lo).to_f64(),
        half::f16::from_bits(hi).to_f64(),
    );
    if hi.is_infinite() {
        return None;
    }
    let q = (ax - lo) / (hi - lo) * 2f64.powi(32);
    Some(q.ceil().min(f64::from(u32::MAX)) as u32)
}

/// `store_f16_block` (the loops' path: F16C where this CPU has it) and its portable path
/// against `half` on `xs`, in blocks of 251 elements (31 groups of 8 and a tail of 3).
fn check_f16_blocks(xs: &[f32]) {
    let (mut hw, mut sw) = (vec![0 as Bits; xs.len()], vec![1 as Bits; xs.len()]);
    for ((x, h), s) in xs
        .chunks(251)
        .zip(hw.chunks_mut(251))
        .zip(sw.chunks_mut(251))
    {
        store_f16_block(x, h);
        store_f16_block_on(false, x, s);
    }
    for ((x, h), s) in xs.iter().zip(hw).zip(sw) {
        let want = half::f16::from_f32(*x).to_bits();
        assert_eq!(h, want, "f16 block {:#010x}", x.to_bits());
        assert_eq!(s, want, "f16 portable block {:#010x}", x.to_bits());
    }
}

/// The `f16` block conversions take the F16C path on x86-64 CPUs that have it (the test
/// machine's), so the checks below cover the benchmarks' path.
#[test]
fn f16_blocks_use_f16c_where_present() {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        f16_hardware(),
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
    );
    println!("f16 hardware conversions: {}", f16_hardware());
}

/// `f64` through the block functions: exact widening, one rounding (no F16C path for `f64`).
#[test]
fn f16_blocks_of_f64() {
    let xs = [
        1.0f64 + 2f64.powi(-11) + 2f64.powi(-40),
        -2.0,
        65520.0,
        2f64.powi(-25),
        0.1,
    ];
    let mut b = [0 as Bits; 5];
    store_f16_block(&xs, &mut b);
    assert_eq!(b, [0x3c01, 0xc000, 0x7c00, 0x0000, 0x2e66]);
    let mut back = [0f64; 5];
    load_f16_block(&b, &mut back);
    assert_eq!(back[0], 1.0 + 2f64.powi(-10));
    assert_eq!(back[4], half::f16::from_bits(0x2e66).to_f64());
}

#[test]
fn decode_every_16_bit_pattern() {
    let all: Vec<Bits> = (0..=u16::MAX).collect();
    let (mut hw, mut sw) = (vec![0f32; all.len()], vec![1f32; all.len()]);
    for ((b, h), s) in all
        .chunks(251)
        .zip(hw.chunks_mut(251))
        .zip(sw.chunks_mut(251))
    {
        load_f16_block(b, h);
        load_f16_block_on(false, b, s);
    }
    for b in 0..=u16::MAX {
        let want = half::bf16::from_bits(b).to_f32().to_bits();
        assert_eq!(conv::bf16_to_f32(b).to_bits(), want, "bf16 {b:#06x}");
        assert_eq!(load_bf16::<f32>(b).to_bits(), want, "bf16 {b:#06x}");
        let want = half::f16::from_bits(b).to_f32().to_bits();
        assert_eq!(conv::f16_to_f32(b).to_bits(), want, "f16 {b:#06x}");
        assert_eq!(load_f16::<f32>(b).to_bits(), want, "f16 {b:#06x}");
        assert_eq!(hw[usize::from(b)].to_bits(), want, "f16 block {b:#06x}");
        assert_eq!(sw[usize::from(b)].to_bits(), want, "f16 portable {b:#06x}");
        // f64 loads are unchanged: exact
        let w = load_f16::<f64>(b);
        assert!(w.to_bits() == half::f16::from_bits(b).to_f64().to_bits());
    }
}

/// One `f32` against every replaced conversion (`r`: random bits for the stochastic store).
fn check_f32(u: u32, rs: &[u32]) {
    let x = f32::from_bits(u);
    assert_eq!(
        store_bf16(x),
        half::bf16::from_f32(x).to_bits(),
        "bf16 {u:#010x}"
    );
    assert_eq!(
        store_f16(x),
        half::f16::from_f32(x).to_bits(),
        "f16 {u:#010x}"
    );
    let d = u32::from(u as u16);
    // the random draws at and around the threshold of this x, and the given ones
    for &r in [
        d << 16,
        d.wrapping_sub(1) << 16 | 0xffff,
        d.wrapping_add(1) << 16,
        0,
        u32::MAX,
    ]
    .iter()
    .chain(rs)
    {
        assert_eq!(
            store_bf16_sr(x, r),
            sr_ref(x, r),
            "bf16_sr {u:#010x} r {r:#018x}"
        );
    }
    // f16: the draws at and around this x's threshold, and the given ones
    let t = f16_threshold(x).unwrap_or(1 << 31);
    for &r in [t.wrapping_sub(1), t, t.saturating_add(1), 0, u32::MAX]
        .iter()
        .chain(rs)
    {
        assert_eq!(
            store_f16_sr(x, r),
            store_sr::<half::f16>(f64::from(x), r),
            "f16_sr {u:#010x} r {r:#010x}"
        );
    }
}

#[test]
fn encode_f32_sweep_and_edges() {
    let mut n = 0u64;
    let mut xs = Vec::new();
    for u in f32_patterns() {
        check_f32(u, &[counter_bits(3, n)]);
        xs.push(f32::from_bits(u));
        n += 1;
    }
    assert!(n > 1_000_000);
    check_f16_blocks(&xs);
    for x in [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ] {
        check_f32(x.to_bits(), &[1, 1 << 31]);
    }
    // signalling NaNs and payloads
    let specials = [
        0x7f80_0001u32,
        0xff80_0001,
        0x7fbf_ffff,
        0x7f80_2000,
        0xffc0_0000,
        0x7f80_0000,
        0xff80_0000,
        0x8000_0000,
        0x0000_0001,
    ];
    for u in specials {
        check_f32(u, &[]);
    }
    check_f16_blocks(&specials.map(f32::from_bits));
}

/// Pseudo-random `f32` bit patterns and random draws (a property test with a fixed seed).
#[test]
fn encode_f32_random() {
    let mut xs = Vec::new();
    for i in 0..2_000_000u64 {
        let r = splitmix64_at(0x5eed, i);
        check_f32((r >> 32) as u32, &[counter_bits(0x5eed ^ 1, i)]);
        xs.push(f32::from_bits((r >> 32) as u32));
    }
    check_f16_blocks(&xs);
}

/// All 2^32 `f32`s, through every conversion the stochastic-rounding and F16C paths add
/// (`cargo test --release -p optim-runtime --lib exhaustive_f32 -- --ignored`; passed on
/// 2026-12-06 in 1,364 s at `nice 19` beside other builds on 2 cores, load average about 7).
#[test]
#[ignore]
fn exhaustive_f32() {
    use rayon::prelude::*;
    (0..=u32::MAX >> 16).into_par_iter().for_each(|hi| {
        let mut xs = Vec::with_capacity(1 << 16);
        for lo in 0..=u16::MAX as u32 {
            let u = hi << 16 | lo;
            check_f32(u, &[counter_bits(9, u64::from(u))]);
            xs.push(f32::from_bits(u));
        }
        check_f16_blocks(&xs);
    });
}
