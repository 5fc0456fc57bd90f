#![doc = include_str!("../README.md")]

mod access;
mod host;
mod names;
mod optimizer;

#[doc(hidden)]
pub use access::{with_storage, StorageBody};
pub use names::{module_of, varmap_entries, VarNames};
pub use optimizer::{CandleConfig, CandleOptimizer, CandleUpdate, HyperOrFlag};
