//! The dynamic maps against hand-computed entries; quantisation round-trip error bounds;
//! tails, empty buffers, zero and non-finite blocks.

use super::*;

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-7 * b.abs().max(1e-30)
}

/// Entries by hand from the formula: `10^(i-6)·(b_j + b_{j+1})/2`, `b = linspace(0.1, 1, F)`.
#[test]
fn maps_hand_values() {
    let s = Q8Map::Signed.values();
    // i = 0, F = 2: one midpoint (0.1 + 1)/2 = 0.55, times 1e-6, with both signs around 0
    assert_eq!(s[127], 0.0);
    assert!(close(s[128], 0.55e-6) && close(s[126], -0.55e-6));
    // i = 1, F = 3: b = 0.1, 0.55, 1 -> 0.325, 0.775 (times 1e-5)
    assert!(close(s[129], 3.25e-6) && close(s[130], 7.75e-6));
    // i = 6, F = 65: spacing 0.9/64; the last midpoint 1 - 0.9/128 = 0.99296875, then 1
    assert_eq!(s[255], 1.0);
    assert!(close(s[254], 0.992_968_75) && close(s[0], -0.992_968_75));
    assert!(close(s[253], 0.978_906_25));
    // 127 negative, 0, 127 positive of which the last is 1
    assert_eq!(s.iter().filter(|&&v| v < 0.0).count(), 127);
    let u = Q8Map::Unsigned.values();
    // i = 0, F = 3: 0.325e-6, 0.775e-6
    assert_eq!(u[0], 0.0);
    assert!(close(u[1], 0.325e-6) && close(u[2], 0.775e-6));
    // i = 6, F = 129: last midpoint 1 - 0.9/256 = 0.996484375
    assert!(close(u[254], 0.996_484_375) && u[255] == 1.0);
    // i = 5, F = 65, times 0.1: first midpoint 0.1 + 0.9/128 = 0.10703125 -> 0.010703125
    assert!(u.iter().any(|&v| close(v, 0.010_703_125)));
    for m in [s, u] {
        assert!(m.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
    }
    assert_eq!(Q8Map::Signed.zero_code(), 127);
    assert_eq!(Q8Map::Unsigned.zero_code(), 0);
}

/// `encode` is the nearest entry (brute force), ties to the lower one.
#[test]
fn encode_is_nearest() {
    for map in [Q8Map::Signed, Q8Map::Unsigned] {
        let q = map.values();
        let mut y = -1.1f64;
        while y < 1.1 {
            let c = usize::from(map.encode(y));
            let best = q
                .iter()
                .map(|&v| (f64::from(v) - y).abs())
                .fold(f64::INFINITY, f64::min);
            assert_eq!((f64::from(q[c]) - y).abs(), best, "{map:?} {y}");
            y += 0.000_37;
        }
        // exactly halfway between entries 200 and 201: the lower
        let mid = (f64::from(q[200]) + f64::from(q[201])) / 2.0;
        assert_eq!(map.encode(mid), 200);
        assert_eq!(map.encode(2.0), 255);
    }
    assert_eq!(Q8Map::Signed.encode(-2.0), 0);
    assert_eq!(Q8Map::Unsigned.encode(-0.5), 0);
}

/// A pseudo-random value in `[-1, 1)` times `10^e` for `e` in `-6..=0`.
fn sample(i: u64) -> f64 {
    let r = crate::lowp::mix64(i);
    let u = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    u * 10f64.powi(-((r & 7) as i32 % 7))
}

/// Round trip: every element within half the gap of its map neighbours times the block's
/// absmax (plus f32 rounding), so at most 0.0070 (signed) / 0.0035 (unsigned) of the absmax;
/// the absmax element is exact for positive values.
#[test]
fn round_trip_error_bounds() {
    for (map, worst) in [(Q8Map::Signed, 0.0070313), (Q8Map::Unsigned, 0.0035157)] {
        let xs: Vec<f32> = (0..1000)
            .map(|i| {
                let x = sample(i) as f32;
                if map == Q8Map::Unsigned {
                    x.abs()
                } else {
                    x
                }
            })
            .collect();
        let b = Q8Buf::from_values(map, &xs);
        assert_eq!((b.codes.len(), b.scales.len()), (1000, 4));
        let back: Vec<f32> = b.to_values();
        let q = map.values();
        let mut max_rel = 0.0f64;
        for (blk, (x, y)) in xs.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(b.scales[blk], amax);
            for (&x, &y) in x.iter().zip(y) {
                let n = f64::from(x) / f64::from(amax);
                let k = q.partition_point(|&v| f64::from(v) <= n).clamp(1, 255);
                let gap = f64::from(q[k]) - f64::from(q[k - 1]);
                let err = (f64::from(x) - f64::from(y)).abs();
                let bound = (0.5 * gap * 1.000_001 + 1e-7) * f64::from(amax);
                assert!(err <= bound, "{map:?}: {x} -> {y}, bound {bound}");
                max_rel = max_rel.max(err / f64::from(amax));
            }
            let top = x.iter().copied().fold(f32::MIN, f32::max);
            if top == amax {
                assert!(y.contains(&amax), "the absmax element is exact");
            }
        }
        assert!(max_rel <= worst, "{map:?}: {max_rel}");
    }
}

