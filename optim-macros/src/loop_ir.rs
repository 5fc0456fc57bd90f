//! The loop IR: one planned stage as an ordered list of backend-neutral statements — stream
//! loads, `let`s of element-wise operations, reduction accumulations and stream stores — with
//! the element types and roles of its streams and scalars (state buffers by their slot's
//! storage; the parameter and gradient by [`LoopIr::param_elem`], `E` as planned, 16-bit in the
//! copies printed for 16-bit parameters). Built by `plan`; printed by `emit/rust_loop.rs` (the
//! CPU loop) and `emit/cuda.rs` (the CUDA kernel). Another backend is one more printer.
//!
//! Names are shared by every printer: value `x{node}`, hoisted scalar `s{k}`, stream `b{j}`
//! (`p` and `g` for the parameter and the gradient), reduction accumulator `r{j}`.

use crate::ir::{BinOp, FuncDef, Fused, NodeId, Op, RedKind};
use crate::plan::{Stream, Variant};

/// An operand.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Val {
    /// A value computed or loaded in this loop: `x{node}`.
    Var(NodeId),
    /// Hoisted scalar `k`: `s{k}`.
    Scalar(usize),
    /// A condition known at compile time.
    Bool(bool),
}

/// A stream of the loop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LStream {
    Param,
    Grad,
    /// `bufs[j]`.
    Buf(usize),
}

/// An element-wise operation.
#[derive(Clone, Debug)]
pub(crate) enum LExpr {
    Neg(Val),
    Not(Val),
    Bin(BinOp, Val, Val),
    Call(&'static FuncDef, Vec<Val>),
    Select(Val, Val, Val),
}

/// One statement of the loop body, run for every element `i`.
#[derive(Clone, Debug)]
pub(crate) enum LStmt {
    /// `x{var} = from[i]`.
    Load { var: NodeId, from: LStream },
    /// `x{var} = expr` (a condition when `boolean`).
    Let {
        var: NodeId,
        boolean: bool,
        expr: LExpr,
    },
    /// `r{acc} += value` (`Sum`) or `r{acc} += value²` (`SumSq`), in `f64`.
    Accumulate {
        acc: usize,
        kind: RedKind,
        value: Val,
    },
    /// `to[i] = value`.
    Store { to: LStream, value: Val },
}

/// Element type of a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Elem {
    /// The parameter's element type (`E`; `T` in CUDA).
    #[default]
    Param,
    /// bfloat16 bits (`u16`), computed with in `E` (`optim_runtime::lowp`).
    Bf16,
    /// IEEE binary16 bits (`u16`), computed with in `E`.
    F16,
    /// 8-bit codes of the signed dynamic map with one `f32` scale per 256-element block
    /// (`optim_runtime::lowp::q8`), computed with in `E`.
    Q8,
    /// 8-bit codes of the unsigned dynamic map, as `Q8`.
    Uq8,
}

impl Elem {
    /// Whether the stream is stored 8-bit block-quantised (`q8`/`uq8`).
    pub(crate) fn is_q8(self) -> bool {
        matches!(self, Elem::Q8 | Elem::Uq8)
    }

    /// Whether the stream is stored in 16 bits (`bf16`/`f16`).
    pub(crate) fn is_16(self) -> bool {
        matches!(self, Elem::Bf16 | Elem::F16)
    }
}

/// How a state slot is stored: its element type and, for 16-bit types, whether stores round
/// stochastically (`let m: bf16_sr = ...`) instead of to nearest.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Storage {
    pub elem: Elem,
    pub stochastic: bool,
}

impl Storage {
    /// The storage a `let` type names: `bf16`, `f16`, `bf16_sr`, `f16_sr`, `q8`, `uq8`.
    pub(crate) fn parse(name: &str) -> Option<Storage> {
        let (elem, stochastic) = match name {
            "bf16" => (Elem::Bf16, false),
            "f16" => (Elem::F16, false),
            "bf16_sr" => (Elem::Bf16, true),
            "f16_sr" => (Elem::F16, true),
            "q8" => (Elem::Q8, false),
            "uq8" => (Elem::Uq8, false),
            _ => return None,
        };
        Some(Storage { elem, stochastic })
    }

    /// Whether the slot is stored in 16 or 8 bits.
    pub(crate) fn is_low(self) -> bool {
        self.elem != Elem::Param
    }

    /// Bits per stored element (16 or 8; `None` in the parameter's type), for messages.
    pub(crate) fn bits(self) -> Option<u32> {
        match self.elem {
            Elem::Param => None,
            Elem::Bf16 | Elem::F16 => Some(16),
            Elem::Q8 | Elem::Uq8 => Some(8),
        }
    }
}

/// What a buffer stream holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    /// An optimizer state buffer (saved in checkpoints).
    State,
    /// A scratch buffer carrying a value across a barrier.
    Scratch,
}

/// A buffer stream (besides `param` and `grad`).
#[derive(Clone, Debug)]
pub(crate) struct Buf {
    pub name: String,
    pub role: Role,
    pub elem: Elem,
    /// Stores round stochastically (16-bit element types only).
    pub stochastic: bool,
    /// The state slot (`None` for a scratch buffer); keys stochastic rounding.
    pub slot: Option<usize>,
}

