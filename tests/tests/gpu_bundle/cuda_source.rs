//! The `cuda_source` module of `tests/tests/it` (every generated CUDA source, NVRTC-compiled
//! against its Rust twin on the host) as a binary of its own, built only with feature `cuda`
//! (for the GPU bundle builder; see `conformance.rs` beside this file).

#[path = "../it/cuda_common.rs"]
mod cuda_common;
#[path = "../it/cuda_source.rs"]
mod cuda_source;
