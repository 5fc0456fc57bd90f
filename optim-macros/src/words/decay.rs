//! Weight decay, in its conventions, so that they cannot be confused:
//!
//! - `l2(weight_decay)`: the L2 term `weight_decay * param` that coupled decay adds to the
//!   gradient (`torch.optim.SGD`/`Adam` `weight_decay`, optax `add_decayed_weights` before the
//!   preconditioner); exactly 0 when `weight_decay == 0`, so an infinite parameter element stays
//!   infinite instead of turning its gradient into NaN (`0 * inf`), as PyTorch skips the term;
//! - `decoupled_decay(x, lr, weight_decay)`: `x * (1 - lr * weight_decay)`, PyTorch AdamW's
//!   decoupled decay, multiplied by the (scheduled) learning rate;
//! - `scheduled_decay(x, lr, weight_decay)`: `x * (1 - eta_t * weight_decay)`, the paper's
//!   schedule-multiplier form (Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
//!   ICLR 2019, Alg. 2) with `eta_t = lr_t / peak(lr)` derived from the learning rate's
//!   schedule (`optim_runtime::eval_schedule_multiplier`, once per step): changing the peak
//!   learning rate leaves the decay unchanged. `lr` must name a numeric hyperparameter (its
//!   schedule, not just its value, is needed).
//!
//! Neither multiplicative form needs a guard for `weight_decay == 0`: the factor is then exactly
//! `1` (the learning rate and `eta_t` are finite), so an infinite `x` stays infinite.

use super::{pos, word, Arg, Entry, Role::*};
use crate::ir::{BinOp, Level, NodeId, Op, Ty};
use crate::lower::Lowerer;

/// `(x, lr, weight_decay)`: the arguments of both multiplicative forms.
const DECAY: &[Arg] = &[
    pos("x", Value),
    pos("lr", Scalar),
    pos("weight_decay", Scalar),
];

pub(crate) const WORDS: &[Entry] = &[
    word("l2", &[pos("weight_decay", Scalar)], |lw, c| {
        let wd = c.req("weight_decay");
        let param = lw.param_node();
        let term = lw.bin(BinOp::Mul, wd, param);
        let zero = lw.num(0.0);
        let on = lw.bin(BinOp::Ne, wd, zero);
        lw.select(on, term, zero)
    }),
    word("decoupled_decay", DECAY, |lw, c| {
        let (x, lr, wd) = (c.req("x"), c.req("lr"), c.req("weight_decay"));
        shrink(lw, x, lr, wd)
    }),
    word("scheduled_decay", DECAY, |lw, c| {
        let (x, lr, wd) = (c.req("x"), c.req("lr"), c.req("weight_decay"));
        let eta = match lw.nodes[lr].op {
            Op::Hyper(h) => {
                // eta_t = lr_t / peak(lr) needs lr >= 0 at every step
                if lw.domains[h] == crate::ir::Domain::Finite {
                    lw.domains[h] = crate::ir::Domain::NonNegative;
                }
                lw.push(Op::Eta(h), Ty::num(Level::Scalar))
            }
            _ => {
                lw.cx.error(
                    c.arg_span("lr"),
                    "`scheduled_decay`'s `lr` must name a numeric hyperparameter: the decay \
                         multiplier is `eta_t = lr_t / peak(lr)`, the peak of its schedule; for a \
                         fixed multiplier write `decoupled_decay(x, multiplier, weight_decay)`",
                );
                return x;
            }
        };
        shrink(lw, x, eta, wd)
    }),
];

/// `x * (1 - rate * weight_decay)`, the multiplicative decay of both conventions.
fn shrink(lw: &mut Lowerer<'_, '_>, x: NodeId, rate: NodeId, wd: NodeId) -> NodeId {
    let rate_wd = lw.bin(BinOp::Mul, rate, wd);
    let keep = lw.one_minus(rate_wd);
    lw.bin(BinOp::Mul, x, keep)
}
