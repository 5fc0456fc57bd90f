//! The runtime error type.

/// Everything that can go wrong when building or stepping an optimizer.
///
/// No error leaves an optimizer half-updated: every check (hyperparameter values at this step,
/// shapes, names) runs before the first parameter or state buffer is written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyperparameter (constant, or a schedule's value at some step) is outside its domain.
    #[error("invalid hyperparameter `{name}` of `{optimizer}`: {value} at step {step}; expected {expected}")]
    InvalidHyperparameter {
        /// Name of the optimizer type (`"AdamW"`).
        optimizer: &'static str,
        /// Name of the hyperparameter (`"beta1"`).
        name: &'static str,
        /// The offending value.
        value: f64,
        /// The global step at which the value was taken (0 when set).
        step: u64,
        /// The domain in words (`"a value in [0, 1)"`).
        expected: &'static str,
    },
    /// A parameter's gradient (or a state buffer) does not have as many elements as the parameter.
    #[error("shape mismatch for parameter `{param}`: {detail}")]
    ShapeMismatch {
        /// Parameter name (dfdx path: the dotted module path, `"0.weight"`).
        param: String,
        /// What differs, in words.
        detail: String,
    },
    /// Two parameters passed to one `update_slices` call share a name (state is keyed by name).
    #[error("parameter name `{0}` appears twice in one update; state is keyed by parameter name")]
    DuplicateParam(String),
    /// A config field name that the optimizer does not have, or a value of the wrong kind.
    #[error("`{optimizer}` has no {kind} named `{name}`")]
    UnknownField {
        /// Name of the optimizer type.
        optimizer: &'static str,
        /// The name asked for.
        name: String,
        /// `"hyperparameter"` or `"flag"`.
        kind: &'static str,
    },
    /// The device reported an error (dfdx `Cpu`/`Cuda` error, as text).
    #[error("device error: {0}")]
    Device(String),
    /// A collective of a data-parallel step failed (the communicator's error, as text; see
    /// `optim-dist`). Every process that can still communicate returns an error for that step.
    #[error("communication error: {0}")]
    Communication(String),
    /// A gradient holds a NaN or an infinity and the optimizer's policy is
    /// [`NonFinitePolicy::Error`](crate::NonFinitePolicy::Error). Nothing was modified.
    #[error("gradient of parameter `{param}` is not finite (it holds a NaN or an infinity)")]
    NonFiniteGradient {
        /// The first parameter (in the order given to the update) with a non-finite gradient.
        param: String,
    },
    /// A checkpoint does not fit the optimizer or [`WeightEma`](crate::WeightEma) it is loaded
    /// into, or its record of one parameter is inconsistent. Nothing was modified.
    #[error("checkpoint does not fit parameter `{param}`: {detail}")]
    CheckpointMismatch {
        /// The parameter (state key) that differs.
        param: String,
        /// What differs, in words.
        detail: String,
    },
    /// A checkpoint could not be written, read or parsed, or it was written by another
    /// optimizer type, element type or configuration. Nothing was modified.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A [`Schedule`](crate::schedule::Schedule) constructor was given an argument it cannot
    /// take: a value that is not finite, a warmup longer than the schedule, a step size or
    /// period of 0, milestones or boundaries out of order, a boundary count that is not one
    /// fewer than the parts, a fraction outside `[0, 1]`, … Nothing was built.
    #[error("invalid argument `{argument}` of `Schedule::{schedule}`: {detail}")]
    InvalidSchedule {
        /// The constructor (`"warmup_cosine"`).
        schedule: &'static str,
        /// The argument, as the constructor names it (`"warmup"`).
        argument: &'static str,
        /// What is wrong with it, in words (with the value).
        detail: String,
    },
    /// A training helper was used out of order or with an invalid setting: a
    /// [`WeightEma`](crate::WeightEma) updated while its averages are swapped into the model or
    /// built with a decay outside `[0, 1)`, a [`GradAccumulator`](crate::GradAccumulator)
    /// averaged before any micro-batch. Nothing was modified.
    #[error("invalid use: {0}")]
    InvalidUse(String),
}
