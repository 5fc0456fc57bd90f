//! The optimizers of `compare --task charlm`, with the peak learning rates swept for the
//! transformer, behind the same object-safe [`ModelOptimizer`] as the digits table.
//!
//! **Adding an optimizer is one line** of the table below:
//! `("name", peak_lr, "summary", Type, TypeConfig { field: value, ... })`, listing the config
//! fields that differ from the zoo type's defaults other than `lr`, which gets the run's
//! schedule scaled to `peak_lr`. A value is converted with `.into()` (`0.9` for a `Hyper`, `true`
//! for a flag); `sched(p)` is the run's schedule shape with peak `p`, for a second learning rate
//! (Muon's `adam_lr`) that must follow the same warmup and decay.
//!
//! ```
//! use examples::charlm::{optimizers, TinyLm};
//! use optim_dsl::prelude::Hyper;
//!
//! let spec = optimizers::spec("muon").unwrap();
//! let constant = |peak: f64| Hyper::from(peak);
//! let opt = optimizers::build::<TinyLm>("muon", spec.peak_lr, &constant).unwrap();
//! assert_eq!(opt.name(), "Muon");
//! ```

use dfdx::nn::TensorCollection;
use dfdx::tensor::Cpu;
use optim_dsl::prelude::*;
use optim_dsl::zoo::{
    AdamW, AdamWConfig, Lion, LionConfig, Muon, MuonConfig, Shampoo, ShampooConfig, Soap,
    SoapConfig,
};

use crate::optimizers::optimizer_table;
pub use crate::optimizers::{BuildError, ModelOptimizer, OptimizerSpec};

/// The swept peak learning rate of AdamW, shared with Muon's AdamW part (`adam_lr`), so that
/// the embeddings, head and vectors get the same treatment under both.
pub const ADAMW_PEAK: f64 = 3e-3;

// One line per optimizer. Settings other than lr are the zoo's (PyTorch / paper) defaults except
// where written; AdamW's beta2 = 0.99 is nanoGPT's choice for its small character-level
// Shakespeare model, and Muon's AdamW part uses the same betas, decay and (scheduled) peak.
optimizer_table! {
    /// Every optimizer of the language-model comparison, in display order, with its peak
    /// learning rate for the pinned transformer (see the README section "At a realistic scale"
    /// for the sweep that chose it).
    const OPTIMIZERS;
    /// Builds the optimizer called `name` (see [`OPTIMIZERS`]) with `lr = sched(peak_lr)`
    /// and the table's other settings; `sched` maps a peak to the run's schedule (or a
    /// constant) and is also used by entries that schedule a second learning rate.
    fn build(peak_lr: f64, sched: &dyn Fn(f64) -> Hyper) with lr = sched(peak_lr);
    ("adamw", ADAMW_PEAK, "AdamW, betas (0.9, 0.99), decoupled weight decay 0.1", AdamW, AdamWConfig { beta2: 0.99, weight_decay: 0.1 }),
    ("muon", 3e-2, "Muon on hidden matrices (Nesterov 0.95, 5 Newton-Schulz steps); AdamW as above on embeddings, head and vectors", Muon, MuonConfig { adam_lr: sched(ADAMW_PEAK), adam_beta2: 0.99, adam_eps: 1e-8, adam_weight_decay: 0.1 }),
    ("soap", 1e-2, "SOAP, betas (0.95, 0.95), weight decay 0.01, eigenbasis refresh every 10 steps", Soap, SoapConfig { precondition_frequency: 10.0 }),
    ("shampoo", 1e-2, "Shampoo with Adam grafting, inverse 4th roots every 10 steps", Shampoo, ShampooConfig { update_freq: 10.0 }),
    ("lion", 1e-3, "Lion, betas (0.9, 0.99), decoupled weight decay 1.0 (10x AdamW's, as its lr is smaller)", Lion, LionConfig { weight_decay: 1.0 }),
}
