//! The zoo optimizers that the training comparisons run, by name, behind one object-safe trait.
//!
//! [`DslOptimizer`] is generic over the model in `update`, so it cannot be a trait object;
//! [`ModelOptimizer`] fixes the model type and is implemented for every DSL optimizer, so a
//! comparison can hold `Box<dyn ModelOptimizer<M>>`s built from names.
//!
//! The table below is the single list that `examples/examples/compare.rs` and the tests in
//! `examples/tests/` iterate over: **adding an optimizer to the comparison is one line** here,
//! `("name", peak_lr, "summary", Type, TypeConfig { field: value, ... })`, listing the config
//! fields that differ from the zoo type's defaults, other than `lr` (which the comparison sets
//! to its warmup-cosine schedule); each value is converted with `.into()` (`0.9` for a `Hyper`,
//! `true` for a flag).
//!
//! ```
//! use examples::model::MlpModel;
//! use examples::optimizers::{self, ModelOptimizer};
//!
//! assert!(optimizers::names().contains(&"adamw"));
//! let spec = optimizers::spec("adamw").unwrap();
//! let mut opt: Box<dyn ModelOptimizer<MlpModel<4, 8, 2>>> =
//!     optimizers::build("adamw", spec.peak_lr.into()).unwrap();
//! assert_eq!(opt.name(), "AdamW");
//! ```

use dfdx::nn::TensorCollection;
use dfdx::tensor::{Cpu, Gradients};
use optim_dsl::kfac::{KfacReport, KfacStats};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{
    Adafactor, AdafactorConfig, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Lamb,
    LambConfig, Lion, LionConfig, Muon, MuonConfig, RMSprop, RMSpropConfig, Sgd, SgdConfig,
    Shampoo, ShampooConfig, Soap, SoapConfig,
};
use optim_dsl::OptState;

/// A DSL optimizer for models of type `M`, usable as a trait object.
///
/// Implemented for every [`DslOptimizer<f32>`]; `step` is [`DfdxUpdate::update`].
pub trait ModelOptimizer<M> {
    /// One optimizer step on `model` with the gradients in `grads` (see
    /// [`DfdxUpdate::update`]; nothing is modified on error).
    fn step(&mut self, model: &mut M, grads: &mut Gradients<f32, Cpu>) -> Result<(), OptimError>;
    /// The optimizer's type name (`"AdamW"`).
    fn name(&self) -> &'static str;
    /// The execution plan (kernels, state buffers, bytes moved per parameter).
    fn plan(&self) -> Plan;
    /// Bytes of the optimizer's state buffers, read from its state: every allocated
    /// per-parameter buffer (moments, momentum, Kronecker statistics and eigenbases) at its
    /// stored size: `size_of::<f32>()` per element for `f32` state, 2 bytes for `bf16`/`f16`
    /// state, 1 byte plus one `f32` scale per block of 256 for 8-bit state. Not counted: per-parameter scalars and step counts, the
    /// matrix primitives' reusable workspaces and the dfdx path's staging copies. 0 before the
    /// first step (state is allocated lazily).
    fn state_bytes(&self) -> usize;
    /// For every parameter the optimizer has state for (all of them after the first step):
    /// its name, the index of the rule it was routed to (the order of the rules in the
    /// optimizer's declaration) and that rule's state buffer names.
    fn routing(&self) -> Vec<(String, usize, &'static [&'static str])>;
    /// `stats.update(model, grads, self)`: folds the K-FAC statistics that `model`'s
    /// `KfacLinear` layers recorded during the last backward into `stats`' running factors
    /// and, when due, hands them to this optimizer (`set_kron_factors`); call it before
    /// [`step`](Self::step). See `optim_dsl::kfac::KfacStats::update` for the errors.
    fn kfac_update(
        &mut self,
        stats: &mut KfacStats,
        model: &mut M,
        grads: &mut Gradients<f32, Cpu>,
    ) -> Result<KfacReport, OptimError>;
}

