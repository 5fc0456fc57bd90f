//! The integration tests of optim-candle in one test binary (`cargo test -p optim-candle --test
//! it`; filter by module, e.g. `--test it behaviour::`), so candle, dfdx and the zoo are linked
//! once rather than once per file.
//!
//! **Adding a test file:** put it at `optim-candle/tests/it/<name>.rs` and add `mod <name>;`
//! below, in alphabetical order. All modules share one process: no environment variables or global
//! thread pool, and temporary files named after the test and `std::process::id()`.

mod behaviour;
mod checkpoint_interop;
mod cuda;
mod example_digits;
mod hostile16;
mod narrow;
mod reference_cases;
