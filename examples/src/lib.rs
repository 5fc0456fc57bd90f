//! Examples for optim-dsl: real data and small models to train with optimizers declared in
//! the `optimizer!` DSL (runnable programs are in `examples/examples/`).
//!
//! - [`data`]: an in-memory [`data::Dataset`] with deterministic stratified splits and
//!   shuffled mini-batches; the UCI handwritten digits embedded in the crate
//!   ([`data::digits`], no download needed); a gzip-aware IDX reader for Fashion-MNIST
//!   ([`data::idx`], from the Debian package `dataset-fashion-mnist` or any directory).
//! - [`charlm`]: a byte-level decoder-only transformer (causal attention from dfdx tensor ops)
//!   on the embedded Shakespeare text ([`data::text`]), and the optimizers compared on it.
//! - [`model`]: a dfdx MLP and training/evaluation loops that take the optimizer step as a
//!   closure, so dfdx's optimizers and DSL-generated ones plug in the same way.
//! - [`optimizers`]: the zoo optimizers the comparisons run, by name, with their peak learning
//!   rates, behind the object-safe [`optimizers::ModelOptimizer`] (one table line per optimizer).

pub mod charlm;
pub mod data;
pub mod model;
pub mod optimizers;