impl<M, O> ModelOptimizer<M> for O
where
    M: TensorCollection<f32, Cpu>,
    O: DslOptimizer<f32>,
{
    fn step(&mut self, model: &mut M, grads: &mut Gradients<f32, Cpu>) -> Result<(), OptimError> {
        self.update(model, grads)
    }

    fn name(&self) -> &'static str {
        <O::Config as OptimizerConfig>::NAME
    }

    fn plan(&self) -> Plan {
        self.explain()
    }

    fn state_bytes(&self) -> usize {
        state_bytes(self.opt_state())
    }

    fn routing(&self) -> Vec<(String, usize, &'static [&'static str])> {
        routing(self.opt_state(), O::state_names)
    }

    fn kfac_update(
        &mut self,
        stats: &mut KfacStats,
        model: &mut M,
        grads: &mut Gradients<f32, Cpu>,
    ) -> Result<KfacReport, OptimError> {
        stats.update(model, grads, self)
    }
}

/// [`ModelOptimizer::state_bytes`] of an optimizer state (one copy for every optimizer and
/// model).
fn state_bytes(state: &OptState<f32>) -> usize {
    state
        .params
        .values()
        .map(|p| {
            let full = p.buffers.iter().map(Vec::len).sum::<usize>() * std::mem::size_of::<f32>();
            let low: usize = p
                .low
                .iter()
                .map(|b| std::mem::size_of_val(&b.bits[..]))
                .sum();
            let q8: usize =
                p.q8.iter()
                    .map(|b| b.codes.len() + 4 * b.scales.len())
                    .sum();
            full + low + q8
        })
        .sum()
}

/// [`ModelOptimizer::routing`] of an optimizer state, with the optimizer's
/// `DslOptimizer::state_names` (one copy for every optimizer and model).
fn routing(
    state: &OptState<f32>,
    state_names: fn(usize) -> &'static [&'static str],
) -> Vec<(String, usize, &'static [&'static str])> {
    state
        .params
        .iter()
        .map(|(name, p)| (name.clone(), p.rule, state_names(p.rule)))
        .collect()
}

/// One entry of the comparison's optimizer table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerSpec {
    /// Command-line name (lower case), e.g. `"adamw"`.
    pub name: &'static str,
    /// Peak learning rate of the warmup-cosine schedule, chosen for the digits MLP of the
    /// comparison (see the comment above the table for how).
    pub peak_lr: f64,
    /// One-line description.
    pub summary: &'static str,
    /// The non-default hyperparameters other than `lr`, as written in the table
    /// (`"momentum = 0.9, nesterov = true"`).
    pub settings: &'static str,
}

/// Why [`build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No optimizer of that name is in the table.
    #[error("unknown optimizer `{name}`; known: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// The optimizer rejected its configuration.
    #[error("cannot build `{name}`: {source}")]
    Config {
        /// The name asked for.
        name: String,
        /// The optimizer's error.
        #[source]
        source: OptimError,
    },
}

