//! The integration tests of optim-dsl in ONE test binary (`cargo test -p optim-tests --test it`).
//!
//! Each former `tests/tests/<name>.rs` is a module here (`it/<name>.rs`), so the dfdx/faer code
//! and the 32-optimizer zoo are compiled and linked once instead of once per file. Filter by
//! module: `cargo test -p optim-tests --test it conformance::` (or `-- --exact …`).
//!
//! **Adding a test file:** put it at `tests/tests/it/<name>.rs` (its `//!` doc becomes the
//! module's doc) and add `mod <name>;` below, in alphabetical order. Helpers shared by several
//! modules go to `tests/src/lib.rs` (`optim_tests::…`), or to `common` here when they need a
//! dev-dependency (rayon, proptest: `no_panic` holds the no-panic strategies); the CUDA zoo
//! tables are in `cuda_common`. All modules share one process: do not set environment variables
//! or configure the global rayon pool (use `common::on_threads`), and name temporary files after
//! the test and `std::process::id()`. A `proptest!` block's regression file sits next to its
//! module (`it/<name>.proptest-regressions`).
//!
//! Kept apart: `ui.rs` (trybuild compiles its cases out of process), `cuda_gpu.rs` (feature
//! `cuda`; the GPU bundle carries that binary alone) and `step_alloc.rs` (it installs a
//! counting global allocator).

mod arithmetic;
mod axis;
mod batched;
mod check_param_config;
mod checkpoint_format;
mod common;
mod conformance;
mod conformance_2026;
mod conformance_matrix2026;
mod conformance_muon_mini;
mod cuda_common;
mod cuda_emulated;
mod cuda_source;
mod dfdx_master;
mod executor;
mod explain_snapshot;
mod fixtures;
mod hostile16;
mod kfac_capture;
mod lowp_state;
mod matrix;
mod matrix2026_no_panic;
mod matrix_edge;
mod matrix_no_panic;
mod messages;
mod metrics;
mod narrow_loops;
mod no_panic;
mod ns_coeffs;
mod q8_state;
mod runtime;
mod schedule_args;
mod schedule_peak;
mod scheduled_decay;
mod schedules;
mod step_contract;
mod toolkit_dsl;
mod toolkit_runtime;
mod words;
mod zoo_no_panic;