#[test]
fn tails_empty_zero_and_non_finite_blocks() {
    // 300 = one full block and a 44-element tail with its own scale
    let xs: Vec<f64> = (0..300)
        .map(|i| if i < 256 { 1.0 } else { -0.25 })
        .collect();
    let b = Q8Buf::from_values(Q8Map::Signed, &xs);
    assert_eq!(b.scales, vec![1.0, 0.25]);
    assert!(b.is_consistent());
    let back: Vec<f64> = b.to_values();
    assert!(back[..256].iter().all(|&v| v == 1.0));
    // -0.25 is its block's absmax: stored as the most negative entry, -0.99296875·0.25
    let want = f64::from(Q8Map::Signed.values()[0]) * 0.25;
    assert!(back[256..].iter().all(|&v| v == want));
    let e = Q8Buf::from_values::<f32>(Q8Map::Unsigned, &[]);
    assert!(e.codes.is_empty() && e.scales.is_empty() && e.is_consistent());
    // all-zero block: scale 0, zero codes, zeros back
    let z = Q8Buf::from_values(Q8Map::Signed, &[0.0f32; 10]);
    assert_eq!((z.scales[0], z.codes[0]), (0.0, 127));
    assert!(z.to_values::<f32>().iter().all(|&v| v == 0.0));
    // a NaN or an infinity makes its block NaN and leaves the others alone
    let mut xs = vec![0.5f32; 512];
    xs[3] = f32::INFINITY;
    let n = Q8Buf::from_values(Q8Map::Unsigned, &xs);
    assert!(n.scales[0].is_nan() && n.scales[1] == 0.5);
    let back: Vec<f32> = n.to_values();
    assert!(back[..256].iter().all(|v| v.is_nan()) && back[256..].iter().all(|&v| v == 0.5));
    // negatives in the unsigned map are stored as 0 (but count towards the absmax)
    let u = Q8Buf::from_values(Q8Map::Unsigned, &[-2.0f32, 1.0]);
    assert_eq!(u.scales[0], 2.0);
    assert_eq!(u.to_values::<f32>()[0], 0.0);
    // a constant fill
    let f = Q8Buf::filled(Q8Map::Unsigned, 600, 0.125);
    assert_eq!(f.scales, vec![0.125; 3]);
    assert!(f.to_values::<f64>().iter().all(|&v| v == 0.125));
}

/// A bucket holds at most one midpoint (what `encode` relies on), per map and sign.
#[test]
fn buckets_hold_at_most_one_midpoint() {
    for map in [Q8Map::Signed, Q8Map::Unsigned] {
        let n = map.tables().most_candidates();
        assert!(n <= 1, "{map:?}: a bucket holds {n} midpoints");
    }
}

/// Values `y` to encode: every midpoint and its neighbours a few `f64` ulps away (the ties),
/// every bucket edge and its neighbours, ±0, ±2, subnormals, and a stride through the `f32`s
/// in `[-1, 1]` and beyond, as `f64`.
fn encode_inputs(t: &Tables) -> Vec<f64> {
    let mut ys = Vec::new();
    let near = |y: f64, ys: &mut Vec<f64>| {
        for d in 0..4u64 {
            for s in [1.0, -1.0] {
                let b = (s * y).to_bits();
                ys.push(f64::from_bits(b.wrapping_add(d)));
                ys.push(f64::from_bits(b.wrapping_sub(d)));
            }
        }
    };
    for &m in &t.mids {
        near(m, &mut ys);
    }
    for k in 0..BUCKETS {
        near(bucket_range(k).0, &mut ys);
    }
    for &v in &t.values {
        near(f64::from(v), &mut ys);
    }
    near(2.0, &mut ys);
    near(f64::MIN_POSITIVE, &mut ys);
    ys.extend([f64::MAX, -f64::MAX, 1e300, -1e-300, 5e-324, -5e-324]);
    ys.extend((0..=u32::MAX / 257).map(|k| f64::from(f32::from_bits(k.wrapping_mul(257)))));
    ys.retain(|y| !y.is_nan());
    ys
}

