//! The `runtime` module of `tests/tests/it` as a binary of its own, built only with feature
//! `cuda` (for the GPU bundle builder; see `conformance.rs` beside this file).

#[path = "../it/runtime.rs"]
mod runtime;
