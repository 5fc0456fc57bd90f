//! The integration tests of optim-dist in one test binary (`cargo test -p optim-dist --test it`;
//! filter by module, e.g. `--test it bit_identity::`), so optim-dsl, dfdx and the examples
//! crate are linked once rather than once per file. `common` holds the shared models and runs.
//!
//! **Adding a test file:** put it at `optim-dist/tests/it/<name>.rs` and add `mod <name>;`
//! below, in alphabetical order. All modules share one process: no environment variables or global
//! thread pool, and temporary files named after the test and `std::process::id()`.

mod agreement;
mod bit_identity;
mod checkpoint;
mod comm;
mod common;
mod layout;
mod sync;