/// Defines, from one line per optimizer,
/// `("name", peak_lr, "summary", Type, TypeConfig { field: value, ... })`:
/// `OPTIMIZERS` (the [`OptimizerSpec`]s, in order), `build::<M>(name, args...)` (the optimizer
/// called `name` as a boxed [`ModelOptimizer`], with `lr` set to the given expression of
/// `build`'s arguments and each listed field to its value `.into()`, the rest default),
/// `names()` and `spec(name)`. The values may use `build`'s arguments. Used by this table and by
/// [`crate::charlm::optimizers`].
macro_rules! optimizer_table {
    (
        $(#[$table_doc:meta])* const OPTIMIZERS;
        $(#[$build_doc:meta])* fn build($($arg:ident: $arg_ty:ty),*) with lr = $lr:expr;
        $(
            ($key:literal, $peak:expr, $summary:literal, $ty:ident,
             $cfg:ident { $($field:ident : $val:expr),* $(,)? })
        ),* $(,)?
    ) => {
        $(#[$table_doc])*
        pub const OPTIMIZERS: &[OptimizerSpec] = &[$(
            OptimizerSpec {
                name: $key,
                peak_lr: $peak,
                summary: $summary,
                settings: stringify!($($field = $val),*),
            },
        )*];

        $(#[$build_doc])*
        ///
        /// # Errors
        /// [`BuildError::Unknown`] for a name not in the table; [`BuildError::Config`] if the
        /// optimizer rejects its configuration.
        pub fn build<M>(
            name: &str,
            $($arg: $arg_ty),*
        ) -> Result<Box<dyn ModelOptimizer<M>>, BuildError>
        where
            M: TensorCollection<f32, Cpu>,
        {
            let config_err = |source| BuildError::Config { name: name.to_string(), source };
            match name {
                $(
                    $key => Ok(Box::new(
                        $ty::<f32>::new($cfg {
                            lr: $lr,
                            $($field: ($val).into(),)*
                            ..Default::default()
                        })
                        .map_err(config_err)?,
                    )),
                )*
                _ => Err(BuildError::Unknown {
                    name: name.to_string(),
                    known: names().join(", "),
                }),
            }
        }

        /// The names of [`OPTIMIZERS`], in order.
        pub fn names() -> Vec<&'static str> {
            OPTIMIZERS.iter().map(|s| s.name).collect()
        }

        /// The table entry called `name`, if any.
        pub fn spec(name: &str) -> Option<&'static OptimizerSpec> {
            OPTIMIZERS.iter().find(|s| s.name == name)
        }
    };
}
pub(crate) use optimizer_table;

// Peak learning rates: for each optimizer, the value with the lowest final test loss in a sweep
// over half-decades (…, 1e-3, 3e-3, 1e-2, …) of `compare --lr NAME=VALUE` on the default digits
// run (64-128-128-10 MLP, batch 64, 1,000 steps, warmup-cosine); Lion instead gets a tenth of
// AdamW's peak (the Lion paper's rule; its lowest-test-loss peak, 3e-4, trains far slower). The
// sweep and the reasons are recorded in compare.rs's docs. Add an optimizer with one line:
// ("name", peak lr, "summary", Type, TypeConfig { non-default fields other than lr }).
optimizer_table! {
    /// Every optimizer the comparison knows, in display order.
    const OPTIMIZERS;
    /// Builds the optimizer called `name` (see [`OPTIMIZERS`]) with learning rate `lr`
    /// (a constant or a schedule) and the table's other settings.
    fn build(lr: Hyper) with lr = lr;
    ("sgd", 0.1, "SGD with Nesterov momentum 0.9", Sgd, SgdConfig { momentum: 0.9, nesterov: true }),
    ("adamw", 1e-2, "AdamW, betas (0.9, 0.999), decoupled weight decay 0.01", AdamW, AdamWConfig {}),
    ("lion", 1e-3, "Lion, betas (0.9, 0.99), decoupled weight decay 0.1", Lion, LionConfig { weight_decay: 0.1 }),
    ("adam", 1e-2, "Adam, betas (0.9, 0.999), no weight decay", Adam, AdamConfig {}),
    ("rmsprop", 1e-2, "RMSprop, alpha 0.99, no momentum", RMSprop, RMSpropConfig {}),
    ("adagrad", 0.1, "Adagrad, no lr decay", Adagrad, AdagradConfig {}),
    ("muon", 5e-3, "Muon on hidden matrices (Nesterov 0.95, 5 Newton-Schulz steps); AdamW lr 3e-3 on the rest", Muon, MuonConfig { adam_lr: 3e-3 }),
    ("adafactor", 1e-1, "Adafactor, relative step min(lr, 1/sqrt(t)), factored second moments", Adafactor, AdafactorConfig {}),
    ("shampoo", 1e-2, "Shampoo with Adam grafting, inverse roots every 10 steps", Shampoo, ShampooConfig { update_freq: 10.0 }),
    ("soap", 3e-3, "SOAP, betas (0.95, 0.95), eigenbasis refresh every 10 steps", Soap, SoapConfig { precondition_frequency: 10.0 }),
    ("lamb", 3e-3, "LAMB, betas (0.9, 0.999), trust ratio per tensor", Lamb, LambConfig {}),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MlpModel;

    #[test]
    fn every_entry_builds_and_names_are_unique() {
        for s in OPTIMIZERS {
            let opt = build::<MlpModel<2, 2, 2>>(s.name, s.peak_lr.into()).unwrap();
            assert!(!opt.name().is_empty());
            assert!(s.peak_lr > 0.0);
        }
        let mut n = names();
        n.sort_unstable();
        n.dedup();
        assert_eq!(n.len(), OPTIMIZERS.len());
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = build::<MlpModel<2, 2, 2>>("nope", 0.1.into())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown optimizer `nope`"), "{err}");
        assert!(err.contains("adamw"), "{err}");
    }

    #[test]
    fn bad_config_is_reported_with_the_name() {
        // `new` checks every hyperparameter at step 0 against its domain.
        let err = build::<MlpModel<2, 2, 2>>("sgd", (-1.0).into())
            .err()
            .unwrap();
        assert!(matches!(err, BuildError::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("cannot build `sgd`"), "{err}");
    }
}
