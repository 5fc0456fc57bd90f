//! Stateful element-wise words: each keeps a per-parameter state buffer (or scalar) and lowers
//! to a state read, the new value, and the state's write. All loops stay fused: a state is read
//! once and written once per step. The runtime holds the buffers (`ParamState`).

use super::{named, pos, word, Entry, Role::*};
use crate::ir::{BinOp, Level, NodeId, Op, Ty};
use crate::lower::{Binding, Call, Lowerer};
use crate::words::math::{MAX, POW};

pub(crate) const WORDS: &[Entry] = &[
    word(
        "momentum",
        &[
            pos("x", Value),
            pos("beta", Beta),
            named("dampening", Scalar),
            named("nesterov", Flag),
        ],
        momentum,
    ),
    word(
        "ema",
        &[pos("x", Value), pos("beta", Beta), named("init", Init)],
        ema,
    ),
    word(
        "second_moment",
        &[pos("x", Value), pos("beta", Beta)],
        second_moment,
    ),
    word(
        "accumulate",
        &[pos("x", Value), named("init", Init)],
        |lw, c| {
            let (slot, old) = lw.state_with_init(
                c.slot_name(lw, "accumulate"),
                c.arg("init"),
                c.req("x"),
                c.span,
            );
            let new = lw.bin(BinOp::Add, old, c.req("x"));
            lw.slots[slot].write = Some(new);
            new
        },
    ),
    word(
        "running_max",
        &[pos("x", Value), named("decay", Scalar)],
        |lw, c| {
            let (slot, old) = lw.zero_state(c.slot_name(lw, "running_max"), c.req("x"), c.span);
            let decayed = match c.arg("decay") {
                Some(d) => lw.bin(BinOp::Mul, d, old),
                None => old,
            };
            let new = lw.func(&MAX, vec![decayed, c.req("x")]);
            lw.slots[slot].write = Some(new);
            new
        },
    ),
    word("state", &[pos("init", Init)], |lw, c| {
        explicit_state(lw, c, "state", false)
    }),
    word("output_state", &[pos("init", Init)], |lw, c| {
        explicit_state(lw, c, "output_state", true)
    }),
    word("row_state", &[pos("init", Scalar)], |lw, c| {
        axis_state(lw, c, Level::Row)
    }),
    word("col_state", &[pos("init", Scalar)], |lw, c| {
        axis_state(lw, c, Level::Col)
    }),
    word("scalar_state", &[pos("init", Scalar)], |lw, c| {
        if c.binding.is_none() {
            lw.cx.error(c.span, "`scalar_state(...)` must be bound with `let name = scalar_state(init);` so that it can be assigned");
        }
        let init = match lw.nodes[c.req("init")].op {
            Op::Num(v) => v,
            _ => {
                lw.cx.error(
                    c.arg_span("init"),
                    "the initial value of `scalar_state` must be a number literal",
                );
                0.0
            }
        };
        let k = lw.new_scalar_slot(c.slot_name(lw, "scalar_state"), init, c.span);
        let read = lw.push(Op::ScalarRead(k), Ty::num(Level::Scalar));
        lw.bind_next(Binding::ScalarState(k, read));
        read
    }),
    word("cumprod", &[pos("x", Scalar)], |lw, c| {
        let k = lw.new_scalar_slot(c.slot_name(lw, "cumprod"), 1.0, c.span);
        let old = lw.push(Op::ScalarRead(k), Ty::num(Level::Scalar));
        let new = lw.bin(BinOp::Mul, old, c.req("x"));
        lw.scalar_slots[k].write = Some(new);
        new
    }),
    word("debias", &[pos("x", Value)], debias),
];

/// `state(init)` / `output_state(init)` (`output`: kept even when the update does not read it):
/// an element-wise buffer bound by `let`, assigned later by name.
fn explicit_state(lw: &mut Lowerer<'_, '_>, c: &Call<'_>, word: &str, output: bool) -> NodeId {
    if c.binding.is_none() {
        lw.cx.error(
            c.span,
            format!("`{word}(...)` must be bound with `let name = {word}(init);` so that it can be assigned"),
        );
    }
    let (slot, old) = lw.state_with_init(
        c.slot_name(lw, word),
        Some(c.req("init")),
        c.req("init"),
        c.span,
    );
    lw.slots[slot].output = output;
    lw.bind_next(Binding::State(slot, old));
    old
}

