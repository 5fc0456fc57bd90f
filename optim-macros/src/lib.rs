//! The `optimizer!` procedural macro of optim-dsl. Use it through the `optim-dsl` crate, which
//! re-exports it together with the runtime the generated code calls.
//!
//! Pipeline (one stage per file or folder, called in order by `driver`):
//! `parse` (the declaration as written) → `lower` (resolve names, expand each DSL word from
//! `words` into the `ir` dataflow graph) → `check` (whole-rule rules) → `plan` (flag
//! specialisation, dead-code elimination, stages and barriers, one `loop_ir` per loop) → `emit`
//! (Rust items; the loops printed by `emit/rust_loop.rs` and, as CUDA C, by `emit/cuda.rs`). On
//! error, `fallback` emits the errors plus stub items so that one mistake gives one error.
//! Errors are accumulated in `errors::Errors` (`cx`) and reported at the offending tokens. The
//! macro never panics. Limits shared with the runtime come from `optim-abi`.

mod check;
mod driver;
mod emit;
mod errors;
#[cfg(test)]
mod expand_cost;
mod fallback;
mod ir;
mod loop_ir;
mod lower;
mod parse;
mod plan;
mod private;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_loop_ir;
mod words;

/// Declares an optimizer. See the `optim-dsl` crate documentation for the language.
#[proc_macro]
pub fn optimizer(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    driver::optimizer(input.into()).into()
}
