//! Stage 2 types, the optimizer as understood: hyperparameters with domains, and per rule a
//! dataflow graph whose nodes are in topological order (operands always precede their users).

use proc_macro2::{Span, TokenStream};
use syn::{Attribute, Ident, Visibility};

pub(crate) type NodeId = usize;

/// How often a value changes: per compile-time flag combination, per step (hoisted to the host,
/// `f64`), or per element (inside the fused loop).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Level {
    Flag,
    Scalar,
    Elem,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Ty {
    pub level: Level,
    pub boolean: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Func {
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
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Num(f64),
    Bool(bool),
    /// Numeric hyperparameter, by index into `Optimizer::hypers`.
    Hyper(usize),
    /// Flag hyperparameter, by index into `Optimizer::hypers`.
    Flag(usize),
    /// The parameter's own step count (1 on its first update).
    Step,
    /// A shape scalar: `rows`, `cols`, `numel`, `fan_in`, `fan_out`.
    Shape(&'static str),
    Param,
    Grad,
    Neg(NodeId),
    Not(NodeId),
    Bin(BinOp, NodeId, NodeId),
    Func(Func, Vec<NodeId>),
    Select(NodeId, NodeId, NodeId),
    /// The stored value of an element-wise state slot (before this step's write).
    StateRead(usize),
    /// Whether a state slot was created during this step.
    First(usize),
    /// The stored value of a scalar state slot.
    ScalarRead(usize),
    /// A per-tensor reduction of an element-wise value: a barrier; its result is a per-step
    /// scalar available to the stages after the one computing the input.
    Reduce(RedKind, NodeId),
    /// A reduction over all parameters (global id): a global barrier.
    Global(RedKind, NodeId, usize),
    /// A whole-tensor matrix primitive: `args[0]` is the element-wise input, the rest are
    /// per-step scalars (`None` = the runtime's default); the last field lists its matrix
    /// state slots (indices into `Fused::mat_slots`).
    Mat(MatOp, Vec<Option<NodeId>>, Vec<usize>),
    /// A Kronecker eigenbasis of the gradient's statistics (SOAP): initialised before the first
    /// use, updated after the step. Args: beta, update_freq, max_dim; state slots: GG, Q. Only
    /// `rotate`/`unrotate` may use it.
    Basis(Vec<Option<NodeId>>, Vec<usize>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RedKind {
    SumSq,
    Sum,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum MatOp {
    /// Newton–Schulz quintic; scalar args: steps, a, b, c, eps.
    Orthogonalize,
    /// Adafactor's factored second moment; args: beta, eps; one state slot.
    Factored,
    /// Shampoo's Kronecker preconditioner; args: beta, eps, update_freq, exponent, max_dim;
    /// state slots: statistics, inverse roots.
    Kron,
    /// K-FAC-style preconditioning with user-supplied factors; args: damping; one state slot
    /// (the cached damped inverses).
    Kfac,
    /// `Q_L^T X Q_R` in a `Basis` (args[1]).
    Rotate,
    /// `Q_L X Q_R^T`.
    Unrotate,
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub op: Op,
    pub ty: Ty,
}

/// An element-wise state buffer.
pub(crate) struct Slot {
    pub name: String,
    /// Per-step scalar initial value (filled at creation), or `None` when the initial value is
    /// per element (handled in the kernel through `First`).
    pub init: Option<NodeId>,
    pub write: Option<NodeId>,
    pub span: Span,
}

/// A scalar (per-parameter, per-step) state.
pub(crate) struct ScalarSlot {
    pub name: String,
    pub init: f64,
    pub write: Option<NodeId>,
    pub span: Span,
}

/// A rule written in the DSL.
pub(crate) struct Fused {
    pub nodes: Vec<Node>,
    pub slots: Vec<Slot>,
    pub scalar_slots: Vec<ScalarSlot>,
    /// Names of matrix-primitive state buffers; buffer index = `slots.len() + i`.
    pub mat_slots: Vec<String>,
    pub param_write: Option<NodeId>,
}

pub(crate) enum RuleBody {
    Fused(Fused),
    /// `_ => Other<name = value, ...>`; values are lowered as flag- or scalar-level expressions
    /// over this optimizer's hyperparameters, in `reuse_nodes`.
    Reuse {
        name: Ident,
        bindings: Vec<(Ident, NodeId, Span)>,
        nodes: Vec<Node>,
    },
}

pub(crate) struct Rule {
    /// Pattern and guard as written, for `explain`.
    pub text: String,
    /// Condition over `info: &ParamInfo` (Rust tokens), `None` for a catch-all.
    pub condition: Option<TokenStream>,
    pub body: RuleBody,
}

pub(crate) struct Hyper {
    pub name: Ident,
    pub default: crate::ast::LitValue,
    pub is_flag: bool,
    pub domain: Domain,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Domain {
    Finite,
    NonNegative,
    Positive,
    UnitOpen,
    NonPositive,
    Count,
}

impl Domain {
    pub(crate) fn contains(self, x: f64) -> bool {
        x.is_finite()
            && match self {
                Domain::Finite => true,
                Domain::NonNegative => x >= 0.0,
                Domain::Positive => x > 0.0,
                Domain::UnitOpen => (0.0..1.0).contains(&x),
                Domain::NonPositive => x <= 0.0,
                Domain::Count => x >= 1.0 && x.fract() == 0.0,
            }
    }
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Domain::Finite => "a finite value",
            Domain::NonNegative => "a finite value >= 0",
            Domain::Positive => "a finite value > 0",
            Domain::UnitOpen => "a value in [0, 1)",
            Domain::NonPositive => "a finite value <= 0",
            Domain::Count => "a whole number >= 1",
        }
    }
}

pub(crate) struct Optimizer {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub hypers: Vec<Hyper>,
    pub rules: Vec<Rule>,
}
