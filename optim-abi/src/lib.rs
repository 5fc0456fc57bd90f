//! The contract between the code `optimizer!` generates and the runtime that runs it: limits that
//! both sides must agree on. The macro (`optim-macros`) checks a declaration against them at
//! compile time, with an error on the user's token; the runtime (`optim-runtime`) sizes its
//! buffers with them. Keeping them here, in a crate with no dependencies, lets the proc macro
//! know them without depending on the runtime (which would build dfdx and faer twice). The
//! hyperparameter [`Domain`]s live here for the same reason: the macro checks literal defaults
//! against them, the runtime checks every value at every step.

/// Most per-tensor reductions (`norm`, `rms`, `sum`, `mean`, `trust_ratio`, `graft` and the
/// per-parameter part of global reductions) that one loop of a rule may accumulate.
pub const MAX_REDUCTIONS: usize = 8;

/// Most global reductions (`global_norm`, `clip_global_norm`) one optimizer may declare in one
/// rule; each has its own id, and the executor sums every parameter's share of id `k` before the
/// next loop.
pub const MAX_GLOBALS: usize = 4;

/// Most flags one rule may read: each combination of their values is compiled into its own
/// kernels, so a rule reading `k` flags expands into `2^k` variants.
pub const MAX_FLAGS_PER_RULE: usize = 6;

/// Most state and scratch streams (besides `param` and `grad`) that one loop may read or write
/// on CUDA: a launch passes the packed scalars, `param`, `grad`, the reduction buffer and one
/// pointer per stream, and cudarc 0.9 launches at most 12 arguments.
pub const MAX_CUDA_STREAMS: usize = 8;

/// Elements per piece when a loop is split: each loop runs over pieces of this many elements,
/// and per-tensor reductions are summed piece by piece in order, so a total never depends on
/// how many threads ran or how large the whole step was. 32 Ki elements keep every stream of a
/// piece (128 KiB in `f32`) in L2.
pub const CHUNK: usize = 1 << 15;

/// The set of valid values of a hyperparameter. Every domain also requires a finite value.
///
/// The macro assigns a domain from the hyperparameter's role: the `beta` argument of
/// `momentum`/`ema`/`second_moment` is [`Domain::UnitOpen`]; names follow PyTorch's checks
/// (`lr*`, `weight_decay`, `momentum`, `dampening` non-negative; `eps*` positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Any finite value.
    Finite,
    /// `x >= 0`.
    NonNegative,
    /// `x > 0`.
    Positive,
    /// `0 <= x < 1` (EMA coefficients, betas).
    UnitOpen,
    /// `0 <= x <= 1`.
    UnitClosed,
    /// `x <= 0` (e.g. Adafactor's `beta2_decay`).
    NonPositive,
    /// A whole number `>= 1` (iteration counts, refresh intervals, sizes).
    Count,
}

impl Domain {
    /// The domain in words, as used in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Domain::Finite => "a finite value",
            Domain::NonNegative => "a finite value >= 0",
            Domain::Positive => "a finite value > 0",
            Domain::UnitOpen => "a value in [0, 1)",
            Domain::UnitClosed => "a value in [0, 1]",
            Domain::NonPositive => "a finite value <= 0",
            Domain::Count => "a whole number >= 1",
        }
    }

    /// Whether `x` lies in this domain.
    pub fn contains(self, x: f64) -> bool {
        x.is_finite()
            && match self {
                Domain::Finite => true,
                Domain::NonNegative => x >= 0.0,
                Domain::Positive => x > 0.0,
                Domain::UnitOpen => (0.0..1.0).contains(&x),
                Domain::UnitClosed => (0.0..=1.0).contains(&x),
                Domain::NonPositive => x <= 0.0,
                Domain::Count => x >= 1.0 && x.fract() == 0.0,
            }
    }
}
