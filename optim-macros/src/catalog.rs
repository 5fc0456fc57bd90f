//! The catalog: every word the DSL knows, with its arguments. One entry per DSL word; the
//! runtime item each one lowers to is named in its doc line (`optim_runtime::ops::*` for math,
//! `ParamState` buffers for stateful primitives). Defaults live in the runtime, not here.

/// Kinds of argument a word takes.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Role {
    /// Any numeric value (per element or per step).
    Value,
    /// A per-step scalar (hyperparameter, literal, shape scalar, `step`).
    Scalar,
    /// An EMA coefficient: a per-step scalar in [0, 1); literal values are checked at compile time.
    Beta,
    /// A flag: `true`, `false` or a flag hyperparameter.
    Flag,
    /// A boolean condition (flag, per-step or per-element comparison).
    Cond,
    /// A state's initial value: a per-step scalar, or a per-element value copied on the first step.
    Init,
    /// A count (iterations, refresh interval, size): a per-step whole number >= 1; literal values
    /// are checked at compile time.
    Count,
}

/// One argument.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arg {
    pub name: &'static str,
    pub role: Role,
    /// Positional arguments are required; named (`name = value`) ones are optional.
    pub positional: bool,
}

const fn pos(name: &'static str, role: Role) -> Arg {
    Arg {
        name,
        role,
        positional: true,
    }
}
const fn named(name: &'static str, role: Role) -> Arg {
    Arg {
        name,
        role,
        positional: false,
    }
}

/// What a word lowers to.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Word {
    // stateless element-wise math (runtime: `optim_runtime::ops`)
    Sqrt,
    Rsqrt,
    Abs,
    Sign,
    Exp,
    Ln,
    Max,
    Min,
    Clamp,
    Pow,
    Lerp,
    Select,
    // stateful primitives (runtime: one `ParamState` buffer or scalar each)
    Momentum,
    Ema,
    SecondMoment,
    Accumulate,
    RunningMax,
    State,
    ScalarState,
    Cumprod,
    Debias,
    // per-tensor reductions (barriers)
    Norm,
    Rms,
    Sum,
    Mean,
    TrustRatio,
    // global (all parameters)
    GlobalNorm,
    ClipGlobalNorm,
    ClipValue,
    // matrix primitives (barriers)
    Orthogonalize,
    FactoredSecondMoment,
    KronPrecondition,
    Graft,
    KfacPrecondition,
    KronEigenbasis,
    Rotate,
    Unrotate,
}

/// A catalog entry.
pub(crate) struct Entry {
    pub name: &'static str,
    pub word: Word,
    pub args: &'static [Arg],
    /// One-line description used in error messages (`momentum(x, beta, dampening = d, nesterov = f)`).
    pub signature: &'static str,
}

use Role::*;

