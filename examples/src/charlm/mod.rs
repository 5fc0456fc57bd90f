//! Character-level language modelling: a small decoder-only transformer ([`model`]) trained on
//! the embedded Shakespeare text ([`crate::data::text`]), and the optimizers compared on it
//! ([`optimizers`]). `cargo run --release -p examples --example compare -- --task charlm` runs
//! the comparison.
//!
//! ```
//! use dfdx::nn::ZeroGrads;
//! use dfdx::tensor::Cpu;
//! use examples::charlm::{self, TinyLm};
//! use examples::data::text;
//!
//! let (train, _) = text::load().unwrap().split(0.1).unwrap();
//! let dev = Cpu::seed_from_u64(0);
//! let model = TinyLm::build_on(&dev);
//! let mut grads = model.alloc_grads();
//! let (x, y) = train.batch(2, TinyLm::CONTEXT, 0, 0);
//! let loss = charlm::model::loss_and_grads(&dev, &model, &mut grads, &x, &y, 2);
//! // an untrained model is close to uniform over the 128 byte values: ln 128 = 4.85 nats
//! assert!((loss - 128f32.ln()).abs() < 0.5, "{loss}");
//! ```

mod hybrids;
pub mod model;
pub mod optimizers;

use dfdx::tensor::Cpu;

pub use model::{CharTransformer, Kfac, LinearKind, Plain, VOCAB};

/// The model of `compare --task charlm`: width 128, 4 heads of 32, MLP width 512, 2 blocks,
/// context 64 (see the README section "At a realistic scale" for how it was sized to the time budget).
pub type CharLm = CharLmOf<Plain>;

/// [`CharLm`] whose block projections are `KfacLinear` (the K-FAC entry of the comparison):
/// the same forward and, from the same seed, the same weights.
pub type KfacCharLm = CharLmOf<Kfac>;

/// The comparison's transformer with block projections of kind `K` ([`CharLm`],
/// [`KfacCharLm`]).
pub type CharLmOf<K> = CharTransformer<128, 4, 512, 2, 64, f32, Cpu, K>;

/// A tiny configuration for tests and doc examples: width 16, 2 heads, MLP 32, 1 block,
/// context 16.
pub type TinyLm = CharTransformer<16, 2, 32, 1, 16, f32, Cpu>;

/// [`TinyLm`] with `KfacLinear` block projections (tests of the K-FAC entry).
pub type KfacTinyLm = CharTransformer<16, 2, 32, 1, 16, f32, Cpu, Kfac>;

/// Nats to bits: a cross-entropy in nats per character divided by `ln 2`.
pub fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

/// The neighbour of `v` on the half-decade ladder …, 1e-3, 3e-3, 1e-2, 3e-2, … (values
/// `1 × 10^k` and `3 × 10^k`): the smallest rung above `v` when `up`, else the largest rung
/// below it. The grid of the learning-rate sweeps; a value between rungs (say 2e-2) goes to the
/// rung on that side (3e-2 up, 1e-2 down). Results are rounded to one significant digit, so
/// `ladder(1e-3, true)` is exactly `3e-3`.
///
/// # Panics
/// If `v` is not finite and positive.
pub fn ladder(v: f64, up: bool) -> f64 {
    assert!(
        v.is_finite() && v > 0.0,
        "ladder needs a positive value, got {v}"
    );
    let k = v.log10().floor() as i32;
    let rungs = (k - 1..=k + 1).flat_map(|j| [1.0, 3.0].map(|a| a * 10f64.powi(j)));
    // a relative margin so that a rung equal to `v` (up to rounding) is not its own neighbour
    let found = if up {
        rungs.filter(|&r| r > v * (1.0 + 1e-9)).reduce(f64::min)
    } else {
        rungs.filter(|&r| r < v * (1.0 - 1e-9)).reduce(f64::max)
    };
    let r = found.unwrap_or(v);
    format!("{r:.0e}").parse().unwrap_or(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_steps_by_half_decades() {
        assert_eq!(ladder(1e-3, true), 3e-3);
        assert_eq!(ladder(3e-3, true), 1e-2);
        assert_eq!(ladder(1e-2, false), 3e-3);
        assert_eq!(ladder(3e-3, false), 1e-3);
        assert_eq!(ladder(1.0, true), 3.0);
        assert_eq!(ladder(0.1, false), 3e-2);
        // between rungs
        assert_eq!(ladder(2e-2, true), 3e-2);
        assert_eq!(ladder(2e-2, false), 1e-2);
        assert_eq!(ladder(5e-3, false), 3e-3);
        assert_eq!(ladder(5e-3, true), 1e-2);
        // rounding noise does not make a rung its own neighbour
        assert_eq!(ladder(0.1 + 0.2 - 0.0, false), 1e-1);
        assert_eq!(ladder(3.0000000000000004e-3, true), 1e-2);
    }

    #[test]
    fn bits_are_nats_over_ln2() {
        assert!((bits(std::f64::consts::LN_2) - 1.0).abs() < 1e-15);
        assert!((bits(128f64.ln()) - 7.0).abs() < 1e-12);
    }
}
