#![doc = include_str!("../README.md")]

mod access;
#[cfg(feature = "candle-cuda")]
mod cuda;
mod host;
mod names;
mod optimizer;

#[doc(hidden)]
pub use access::{with_storage, with_storage_16, StorageBody, StorageBody16};
pub use names::{module_of, varmap_entries, VarNames};
pub use optimizer::{
    compile_cuda_kernels, cuda_device, CandleConfig, CandleOptimizer, CandleUpdate, HyperOrFlag,
};
