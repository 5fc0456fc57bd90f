//! Deterministic pseudo-random test values.

/// `n` values in `[-1, 1)` from the xorshift64 (13, 7, 17) sequence started at state `s`
/// (non-zero): after each shift round, the state's top 53 bits as a fraction of `2^52`,
/// minus 1.
pub fn xorshift(mut s: u64, n: usize) -> impl Iterator<Item = f64> {
    (0..n).map(move |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    })
}

/// [`xorshift`] from the state `seed · 0x9e3779b97f4a7c15 | 1` (any `seed`).
pub fn seeded(seed: u64, n: usize) -> impl Iterator<Item = f64> {
    xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, n)
}
