//! Weight decay, in its conventions, so that they cannot be confused:
//!
//! - `l2(weight_decay)`: the L2 term `weight_decay * param` that coupled decay adds to the
//!   gradient (`torch.optim.SGD`/`Adam` `weight_decay`, optax `add_decayed_weights` before the
//!   preconditioner); exactly 0 when `weight_decay == 0`, so an infinite parameter element stays
//!   infinite instead of turning its gradient into NaN (`0 * inf`), as PyTorch skips the term;
//! - `decoupled_decay(x, lr, weight_decay)`: `x * (1 - lr * weight_decay)`, PyTorch AdamW's
//!   decoupled decay, multiplied by the (scheduled) learning rate;
//! - the paper's schedule-multiplier form `x * (1 - eta_t * weight_decay)` (Loshchilov & Hutter,
//!   "Decoupled Weight Decay Regularization", ICLR 2019, Alg. 2) has no word of its own yet
//!   (`scheduled_decay`, deriving `eta_t = lr_t / peak(lr)` from the learning rate's schedule,
//!   is planned); today it is written `decoupled_decay(x, eta, weight_decay)` with a scheduled
//!   multiplier hyperparameter `eta` declared by the user.

use super::{pos, Entry, Role::*};
use crate::ir::BinOp;

pub(crate) const WORDS: &[Entry] = &[
    Entry {
        name: "l2",
        args: &[pos("weight_decay", Scalar)],
        matrix_only: false,
        lower: |lw, c| {
            let wd = c.req("weight_decay");
            let param = lw.param_node();
            let term = lw.bin(BinOp::Mul, wd, param);
            let zero = lw.num(0.0);
            let on = lw.bin(BinOp::Ne, wd, zero);
            lw.select(on, term, zero)
        },
    },
    Entry {
        name: "decoupled_decay",
        args: &[
            pos("x", Value),
            pos("lr", Scalar),
            pos("weight_decay", Scalar),
        ],
        matrix_only: false,
        lower: |lw, c| {
            let (x, lr, wd) = (c.req("x"), c.req("lr"), c.req("weight_decay"));
            let lr_wd = lw.bin(BinOp::Mul, lr, wd);
            let keep = lw.one_minus(lr_wd);
            lw.bin(BinOp::Mul, x, keep)
        },
    },
];
