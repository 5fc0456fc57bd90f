//! Random probes of the randomized matrix primitives (`psgd_precondition`'s `V`,
//! `low_rank_orthonormalize`'s initial right factor): a counter-based standard normal source keyed
//! by `(seed, parameter name, step)`, or a probe the user supplied for the next step.
//!
//! No primitive draws from a global random number generator: the same `(seed, name, step)`
//! always gives the same numbers, whatever the order in which parameters are updated, the
//! number of threads or whether the run was resumed from a checkpoint.

use crate::Float;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// FNV-1a hash of a parameter name (64 bits).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fills `out` with standard normal numbers determined by `(seed, name, step)` only.
///
/// The 256-bit ChaCha8 key is `seed ‖ fnv1a64(name) ‖ step ‖ "probe\0\0\0"` (little-endian
/// words); each value is `rand_distr::StandardNormal` sampled as `f64` (ziggurat) and rounded to
/// `E`. Value-stable for a given version of `rand_chacha` 0.3 / `rand_distr` 0.4, and
/// independent of how many values another parameter or step asked for, so a run resumed from a
/// checkpoint draws exactly the probes the uninterrupted run would have drawn.
pub fn standard_normal_probe<E: Float>(seed: u64, name: &str, step: u64, out: &mut [E]) {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&name_hash(name).to_le_bytes());
    key[16..24].copy_from_slice(&step.to_le_bytes());
    key[24..].copy_from_slice(b"probe\0\0\0");
    let mut rng = ChaCha8Rng::from_seed(key);
    for x in out.iter_mut() {
        let v: f64 = StandardNormal.sample(&mut rng);
        *x = E::of_f64(v);
    }
}

/// The probe for this step: the user-supplied one (taken, so it is used once) when it has
/// exactly `out.len()` elements, otherwise [`standard_normal_probe`]. Returns whether the
/// supplied probe was used.
pub(super) fn next_probe<E: Float>(
    supplied: Option<&mut crate::KronFactors<E>>,
    seed: u64,
    name: &str,
    step: u64,
    out: &mut [E],
) -> bool {
    if let Some(p) = supplied
        .and_then(|f| f.probe.take())
        .filter(|p| p.len() == out.len())
    {
        out.copy_from_slice(&p);
        return true;
    }
    standard_normal_probe(seed, name, step, out);
    false
}
