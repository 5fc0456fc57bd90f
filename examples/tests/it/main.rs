//! The integration tests of the examples crate in one test binary (`cargo test -p examples --test
//! it`; filter by module, e.g. `--test it charlm::`), so dfdx and the models are linked once.
//!
//! **Adding a test file:** put it at `examples/tests/it/<name>.rs` and add `mod <name>;`
//! below, in alphabetical order. All modules share one process: no environment variables or global
//! thread pool, and temporary files named after the test and `std::process::id()`.

mod charlm;
mod lowp_digits;
mod training;
