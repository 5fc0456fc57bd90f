//! The `optimizer!` procedural macro of optim-dsl. Use it through the `optim-dsl` crate, which
//! re-exports it together with the runtime the generated code calls.
//!
//! Pipeline (one file per stage):
//! `ast` (parse, as written) → `lower` (resolve names against `catalog`, build the `ir` dataflow
//! graph) → `check` (cross-cutting rules) → `plan` (flag specialisation, dead-code elimination,
//! fusion into kernels, hoisting of scalars) → `emit` (Rust code). On error, `fallback` emits the
//! errors plus stub items so that one mistake gives one error. Errors are accumulated in
//! `errors::Errors` (`cx`) and reported at the offending tokens. The macro never panics.

mod ast;
mod catalog;
mod check;
mod emit;
mod emit_cuda;
mod errors;
mod expand;
mod fallback;
mod ir;
mod lower;
mod plan;
mod private;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cuda;

/// Declares an optimizer. See the `optim-dsl` crate documentation for the language.
#[proc_macro]
pub fn optimizer(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand::optimizer(input.into()).into()
}
