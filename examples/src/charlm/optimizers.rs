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
    AdaMuon, AdaMuonConfig, AdamMini, AdamMiniConfig, AdamW, AdamW8bit, AdamW8bitConfig, AdamWBf16,
    AdamWBf16Config, AdamWConfig, Lion, LionConfig, Muon, MuonConfig, MuonPolarExpress,
    MuonPolarExpressConfig, NorMuon, NorMuonConfig, Prodigy, ProdigyConfig, Shampoo, ShampooConfig,
    Soap, SoapConfig,
};

pub use super::hybrids::{
    KfacLm, KfacLmConfig, PsgdKronLm, PsgdKronLmConfig, SplusLm, SplusLmConfig,
};
use crate::optimizers::optimizer_table;
pub use crate::optimizers::{BuildError, ModelOptimizer, OptimizerSpec};

/// The swept peak learning rate of AdamW, shared with Muon's AdamW part (`adam_lr`), so that
/// the embeddings, head and vectors get the same treatment under both.
pub const ADAMW_PEAK: f64 = 3e-3;

/// The name of the K-FAC entry: it trains [`crate::charlm::KfacCharLm`] (block projections that
/// record K-FAC statistics) and updates an `optim_dsl::kfac::KfacStats` before every step.
pub const KFAC: &str = "kfac";

/// The settings of the K-FAC entry's `KfacStats` (running factors with decay 0.95, handed to
/// the optimizer every 10 steps; damping in the optimizer): `KfacStatsConfig`'s defaults,
/// Martens & Grosse's and KFAC-pytorch's `stat_decay` and `TInv`.
pub fn kfac_stats_config() -> optim_dsl::kfac::KfacStatsConfig {
    optim_dsl::kfac::KfacStatsConfig::default()
}

/// Whether the entry called `name` needs the K-FAC model and statistics ([`KFAC`]).
pub fn uses_kfac(name: &str) -> bool {
    name == KFAC
}

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
    ("kfac", 3e-3, "K-FAC on the blocks' projections (KfacLinear statistics, EMA 0.95, factors every 10 steps; damping 1e-3, no momentum); AdamW as above on embeddings, head and vectors", KfacLm, KfacLmConfig { adam_lr: sched(ADAMW_PEAK) }),
    ("normuon", 3e-2, "NorMuon on hidden matrices (Nesterov 0.95, row-normalised update, beta2 0.95); AdamW as above on the rest", NorMuon, NorMuonConfig { adam_lr: sched(ADAMW_PEAK), adam_beta2: 0.99, adam_eps: 1e-8, adam_weight_decay: 0.1 }),
    ("muon-pe", 3e-3, "Muon with Polar Express coefficients and the 0.2 sqrt(max(rows, cols)) scale (AdamW-sized lr) on hidden matrices; AdamW as above on the rest", MuonPolarExpress, MuonPolarExpressConfig { adam_lr: sched(ADAMW_PEAK), adam_beta2: 0.99, adam_eps: 1e-8, adam_weight_decay: 0.1 }),
    ("adamuon", 3e-3, "AdaMuon (second moment of the orthogonalized momentum, 0.2 sqrt(max(rows, cols)) scale) on hidden matrices; AdamW as above on the rest", AdaMuon, AdaMuonConfig { adam_lr: sched(ADAMW_PEAK), adam_beta2: 0.99, adam_eps: 1e-8, adam_weight_decay: 0.1 }),
    ("adam-mini", 3e-3, "Adam-mini, betas (0.9, 0.99), weight decay 0.1 (one second moment per row or per tensor, chosen by name)", AdamMini, AdamMiniConfig { beta2: 0.99, weight_decay: 0.1 }),
    ("splus", 1e-1, "SPlus (sign in the Gram eigenbases, eigenbases every 100 steps) on hidden matrices; AdamW as above on the rest", SplusLm, SplusLmConfig { adam_lr: sched(ADAMW_PEAK) }),
    ("psgd-kron", 1e-3, "PSGD-Kron (triangular Kronecker factors, preconditioner updated every step) on hidden matrices; AdamW as above on the rest", PsgdKronLm, PsgdKronLmConfig { adam_lr: sched(ADAMW_PEAK) }),
    ("prodigy", 1.0, "Prodigy (step size d estimated from d0 = 1e-6; lr multiplies d), betas (0.9, 0.999), no weight decay", Prodigy, ProdigyConfig {}),
    ("adamw-bf16", ADAMW_PEAK, "AdamW as above with both moments stored in bf16 (round to nearest)", AdamWBf16, AdamWBf16Config { beta2: 0.99, weight_decay: 0.1 }),
    ("adamw-8bit", ADAMW_PEAK, "AdamW as above with 8-bit block-wise moments (blocks of 256, dynamic maps)", AdamW8bit, AdamW8bitConfig { beta2: 0.99, weight_decay: 0.1 }),
}
