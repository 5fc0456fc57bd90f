//! The DSL's words. Each word has one home, in the file of its family: its catalog entry (name,
//! arguments and their roles), and its lowering (what dataflow nodes it becomes). Element-wise
//! functions also define their runtime function name and CUDA twin there (`ir::FuncDef`), and
//! whole-tensor primitives their runtime type and state (`ir::MatDef`).
//!
//! - `math`: stateless element-wise math (`sqrt`, `max`, `lerp`, `select`, ...);
//! - `moments`: stateful element-wise words (`momentum`, `second_moment`, `state`, `debias`, ...);
//! - `reductions`: per-tensor and global reductions and the words built on them (`norm`,
//!   `trust_ratio`, `graft`, `clip_global_norm`, ...);
//! - `decay`: weight decay in its conventions (`l2`, `decoupled_decay`);
//! - `matrix`: whole-tensor primitives (`orthogonalize`, `kron_precondition`, ...).
//!
//! Argument binding and role checking are shared (`lower/call.rs`); defaults live in the runtime
//! (a matrix primitive's config `Default`), never here.

use crate::ir::NodeId;
use crate::lower::{Call, Lowerer};

mod decay;
pub(crate) mod math;
pub(crate) mod matrix;
mod moments;
mod ns_coeffs;
mod reductions;

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
    /// A compile-time Newton–Schulz coefficient schedule: a preset name or a list of literal
    /// `(a, b, c)` triples. Not an expression: the word reads its syntax (`Call::raw`), and it is
    /// passed to the config as a constant (`ir::MatNode::consts`), not as a host value.
    Coeffs,
    /// A compile-time count of leading batch axes (`batch = 1`): a whole-number literal `>= 0`,
    /// read from the syntax like `Coeffs` and passed to the runtime's `matrix::Call::batch`
    /// (`ir::MatConst::Batch`), not to the config.
    Batch,
}

impl Role {
    /// Whether the argument is a compile-time constant its word reads from the syntax (no
    /// dataflow node, not a config field set from a host value).
    pub(crate) fn is_const(self) -> bool {
        matches!(self, Role::Coeffs | Role::Batch)
    }
}

/// One argument.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arg {
    pub name: &'static str,
    pub role: Role,
    /// Positional arguments are required; named (`name = value`) ones are optional.
    pub positional: bool,
}

/// A required positional argument.
pub(crate) const fn pos(name: &'static str, role: Role) -> Arg {
    Arg {
        name,
        role,
        positional: true,
    }
}

/// An optional named argument (`name = value`).
pub(crate) const fn named(name: &'static str, role: Role) -> Arg {
    Arg {
        name,
        role,
        positional: false,
    }
}

/// The argument list `(x)` of a one-value word.
const X: &[Arg] = &[pos("x", Role::Value)];

/// A word usable anywhere (not only on matrices), with its arguments and lowering.
pub(crate) const fn word(name: &'static str, args: &'static [Arg], lower: LowerFn) -> Entry {
    Entry {
        name,
        args,
        matrix_only: false,
        lower,
    }
}

/// A word that needs the parameter as a matrix (see [`Entry::matrix_only`]).
pub(crate) const fn matrix_word(name: &'static str, args: &'static [Arg], lower: LowerFn) -> Entry {
    Entry {
        name,
        args,
        matrix_only: true,
        lower,
    }
}

/// A word of one value argument `x`, usable anywhere.
pub(crate) const fn unary(name: &'static str, lower: LowerFn) -> Entry {
    word(name, X, lower)
}

/// How a word lowers: it receives the call with its arguments bound and checked.
pub(crate) type LowerFn = fn(&mut Lowerer<'_, '_>, &Call<'_>) -> NodeId;

/// A catalog entry.
pub(crate) struct Entry {
    pub name: &'static str,
    pub args: &'static [Arg],
    /// Needs the parameter as a matrix: allowed only in rules that match nothing but matrices
    /// (`matrix`) or reshaped tensors (`tensor`).
    pub matrix_only: bool,
    pub lower: LowerFn,
}

impl Entry {
    /// `momentum(x, beta, dampening = …, nesterov = …)`, for error messages.
    pub(crate) fn signature(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.positional {
                    a.name.to_string()
                } else {
                    format!("{} = …", a.name)
                }
            })
            .collect();
        format!("{}({})", self.name, args.join(", "))
    }
}

/// Every family's entries.
const FAMILIES: &[&[Entry]] = &[
    math::WORDS,
    decay::WORDS,
    moments::WORDS,
    reductions::WORDS,
    matrix::WORDS,
];

/// Every DSL word, in family order.
pub(crate) fn all() -> impl Iterator<Item = &'static Entry> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// Looks a word up.
pub(crate) fn lookup(name: &str) -> Option<&'static Entry> {
    all().find(|e| e.name == name)
}

/// Every element-wise function (for the CUDA prelude).
pub(crate) fn funcs() -> &'static [&'static crate::ir::FuncDef] {
    math::FUNCS
}

/// Names that always exist inside a rule.
pub(crate) const BUILTINS: &[&str] = &[
    "grad", "param", "step", "rows", "cols", "numel", "fan_in", "fan_out",
];

/// Names a hyperparameter may not take.
pub(crate) const RESERVED: &[&str] = &[
    "grad", "param", "step", "rows", "cols", "numel", "fan_in", "fan_out", "name", "rank",
];

/// Why a hyperparameter may not take `name`, and whether `name` is a builtin of rule bodies.
pub(crate) fn reserved_hyper(name: &str) -> Option<(String, bool)> {
    if RESERVED.contains(&name) {
        Some((
            format!("`{name}` is a reserved name and cannot be a hyperparameter"),
            true,
        ))
    } else if name == "config" {
        Some(("`config` cannot be a hyperparameter: its setter `set_config` would clash with the optimizer's own `set_config`".to_string(), false))
    } else if name.starts_with("__") {
        Some((
            format!("`{name}` cannot be a hyperparameter: names starting with `__` are reserved for generated items"),
            false,
        ))
    } else {
        None
    }
}