/// One loop.
#[derive(Clone, Debug)]
pub(crate) struct LoopIr {
    /// Hoisted scalars, in order: whether each is a condition (passed as `1`/`0`).
    pub scalars: Vec<bool>,
    pub bufs: Vec<Buf>,
    pub body: Vec<LStmt>,
    pub reductions: usize,
    /// The element type of the `param` and `grad` streams: `Param` (`E`) as planned; a 16-bit
    /// type in the copy [`LoopIr::with_param_elem`] makes for a parameter stored in 16 bits,
    /// whose loads widen exactly and whose stores round to nearest, ties to even, like those
    /// of a 16-bit state buffer (`optim_runtime::narrow`). The Rust printer prints the copy
    /// with `F16` (staged blocks) and lets its kernel's const `F16` pick the `bf16` or `f16`
    /// block conversions, so one body serves both; a `Bf16` copy would print per-element
    /// conversions, as for `bf16` state.
    pub param_elem: Elem,
    pub reads_grad: bool,
    pub writes_param: bool,
}

impl LoopIr {
    /// How stream `s` is stored (the parameter and the gradient as [`LoopIr::param_elem`],
    /// rounded to nearest).
    pub(crate) fn storage(&self, s: LStream) -> Storage {
        match s {
            LStream::Param | LStream::Grad => Storage {
                elem: self.param_elem,
                stochastic: false,
            },
            LStream::Buf(j) => self.bufs.get(j).map_or(Storage::default(), |b| Storage {
                elem: b.elem,
                stochastic: b.stochastic,
            }),
        }
    }

    /// Every stream of the loop: `param`, `grad`, then the buffers in order.
    pub(crate) fn streams(&self) -> impl Iterator<Item = LStream> {
        [LStream::Param, LStream::Grad]
            .into_iter()
            .chain((0..self.bufs.len()).map(LStream::Buf))
    }

    /// The same loop over a parameter and gradient stored as `elem` (a 16-bit type).
    pub(crate) fn with_param_elem(&self, elem: Elem) -> LoopIr {
        LoopIr {
            param_elem: elem,
            ..self.clone()
        }
    }
}

/// Whether any of a variant's loops stores state in 16 or 8 bits. Such variants have no CUDA twin
/// yet (the device path passes `ParamState::buffers` only), so `__OPTIM_CUDA_SOURCES` leaves
/// them out and their `KernelCall::cuda` is `None`.
pub(crate) fn has_low_state(loops: &[LoopIr]) -> bool {
    loops
        .iter()
        .any(|l| l.bufs.iter().any(|b| b.elem != Elem::Param))
}

/// The loop of stage `k` of variant `v`.
pub(crate) fn build(f: &Fused, v: &Variant, k: usize) -> LoopIr {
    let st = &v.stages[k];
    let last = k + 1 == v.stages.len();
    let val = |x: NodeId| -> Val {
        let x = v.repl[x];
        if let Some(b) = v.konst[x] {
            return Val::Bool(b);
        }
        match st.scalars.iter().position(|&s| s == x) {
            Some(j) => Val::Scalar(j),
            None => Val::Var(x),
        }
    };
    let stream = |s: Stream| -> LStream {
        match s {
            Stream::Param => LStream::Param,
            Stream::Grad => LStream::Grad,
            other => LStream::Buf(st.bufs.iter().position(|b| *b == other).unwrap_or(0)),
        }
    };
    let mut body = Vec::new();
    for &(var, from) in &st.loads {
        body.push(LStmt::Load {
            var,
            from: stream(from),
        });
    }
    for &id in &st.nodes {
        // the planner puts only element-wise operations in a loop
        let Some(expr) = elementwise(&f.nodes[id].op, &val) else {
            continue;
        };
        body.push(LStmt::Let {
            var: id,
            boolean: f.nodes[id].ty.boolean,
            expr,
        });
    }
    for (acc, r) in st.reductions.iter().enumerate() {
        body.push(LStmt::Accumulate {
            acc,
            kind: r.kind,
            value: val(r.value),
        });
    }
    for &(to, x) in st.writes.iter().filter(|(s, _)| *s != Stream::Param) {
        body.push(LStmt::Store {
            to: stream(to),
            value: val(x),
        });
    }
    if last {
        body.push(LStmt::Store {
            to: LStream::Param,
            value: val(v.param_write),
        });
    }
    LoopIr {
        scalars: st.scalars.iter().map(|&s| f.nodes[s].ty.boolean).collect(),
        bufs: st
            .bufs
            .iter()
            .map(|&s| {
                let (slot, storage) = match s {
                    Stream::Slot(k) => (Some(k), f.slots[k].storage),
                    _ => (None, Storage::default()),
                };
                Buf {
                    name: v.stream_name(f, s),
                    role: match s {
                        Stream::Slot(_) => Role::State,
                        _ => Role::Scratch,
                    },
                    elem: storage.elem,
                    stochastic: storage.stochastic,
                    slot,
                }
            })
            .collect(),
        body,
        reductions: st.reductions.len(),
        param_elem: Elem::Param,
        reads_grad: st.loads.iter().any(|(_, s)| *s == Stream::Grad),
        writes_param: last,
    }
}

/// Element-wise operation `op` with its operands as `val` gives them; `None` for an operation
/// that is not element-wise arithmetic (a leaf, a state read, a reduction, a primitive).
pub(crate) fn elementwise(op: &Op, mut val: impl FnMut(NodeId) -> Val) -> Option<LExpr> {
    Some(match op {
        Op::Neg(a) => LExpr::Neg(val(*a)),
        Op::Not(a) => LExpr::Not(val(*a)),
        Op::Bin(op, a, b) => LExpr::Bin(*op, val(*a), val(*b)),
        Op::Func(def, args) => LExpr::Call(def, args.iter().map(|a| val(*a)).collect()),
        Op::Select(c, a, b) => LExpr::Select(val(*c), val(*a), val(*b)),
        _ => return None,
    })
}
