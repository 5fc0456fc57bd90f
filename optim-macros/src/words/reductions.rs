//! Reductions and the words built on them. A per-tensor reduction (`norm`, `rms`, `sum`,
//! `mean`, and the norms inside `trust_ratio` and `graft`) ends a loop: the loop accumulates it
//! in `f64`, and the next loop reads the total as a per-step scalar. A global reduction
//! (`global_norm`, `global_sum`, `clip_global_norm`) is summed over every parameter of the step first. Also
//! the clipping words (`clip_value` is element-wise).

use super::{pos, unary, word, Entry, Role::*};
use crate::ir::{Axis, AxisKind, BinOp, Level, NodeId, Op, RedKind, Ty};
use crate::lower::{Call, Lowerer};
use crate::words::math::{CLAMP, MIN, SQRT};

/// An axis reduction word: `row_*` gives one value per row of the parameter's `rows × cols`
/// view (reducing over its columns), `col_*` one per column; the result is broadcast back
/// wherever an element-wise value uses it.
macro_rules! axis_word {
    ($name:literal, $axis:ident, $what:ident) => {
        unary($name, |lw, c| axis(lw, c, Axis::$axis, stringify!($what)))
    };
}

/// The per-tensor reduction `kind` of `x`, divided by the element count (`mean`, and the mean
/// square under `rms`).
fn per_element(lw: &mut Lowerer<'_, '_>, kind: RedKind, c: &Call<'_>) -> NodeId {
    let r = lw.reduce(kind, c.req("x"), false, c.span);
    let n = lw.push(Op::Shape("numel"), Ty::num(Level::Scalar));
    lw.bin(BinOp::Div, r, n)
}

pub(crate) const WORDS: &[Entry] = &[
    unary("norm", |lw, c| norm(lw, c.req("x"), false, c)),
    unary("rms", |lw, c| {
        let ms = per_element(lw, RedKind::SumSq, c);
        lw.func(&SQRT, vec![ms])
    }),
    unary("sum", |lw, c| {
        lw.reduce(RedKind::Sum, c.req("x"), false, c.span)
    }),
    unary("mean", |lw, c| per_element(lw, RedKind::Sum, c)),
    word(
        "trust_ratio",
        &[pos("w", Value), pos("u", Value)],
        trust_ratio,
    ),
    unary("global_norm", |lw, c| norm(lw, c.req("x"), true, c)),
    unary("global_sum", |lw, c| {
        lw.reduce(RedKind::Sum, c.req("x"), true, c.span)
    }),
    word(
        "clip_global_norm",
        &[pos("x", Value), pos("max_norm", Scalar)],
        clip_global_norm,
    ),
    word(
        "clip_value",
        &[pos("x", Value), pos("clip", Scalar)],
        |lw, c| {
            let clip = c.req("clip");
            let lo = lw.push(Op::Neg(clip), Ty::num(lw.ty(clip).level));
            lw.func(&CLAMP, vec![c.req("x"), lo, clip])
        },
    ),
    axis_word!("row_sum", Row, sum),
    axis_word!("row_mean", Row, mean),
    axis_word!("row_norm", Row, norm),
    axis_word!("row_rms", Row, rms),
    axis_word!("row_max", Row, max),
    axis_word!("col_sum", Col, sum),
    axis_word!("col_mean", Col, mean),
    axis_word!("col_norm", Col, norm),
    axis_word!("col_rms", Col, rms),
    axis_word!("col_max", Col, max),
    word(
        "graft",
        &[pos("direction", Value), pos("magnitude", Value)],
        graft,
    ),
];

/// The Euclidean norm of `x` over the tensor (or, `global`, over every parameter of the step).
fn norm(lw: &mut Lowerer<'_, '_>, x: NodeId, global: bool, c: &Call<'_>) -> NodeId {
    let r = lw.reduce(RedKind::SumSq, x, global, c.span);
    lw.func(&SQRT, vec![r])
}

/// LAMB (You et al., 2020): `||w|| / ||u||`, and 1 when either norm is zero.
fn trust_ratio(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> NodeId {
    let (w, u) = (c.req("w"), c.req("u"));
    let nw = norm(lw, w, false, c);
    let nu = norm(lw, u, false, c);
    let zero = lw.num(0.0);
    let one = lw.num(1.0);
    let pw = lw.bin(BinOp::Gt, nw, zero);
    let pu = lw.bin(BinOp::Gt, nu, zero);
    let both = lw.bin(BinOp::And, pw, pu);
    let ratio = lw.bin(BinOp::Div, nw, nu);
    lw.select(both, ratio, one)
}

/// `torch.nn.utils.clip_grad_norm_`: `x * min(1, max_norm / (total + 1e-6))`, total over every
/// parameter of the step.
fn clip_global_norm(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> NodeId {
    let (x, max_norm) = (c.req("x"), c.req("max_norm"));
    let total = norm(lw, x, true, c);
    let tiny = lw.num(1e-6);
    let den = lw.bin(BinOp::Add, total, tiny);
    let q = lw.bin(BinOp::Div, max_norm, den);
    let one = lw.num(1.0);
    let coef = lw.func(&MIN, vec![one, q]);
    lw.bin(BinOp::Mul, x, coef)
}

/// Direction with the per-tensor norm of `magnitude` (Agarwal et al., 2020):
/// `d * ||m|| / ||d||`, and 0 when `||d|| = 0`.
fn graft(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> NodeId {
    let (d, m) = (c.req("direction"), c.req("magnitude"));
    let nd = norm(lw, d, false, c);
    let nm = norm(lw, m, false, c);
    let zero = lw.num(0.0);
    let pos = lw.bin(BinOp::Gt, nd, zero);
    let ratio = lw.bin(BinOp::Div, nm, nd);
    let coef = lw.select(pos, ratio, zero);
    lw.bin(BinOp::Mul, d, coef)
}

/// `sum`, `mean`, `norm`, `rms` or `max` of `x` along each row or column (`f64` accumulation;
/// `mean(a * a)` is taken as the mean of squares of `a`).
fn axis(lw: &mut Lowerer<'_, '_>, c: &Call<'_>, axis: Axis, what: &str) -> NodeId {
    let x = c.req("x");
    let square_of = match lw.nodes[x].op {
        Op::Bin(BinOp::Mul, a, b) if a == b => Some(a),
        _ => None,
    };
    let reduce = |lw: &mut Lowerer<'_, '_>, kind| lw.axis_reduce(axis, kind, x, c.span);
    // values per reduced line: the other axis's length
    let count = |lw: &mut Lowerer<'_, '_>| {
        let n = if axis == Axis::Row { "cols" } else { "rows" };
        lw.push(Op::Shape(n), Ty::num(Level::Scalar))
    };
    match what {
        "sum" => reduce(lw, AxisKind::Sum),
        "max" => reduce(lw, AxisKind::Max),
        "mean" => {
            let total = match square_of {
                Some(a) => lw.axis_reduce(axis, AxisKind::SumSq, a, c.span),
                None => reduce(lw, AxisKind::Sum),
            };
            let n = count(lw);
            lw.bin(BinOp::Div, total, n)
        }
        "norm" => {
            let ss = reduce(lw, AxisKind::SumSq);
            lw.func(&SQRT, vec![ss])
        }
        _ => {
            let ss = reduce(lw, AxisKind::SumSq);
            let n = count(lw);
            let ms = lw.bin(BinOp::Div, ss, n);
            lw.func(&SQRT, vec![ms])
        }
    }
}
