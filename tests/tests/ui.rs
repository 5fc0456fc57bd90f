//! Compile-fail and must-compile cases for `optimizer!` (trybuild). Each case under `ui/` starts
//! with a comment stating the mistake and the diagnostic we want; the `.stderr` next to a
//! `-fail.rs` case is the expected compiler output. Bless with
//! `TRYBUILD=overwrite cargo test -p optim-tests --test ui` and review the diff (see README.md).
//!
//! `.stderr` text depends on the compiler version; the files are blessed with the toolchain in
//! use when they were written (rustc 1.95).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*/*-fail.rs");
    t.pass("ui/pass/*-pass.rs");
}
