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

pub mod model;
pub mod optimizers;

use dfdx::tensor::Cpu;

pub use model::{CharTransformer, VOCAB};

/// The model of `compare --task charlm`: width 128, 4 heads of 32, MLP width 512, 2 blocks,
/// context 64 (see `examples/CHARLM_RESULTS.md` for how it was sized to the time budget).
pub type CharLm = CharTransformer<128, 4, 512, 2, 64, f32, Cpu>;

/// A tiny configuration for tests and doc examples: width 16, 2 heads, MLP 32, 1 block,
/// context 16.
pub type TinyLm = CharTransformer<16, 2, 32, 1, 16, f32, Cpu>;

/// Nats to bits: a cross-entropy in nats per character divided by `ln 2`.
pub fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}
