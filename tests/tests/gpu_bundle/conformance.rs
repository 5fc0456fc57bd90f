//! The `conformance` module of `tests/tests/it` as a binary of its own, built only with feature
//! `cuda`: the GPU bundle builder (`build-gpu-binaries.sh`, see `docs/gpu.md`) runs the reference
//! trajectories of the cuda build, GPU-free, from a binary of this name. `cargo test` without
//! `cuda` runs the same module in `it`.

#[path = "../it/conformance.rs"]
mod conformance;