/// The bucket encoder gives the binary search's code (the encoder it replaced) for every
/// input: ties, bucket edges, both signs, a sweep of the `f32`s, pseudo-random `f64`s.
#[test]
fn encode_equals_binary_search() {
    for map in [Q8Map::Signed, Q8Map::Unsigned] {
        let t = map.tables();
        let mut ys = encode_inputs(t);
        ys.extend((0..1_000_000u64).map(|i| {
            let r = crate::lowp::splitmix64_at(0x98, i);
            // magnitudes 2^-40 ..= 2^1 with random mantissas and signs
            let e = (r % 42) as i32 - 40;
            f64::from_bits(r >> 12 | ((1023 + e) as u64) << 52 | r << 63)
        }));
        for y in ys {
            assert_eq!(t.encode(y), t.encode_search(y), "{map:?} {y:e}");
        }
    }
}

/// `store_block` as it was: `f64` absmax by comparison (NaN kept), binary search.
fn store_block_ref<E: Float>(map: Q8Map, x: &[E], codes: &mut [u8], scale: &mut f32) {
    let mut amax = 0.0f64;
    for v in x {
        let a = v.as_f64().abs();
        if a > amax || a.is_nan() {
            amax = a;
        }
    }
    let t = map.tables();
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
    for (c, v) in codes.iter_mut().zip(x) {
        *c = t.encode_search(v.as_f64() / f64::from(s));
    }
}

/// [`store_block`]'s codes and scale bits against [`store_block_ref`]'s, on both paths: the
/// portable one and, where the CPU has AVX-512F ([`q8_hardware`]), the AVX-512 one (`f32`).
fn check_store<E: Float>(map: Q8Map, x: &[E], what: &str) {
    let (mut c0, mut s0) = (vec![1u8; x.len()], 1.0f32);
    store_block_ref(map, x, &mut c0, &mut s0);
    for hw in [false, true] {
        let (mut c, mut s) = (vec![0u8; x.len()], 0.0f32);
        store_block_on(hw, map, x, &mut c, &mut s);
        assert_eq!(s.to_bits(), s0.to_bits(), "{map:?} {what} hw {hw}: scale");
        if let Some(i) = (0..x.len()).find(|&i| c[i] != c0[i]) {
            panic!(
                "{map:?} {what} hw {hw}: x[{i}] = {:e} (scale {s:e}) code {} not {}",
                x[i].as_f64(),
                c[i],
                c0[i]
            );
        }
    }
}

/// Whole blocks (random lengths, magnitudes, signs, NaN, infinities, zeros, `f32` and `f64`)
/// give the same codes and scale bits as before.
#[test]
fn store_block_equals_reference() {
    fn check<E: Float>(map: Q8Map, x: &[E]) {
        check_store(map, x, "random block");
    }
    for b in 0..3_000u64 {
        let len = 1 + (crate::lowp::splitmix64_at(1, b) % 256) as usize;
        let xs: Vec<f64> = (0..len as u64)
            .map(|i| {
                let r = crate::lowp::splitmix64_at(b + 2, i);
                let e = (r % 30) as i32 - 20 - (b % 5) as i32;
                let x = f64::from_bits(r >> 12 | ((1023 + e) as u64) << 52 | r << 63);
                match (b % 7, r % 97) {
                    (0, 0) => f64::NAN,
                    (1, 0) => f64::NEG_INFINITY,
                    (2, _) => 0.0,
                    (3, 1) => -0.0,
                    _ => x,
                }
            })
            .collect();
        let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        for map in [Q8Map::Signed, Q8Map::Unsigned] {
            check(map, &xs);
            check(map, &x32);
        }
    }
}

/// Every midpoint and bucket edge has at most 29 significant bits, so that its product with
/// an `f32` scale is exact in `f64` (what `encode_f32` relies on).
#[test]
fn midpoints_and_edges_are_short() {
    let short = |m: f64| m.to_bits() & ((1 << 24) - 1) == 0;
    for map in [Q8Map::Signed, Q8Map::Unsigned] {
        assert!(map.tables().mids.iter().all(|&m| short(m)), "{map:?}");
    }
    assert!((1..BUCKETS).all(|k| short(bucket_range(k).0)));
}

