//! Stage 2 output, the optimizer as understood: hyperparameters with domains, rule guards, and
//! per rule a dataflow graph whose nodes are in topological order (operands always precede their
//! users). Produced by `lower`, read by `check`, `plan` and `emit`. Contains no Rust tokens.

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

pub(crate) type NodeId = usize;

/// How often a value changes: per compile-time flag combination, per step (hoisted to the host,
/// `f64`), per row or per column of the parameter's matrix view (an axis reduction and what is
/// computed from it, broadcast back along the other axis), or per element (inside the fused
/// loop).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Level {
    Flag,
    Scalar,
    Row,
    Col,
    Elem,
}

impl Level {
    /// The level of a value computed from values at `self` and `other`: a row and a column
    /// value together vary per element.
    pub(crate) fn join(self, other: Level) -> Level {
        match (self, other) {
            (Level::Row, Level::Col) | (Level::Col, Level::Row) => Level::Elem,
            (a, b) => a.max(b),
        }
    }
    /// A value known once per step (or at compile time).
    pub(crate) fn per_step(self) -> bool {
        matches!(self, Level::Flag | Level::Scalar)
    }
    /// "a per-element value", for messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Level::Flag => "a compile-time value",
            Level::Scalar => "a per-step value",
            Level::Row => "a per-row value",
            Level::Col => "a per-column value",
            Level::Elem => "a per-element value",
        }
    }
    /// A per-row or per-column value.
    pub(crate) fn is_axis(self) -> bool {
        matches!(self, Level::Row | Level::Col)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Ty {
    pub level: Level,
    pub boolean: bool,
}

impl Ty {
    /// A number at `level`.
    pub(crate) const fn num(level: Level) -> Ty {
        Ty {
            level,
            boolean: false,
        }
    }
    /// A condition at `level`.
    pub(crate) const fn cond(level: Level) -> Ty {
        Ty {
            level,
            boolean: true,
        }
    }
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

impl BinOp {
    /// `+`, `<=`, `&&`, …: the operator as written (explain, errors).
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
    /// Arithmetic (a number) rather than a comparison or logic (a condition).
    pub(crate) fn is_arith(self) -> bool {
        matches!(self, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div)
    }
}

/// An element-wise function word: its runtime function is `optim_runtime::ops::{name}` (Rust,
/// used with `E` in loops and with `f64` on the host) and its CUDA twin is the C function `cuda`,
/// defined by `cuda_src` (for `float` and `double`, or generic over the kernel's `T`). Defined
/// next to the word's catalog entry (`words/math.rs`).
#[derive(Debug)]
pub(crate) struct FuncDef {
    /// DSL name = name of the runtime function in `optim_runtime::ops`.
    pub name: &'static str,
    /// Name of the C function in generated CUDA sources.
    pub cuda: &'static str,
    /// C definition of `cuda` (included in every CUDA source).
    pub cuda_src: &'static str,
}

/// A whole-tensor primitive of the runtime (`optim_runtime::matrix::{runtime}`): its type, its
/// state buffers and when it runs. Defined next to the word's catalog entry (`words/matrix.rs`).
#[derive(Debug)]
pub(crate) struct MatDef {
    /// Name in `explain()` barriers (`"orthogonalize(tmp0)"`).
    pub explain: &'static str,
    /// The runtime type in `optim_runtime::matrix` implementing `Primitive`.
    pub runtime: &'static str,
    /// Suffixes of its state buffers (`""`: the binding's own name), as the runtime type's
    /// `STATE` lists them (checked by a generated `const` assertion).
    pub state: &'static [&'static str],
    /// `Barrier`: runs between two loops on the element-wise `input`, writing an element-wise
    /// output. `Basis`: an eigenbasis, initialised before the first loop and updated after the
    /// step, used by `rotate`/`unrotate` only.
    pub phase: MatPhase,
    /// A `Barrier` that is also called after the step (`Phase::Finish`) with the gradient as its
    /// input, on the same state: statistics of the raw gradient that must not change this
    /// step's output (`eigen_sign`, SPlus).
    pub grad_after_step: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum MatPhase {
    Barrier,
    Basis,
}

/// A whole-tensor primitive applied to a value.
#[derive(Clone, Debug)]
pub(crate) struct MatNode {
    pub def: &'static MatDef,
    /// The element-wise input (the gradient for a `Basis`).
    pub input: NodeId,
    /// Arguments by the runtime config's field names; absent ones take the config's `Default`.
    pub args: Vec<(&'static str, NodeId)>,
    /// Compile-time constant arguments by config field name (`orthogonalize`'s `coeffs`).
    pub consts: Vec<(&'static str, MatConst)>,
    /// Its own state buffers (indices into `Fused::mat_slots`).
    pub slots: Vec<usize>,
    /// The `Basis` node whose `q` buffer this primitive reads (`rotate`/`unrotate`).
    pub basis: Option<NodeId>,
}

/// A compile-time constant argument of a matrix primitive: a Newton–Schulz coefficient
/// schedule, set on a config field of type `Option<&'static [[f64; 3]]>`, or the call's batch
/// axes.
#[derive(Clone, Debug)]
pub(crate) enum MatConst {
    /// A runtime constant by name in `optim_runtime::matrix` (a preset: `NS_POLAR_EXPRESS`).
    Preset(&'static str),
    /// A literal list of triples.
    Triples(Vec<[f64; 3]>),
    /// `batch = k`: `k` leading batch axes, passed as `matrix::Call::batch` (not a config
    /// field).
    Batch(usize),
}

/// The batch axes among a primitive's constants (0 when none is given).
pub(crate) fn batch_axes(consts: &[(&'static str, MatConst)]) -> usize {
    consts
        .iter()
        .find_map(|(_, c)| match c {
            MatConst::Batch(k) => Some(*k),
            _ => None,
        })
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Num(f64),
    Bool(bool),
    /// Numeric hyperparameter, by index into `Optimizer::hypers`.
    Hyper(usize),
    /// Flag hyperparameter, by index into `Optimizer::hypers`.
    Flag(usize),
    /// The schedule multiplier `eta_t = value / peak` of a numeric hyperparameter (by index
    /// into `Optimizer::hypers`), evaluated once per step (`scheduled_decay`).
    Eta(usize),
    /// The parameter's own step count (1 on its first update).
    Step,
    /// A shape scalar: `rows`, `cols`, `numel`, `fan_in`, `fan_out`.
    Shape(&'static str),
    Param,
    Grad,
    Neg(NodeId),
    Not(NodeId),
    Bin(BinOp, NodeId, NodeId),
    Func(&'static FuncDef, Vec<NodeId>),
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
    /// A reduction along each row (`Axis::Row`: one value per row) or column of the
    /// parameter's matrix view: a barrier; its result is a `Row`/`Col` value.
    Axis(Axis, AxisKind, NodeId),
    /// A whole-tensor primitive (`MatPhase::Barrier`: an element-wise value; `MatPhase::Basis`:
    /// an eigenbasis, usable only by the primitives that name it).
    Mat(MatNode),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RedKind {
    SumSq,
    Sum,
}

/// What an axis reduction computes along its axis (in `f64`, converted to the parameter's type).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AxisKind {
    Sum,
    SumSq,
    /// NaN-propagating maximum.
    Max,
}

/// The axis an axis reduction reduces over, named after its result: `Row` gives one value per
/// row (reducing over the columns).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Axis {
    Row,
    Col,
}

impl Axis {
    /// The level of the reduction's result.
    pub(crate) fn level(self) -> Level {
        match self {
            Axis::Row => Level::Row,
            Axis::Col => Level::Col,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub op: Op,
    pub ty: Ty,
    /// The user's tokens this node came from (errors about limits and plans).
    pub span: Span,
}

/// An element-wise state buffer.
pub(crate) struct Slot {
    pub name: String,
    /// Per-step scalar initial value (filled at creation), or `None` when the initial value is
    /// per element (handled in the kernel through `First`).
    pub init: Option<NodeId>,
    pub write: Option<NodeId>,
    pub span: Span,
    /// An `output_state`: kept (created and written every step) even when the parameter update
    /// does not read it.
    pub output: bool,
    /// How the buffer is stored (`let m: bf16 = ...`; default: the parameter's type).
    pub storage: crate::loop_ir::Storage,
}

/// A scalar (per-parameter, per-step) state.
pub(crate) struct ScalarSlot {
    pub name: String,
    pub init: f64,
    pub write: Option<NodeId>,
    pub span: Span,
}

/// A `let` binding of a rule.
pub(crate) struct Let {
    /// The name as written (its span is where an unused binding is reported).
    pub ident: Ident,
    /// The value it binds.
    pub node: NodeId,
    /// Whether the name is read after its definition.
    pub read: bool,
}

/// A rule written in the DSL.
pub(crate) struct Fused {
    pub nodes: Vec<Node>,
    pub slots: Vec<Slot>,
    pub scalar_slots: Vec<ScalarSlot>,
    /// Names of matrix-primitive state buffers; buffer index = `slots.len() + i`.
    pub mat_slots: Vec<String>,
    pub param_write: Option<NodeId>,
    /// Every `let`, in order.
    pub lets: Vec<Let>,
}

impl Fused {
    /// Indices of the flag hyperparameters the rule reads, ascending.
    pub(crate) fn flags_used(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Flag(i) => Some(i),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Names of every state buffer, indexed like `ParamState::buffers`: element slots, then
    /// matrix-primitive slots.
    pub(crate) fn buffer_names(&self) -> Vec<&str> {
        self.slots
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.mat_slots.iter().map(String::as_str))
            .collect()
    }
}

pub(crate) enum RuleBody {
    Fused(Fused),
    /// `_ => Other<name = value, ...>`; values are lowered as flag- or scalar-level expressions
    /// over this optimizer's hyperparameters, in `nodes`.
    Reuse {
        name: Ident,
        bindings: Vec<(Ident, NodeId, Span)>,
        nodes: Vec<Node>,
    },
}

/// A parameter kind of a rule pattern.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Matrix,
    Vector,
    Scalar,
    /// Rank > 2.
    Tensor,
}

/// What a text guard reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TextField {
    /// The parameter's name.
    Name,
    /// The type of the dfdx module holding it.
    Module,
}

/// A number in a guard.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum GuardNum {
    /// `rows`, `cols`, `numel`, `rank`, `fan_in`, `fan_out` of the parameter.
    Shape(&'static str),
    Num(f64),
}

/// A rule's routing condition over the parameter's `ParamInfo`.
#[derive(Clone, Debug)]
pub(crate) enum Guard {
    /// Any of these kinds.
    Kinds(Vec<Kind>),
    /// `name.contains("...")`, `starts_with`, `ends_with` (`method`), or `==`/`!=` (`Eq`/`Ne`).
    Text {
        field: TextField,
        test: TextTest,
        lit: String,
    },
    Cmp(BinOp, GuardNum, GuardNum),
    Bool(bool),
    Not(Box<Guard>),
    And(Box<Guard>, Box<Guard>),
    Or(Box<Guard>, Box<Guard>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TextTest {
    Contains,
    StartsWith,
    EndsWith,
    Eq,
    Ne,
}

pub(crate) struct Rule {
    /// Pattern and guard as written, for `explain`.
    pub text: String,
    /// Routing condition, `None` for a catch-all.
    pub condition: Option<Guard>,
    pub body: RuleBody,
}

pub(crate) struct Hyper {
    pub name: Ident,
    pub default: crate::parse::LitValue,
    pub is_flag: bool,
    pub domain: Domain,
}

pub(crate) use optim_abi::Domain;

pub(crate) struct Optimizer {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub hypers: Vec<Hyper>,
    pub rules: Vec<Rule>,
}

/// Operands of a node (matrix primitives: input, arguments and the eigenbasis they use).
pub(crate) fn operands(op: &Op) -> Vec<NodeId> {
    match op {
        Op::Neg(a) | Op::Not(a) | Op::Reduce(_, a) | Op::Global(_, a, _) | Op::Axis(_, _, a) => {
            vec![*a]
        }
        Op::Bin(_, a, b) => vec![*a, *b],
        Op::Func(_, args) => args.clone(),
        Op::Select(c, a, b) => vec![*c, *a, *b],
        Op::Mat(m) => {
            // a basis reads the gradient itself (before and after the loops), not as an operand
            let input = (m.def.phase == MatPhase::Barrier).then_some(m.input);
            input
                .into_iter()
                .chain(m.args.iter().map(|a| a.1))
                .chain(m.basis)
                .collect()
        }
        _ => Vec::new(),
    }
}