/// Every DSL word.
pub(crate) const CATALOG: &[Entry] = &[
    Entry {
        name: "sqrt",
        word: Word::Sqrt,
        args: &[pos("x", Value)],
        signature: "sqrt(x)",
    },
    Entry {
        name: "rsqrt",
        word: Word::Rsqrt,
        args: &[pos("x", Value)],
        signature: "rsqrt(x)",
    },
    Entry {
        name: "abs",
        word: Word::Abs,
        args: &[pos("x", Value)],
        signature: "abs(x)",
    },
    Entry {
        name: "sign",
        word: Word::Sign,
        args: &[pos("x", Value)],
        signature: "sign(x)",
    },
    Entry {
        name: "exp",
        word: Word::Exp,
        args: &[pos("x", Value)],
        signature: "exp(x)",
    },
    Entry {
        name: "ln",
        word: Word::Ln,
        args: &[pos("x", Value)],
        signature: "ln(x)",
    },
    Entry {
        name: "max",
        word: Word::Max,
        args: &[pos("a", Value), pos("b", Value)],
        signature: "max(a, b)",
    },
    Entry {
        name: "min",
        word: Word::Min,
        args: &[pos("a", Value), pos("b", Value)],
        signature: "min(a, b)",
    },
    Entry {
        name: "clamp",
        word: Word::Clamp,
        args: &[pos("x", Value), pos("lo", Value), pos("hi", Value)],
        signature: "clamp(x, lo, hi)",
    },
    Entry {
        name: "pow",
        word: Word::Pow,
        args: &[pos("x", Value), pos("y", Value)],
        signature: "pow(x, y)",
    },
    Entry {
        name: "lerp",
        word: Word::Lerp,
        args: &[pos("a", Value), pos("b", Value), pos("t", Value)],
        signature: "lerp(a, b, t)",
    },
    Entry {
        name: "select",
        word: Word::Select,
        args: &[pos("cond", Cond), pos("a", Value), pos("b", Value)],
        signature: "select(cond, a, b)",
    },
    Entry {
        name: "momentum",
        word: Word::Momentum,
        args: &[
            pos("x", Value),
            pos("beta", Beta),
            named("dampening", Scalar),
            named("nesterov", Flag),
        ],
        signature: "momentum(x, beta, dampening = d, nesterov = flag)",
    },
    Entry {
        name: "ema",
        word: Word::Ema,
        args: &[pos("x", Value), pos("beta", Beta), named("init", Init)],
        signature: "ema(x, beta, init = v)",
    },
    Entry {
        name: "second_moment",
        word: Word::SecondMoment,
        args: &[pos("x", Value), pos("beta", Beta)],
        signature: "second_moment(x, beta)",
    },
    Entry {
        name: "accumulate",
        word: Word::Accumulate,
        args: &[pos("x", Value), named("init", Init)],
        signature: "accumulate(x, init = v)",
    },
    Entry {
        name: "running_max",
        word: Word::RunningMax,
        args: &[pos("x", Value), named("decay", Scalar)],
        signature: "running_max(x, decay = d)",
    },
    Entry {
        name: "state",
        word: Word::State,
        args: &[pos("init", Init)],
        signature: "state(init)",
    },
    Entry {
        name: "scalar_state",
        word: Word::ScalarState,
        args: &[pos("init", Scalar)],
        signature: "scalar_state(init)",
    },
    Entry {
        name: "cumprod",
        word: Word::Cumprod,
        args: &[pos("x", Scalar)],
        signature: "cumprod(x)",
    },
    Entry {
        name: "debias",
        word: Word::Debias,
        args: &[pos("x", Value)],
        signature: "debias(x)",
    },
    Entry {
        name: "norm",
        word: Word::Norm,
        args: &[pos("x", Value)],
        signature: "norm(x)",
    },
    Entry {
        name: "rms",
        word: Word::Rms,
        args: &[pos("x", Value)],
        signature: "rms(x)",
    },
    Entry {
        name: "sum",
        word: Word::Sum,
        args: &[pos("x", Value)],
        signature: "sum(x)",
    },
    Entry {
        name: "mean",
        word: Word::Mean,
        args: &[pos("x", Value)],
        signature: "mean(x)",
    },
    Entry {
        name: "trust_ratio",
        word: Word::TrustRatio,
        args: &[pos("w", Value), pos("u", Value)],
        signature: "trust_ratio(w, u)",
    },
    Entry {
        name: "global_norm",
        word: Word::GlobalNorm,
        args: &[pos("x", Value)],
        signature: "global_norm(x)",
    },
    Entry {
        name: "clip_global_norm",
        word: Word::ClipGlobalNorm,
        args: &[pos("x", Value), pos("max_norm", Scalar)],
        signature: "clip_global_norm(x, max_norm)",
    },
    Entry {
        name: "clip_value",
        word: Word::ClipValue,
        args: &[pos("x", Value), pos("clip", Scalar)],
        signature: "clip_value(x, clip)",
    },
    Entry {
        name: "orthogonalize",
        word: Word::Orthogonalize,
        args: &[
            pos("x", Value),
            named("steps", Count),
            named("a", Scalar),
            named("b", Scalar),
            named("c", Scalar),
            named("eps", Scalar),
        ],
        signature: "orthogonalize(x, steps = 5, a = 3.4445, b = -4.7750, c = 2.0315, eps = 1e-7)",
    },
    Entry {
        name: "factored_second_moment",
        word: Word::FactoredSecondMoment,
        args: &[pos("x", Value), pos("beta", Beta), named("eps", Scalar)],
        signature: "factored_second_moment(x, beta, eps = f32::EPSILON)",
    },
    Entry {
        name: "kron_precondition",
        word: Word::KronPrecondition,
        args: &[
            pos("x", Value),
            named("beta", Beta),
            named("eps", Scalar),
            named("update_freq", Count),
            named("exponent", Scalar),
            named("max_dim", Count),
        ],
        signature: "kron_precondition(x, beta = (sum), eps = 1e-6, update_freq = 1, exponent = (1/(2k)), max_dim = 8192)",
    },
    Entry {
        name: "graft",
        word: Word::Graft,
        args: &[pos("direction", Value), pos("magnitude", Value)],
        signature: "graft(direction, magnitude)",
    },
    Entry {
        name: "kfac_precondition",
        word: Word::KfacPrecondition,
        args: &[pos("x", Value), named("damping", Scalar)],
        signature: "kfac_precondition(x, damping = 1e-3)",
    },
    Entry {
        name: "kron_eigenbasis",
        word: Word::KronEigenbasis,
        args: &[pos("x", Value), pos("beta", Beta), named("update_freq", Count), named("max_dim", Count)],
        signature: "kron_eigenbasis(grad, beta, update_freq = 10, max_dim = 10000)",
    },
    Entry {
        name: "rotate",
        word: Word::Rotate,
        args: &[pos("x", Value), pos("basis", Value)],
        signature: "rotate(x, basis)",
    },
    Entry {
        name: "unrotate",
        word: Word::Unrotate,
        args: &[pos("x", Value), pos("basis", Value)],
        signature: "unrotate(x, basis)",
    },
];

/// Words that need the parameter as a matrix: allowed only in rules that match nothing but
/// matrices (`matrix`) or reshaped tensors (`tensor`).
pub(crate) fn matrix_only(word: Word) -> bool {
    matches!(word, Word::Orthogonalize)
}

/// Looks a word up.
pub(crate) fn lookup(name: &str) -> Option<&'static Entry> {
    CATALOG.iter().find(|e| e.name == name)
}

/// Names that always exist inside a rule.
pub(crate) const BUILTINS: &[&str] = &[
    "grad", "param", "step", "rows", "cols", "numel", "fan_in", "fan_out",
];

/// Names a hyperparameter may not take.
pub(crate) const RESERVED: &[&str] = &[
    "grad", "param", "step", "rows", "cols", "numel", "fan_in", "fan_out", "name", "rank",
];