/// `f32` blocks whose values sit on and around `scale · midpoint` and `scale · bucket edge`
/// (exact ties where the product is an `f32`), for scales with short and full mantissas: the
/// division-free `f32` encoder gives the codes of the division and binary search.
#[test]
fn store_block_f32_ties_and_edges() {
    for map in [Q8Map::Signed, Q8Map::Unsigned] {
        let t = map.tables();
        let mut points: Vec<f64> = t.mids.to_vec();
        points.extend((1..BUCKETS).map(|k| bucket_range(k).0));
        for s in [
            1.0f32,
            0.75,
            3.0 * 2f32.powi(-20),
            0.1,
            1.7e-3,
            6.0e4,
            f32::from_bits(0x3f7f_ffff),
        ] {
            let mut xs: Vec<f32> = Vec::new();
            for &m in &points {
                for sign in [1.0f64, -1.0] {
                    let x = (sign * m * f64::from(s)) as f32;
                    for d in 0..3u32 {
                        xs.push(f32::from_bits(x.to_bits().wrapping_add(d)));
                        xs.push(f32::from_bits(x.to_bits().wrapping_sub(d)));
                    }
                }
            }
            xs.retain(|x| x.is_finite() && x.abs() <= s);
            for block in xs.chunks(255) {
                let mut b = block.to_vec();
                b.push(if block.len() % 2 == 0 { s } else { -s });
                check_store(map, &b, &format!("scale {s}"));
            }
        }
    }
}

/// `f32` blocks built to break a division-free encoder, on both paths against the division
/// and binary search: each value exactly `m · s` where that product is an `f32` (the ties),
/// and 1–3 ulps either side, for every midpoint `m` and both signs; scales with short and
/// full mantissas, subnormal scales (thresholds that underflow `f32`) and scales near
/// `f32::MAX`; ±0, subnormal values, lengths 1..=256 (every tail of the 64- and 16-lane
/// loops), and blocks holding a NaN or an infinity.
#[test]
fn store_block_f32_adversarial_equals_reference() {
    let mut rng = 0u64;
    let mut next = || {
        rng += 1;
        crate::lowp::splitmix64_at(0x51, rng)
    };
    let scales = [
        1.0f32,
        0.3,
        f32::from_bits(0x3f7f_ffff),
        2.5e-7,
        1.0e-38,
        f32::from_bits(1),
        f32::from_bits(0x0000_0300),
        f32::from_bits(0x007f_ffff),
        3.0e38,
        f32::MAX,
    ];
    for map in [Q8Map::Signed, Q8Map::Unsigned] {
        let t = map.tables();
        for &s in &scales {
            // the ties and their neighbours, as a pool to draw blocks from
            let mut pool: Vec<f32> = Vec::new();
            for &m in &t.mids {
                for sign in [1.0f64, -1.0] {
                    let p = sign * m * f64::from(s);
                    let x = p as f32;
                    for d in 0..4u32 {
                        pool.push(f32::from_bits(x.to_bits().wrapping_add(d)));
                        pool.push(f32::from_bits(x.to_bits().wrapping_sub(d)));
                    }
                }
            }
            pool.extend([0.0, -0.0, f32::from_bits(1), f32::from_bits(0x8000_0001)]);
            pool.retain(|x| x.is_finite() && x.abs() <= s);
            for round in 0..40u64 {
                let len = match round {
                    0 => 1,
                    1 => 15,
                    2 => 17,
                    3 => 63,
                    4 => 65,
                    5 => 256,
                    _ => 1 + (next() % 256) as usize,
                };
                let mut b: Vec<f32> = (0..len)
                    .map(|_| pool[(next() % pool.len() as u64) as usize])
                    .collect();
                // the scale itself, of either sign, somewhere in the block
                let at = (next() % len as u64) as usize;
                b[at] = if round % 2 == 0 { s } else { -s };
                check_store(map, &b, &format!("scale {s:e} round {round}"));
                if round % 8 == 7 {
                    b[(next() % len as u64) as usize] =
                        [f32::NAN, f32::INFINITY][round as usize % 2];
                    check_store(map, &b, &format!("non-finite, scale {s:e}"));
                }
            }
        }
    }
}

/// [`load_block`] on both paths gives the bits of [`load`] for every code, under scales that
/// are zero, subnormal, ordinary, near `f32::MAX` (products that overflow) and NaN, for every
/// tail length of the 16-lane loop.
#[test]
fn load_block_paths_equal_load() {
    let codes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    for map in [Q8Map::Signed, Q8Map::Unsigned] {
        let q = map.values();
        for s in [
            0.0f32,
            f32::from_bits(3),
            1.0e-30,
            0.731,
            1.0,
            6.0e4,
            f32::MAX,
            f32::NAN,
        ] {
            for len in (1..=40).chain([255, 256]) {
                let c = &codes[len % 7..len % 7 + len];
                let want: Vec<u32> = c.iter().map(|&c| load::<f32>(q, c, s).to_bits()).collect();
                for hw in [false, true] {
                    let mut out = vec![7.0f32; len];
                    load_block_on(hw, q, c, s, &mut out);
                    let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "{map:?} scale {s:e} len {len} hw {hw}");
                }
            }
        }
    }
}