/// EMA form `m + (1 - beta) (x - m)` (PyTorch's `lerp_`), or PyTorch SGD's heavy-ball form when
/// `dampening` is given (first step copies `x`, later `beta m + (1 - dampening) x`); Nesterov
/// returns `x + beta (new - x)` (EMA) or `x + beta new` (heavy ball).
fn momentum(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> NodeId {
    let (x, beta) = (c.req("x"), c.req("beta"));
    let (slot, old) = lw.zero_state(c.slot_name(lw, "momentum"), x, c.span);
    let dampening = c.arg("dampening");
    let new = match dampening {
        Some(d) => {
            let first = lw.push(Op::First(slot), Ty::cond(Level::Scalar));
            let zero = lw.num(0.0);
            let coef_old = lw.select(first, zero, beta);
            let one = lw.num(1.0);
            let one_minus_d = lw.one_minus(d);
            let coef_x = lw.select(first, one, one_minus_d);
            let a = lw.bin(BinOp::Mul, coef_old, old);
            let b = lw.bin(BinOp::Mul, coef_x, x);
            lw.bin(BinOp::Add, a, b)
        }
        None => {
            let t = lw.one_minus(beta);
            let new = lw.lerp(old, x, t);
            lw.ema_beta.insert(new, beta);
            new
        }
    };
    lw.slots[slot].write = Some(new);
    match c.arg("nesterov") {
        None => new,
        Some(flag) => {
            let nest = if dampening.is_some() {
                let bm = lw.bin(BinOp::Mul, beta, new);
                lw.bin(BinOp::Add, x, bm)
            } else {
                lw.lerp(x, new, beta)
            };
            lw.select(flag, nest, new)
        }
    }
}

/// `e + (1 - beta) (x - e)`, starting from `init` (default 0; a per-element `init` is copied on
/// the first step).
fn ema(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> NodeId {
    let (x, beta) = (c.req("x"), c.req("beta"));
    let (slot, old) = lw.state_with_init(c.slot_name(lw, "ema"), c.arg("init"), x, c.span);
    let t = lw.one_minus(beta);
    let new = lw.lerp(old, x, t);
    lw.slots[slot].write = Some(new);
    lw.ema_beta.insert(new, beta);
    new
}

/// `beta v + (1 - beta) x²` (Adam/RMSprop).
fn second_moment(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> NodeId {
    let (x, beta) = (c.req("x"), c.req("beta"));
    let (slot, old) = lw.zero_state(c.slot_name(lw, "second_moment"), x, c.span);
    let a = lw.bin(BinOp::Mul, beta, old);
    let omb = lw.one_minus(beta);
    let xx = lw.bin(BinOp::Mul, x, x);
    let b = lw.bin(BinOp::Mul, omb, xx);
    let new = lw.bin(BinOp::Add, a, b);
    lw.slots[slot].write = Some(new);
    lw.ema_beta.insert(new, beta);
    new
}

/// `x / (1 - beta^step)` for the result of an EMA word with coefficient `beta`.
fn debias(lw: &mut Lowerer<'_, '_>, c: &Call<'_>) -> NodeId {
    let x = c.req("x");
    match lw.ema_beta.get(&x).copied() {
        Some(beta) => {
            let step = lw.push(Op::Step, Ty::num(Level::Scalar));
            let bt = lw.func(&POW, vec![beta, step]);
            let bc = lw.one_minus(bt);
            lw.bin(BinOp::Div, x, bc)
        }
        None => {
            lw.cx.error(c.arg_span("x"), "`debias` expects the result of `momentum` (EMA form), `ema` or `second_moment`; write the correction explicitly otherwise, e.g. `x / (1 - pow(beta, step))`");
            x
        }
    }
}

/// `row_state(init)` / `col_state(init)`: an explicit state with one value per row (column) of
/// the parameter's matrix view, assigned like `state`; `init` is a per-step value.
fn axis_state(lw: &mut Lowerer<'_, '_>, c: &Call<'_>, level: Level) -> NodeId {
    let word = c.entry.name;
    if c.binding.is_none() {
        lw.cx.error(
            c.span,
            format!("`{word}(...)` must be bound with `let name = {word}(init);` so that it can be assigned"),
        );
    }
    let init = c.req("init");
    let slot = lw.new_slot(c.slot_name(lw, word), Some(init), c.span);
    let old = lw.push(Op::StateRead(slot), Ty::num(level));
    lw.bind_next(Binding::State(slot, old));
    old
}
