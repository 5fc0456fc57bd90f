//! Stage 3, check: rules that span a whole rule or optimizer, run after lowering succeeded.
//! One commented function per rule; each pushes to `cx`. Limits shared with the runtime come
//! from `optim_abi`.

use crate::errors::Errors;
use crate::ir::{self, Op, RuleBody};
use optim_abi::{MAX_FLAGS_PER_RULE, MAX_GLOBALS};

pub(crate) fn check(cx: &mut Errors, opt: &ir::Optimizer) {
    for rule in &opt.rules {
        if let RuleBody::Fused(f) = &rule.body {
            check_states_assigned(cx, f);
            check_flag_count(cx, opt, f);
            check_global_count(cx, f);
        }
    }
}

/// An explicit `state(...)` that is never assigned would keep its initial value forever, which
/// is always a mistake (use a `let` instead).
fn check_states_assigned(cx: &mut Errors, f: &ir::Fused) {
    for slot in &f.scalar_slots {
        if slot.write.is_none() {
            cx.error(
                slot.span,
                format!("scalar state `{}` is never assigned; update it with `{} = ...;` or use a plain `let`", slot.name, slot.name),
            );
        }
    }
    for slot in &f.slots {
        if slot.write.is_none() {
            cx.error(
                slot.span,
                format!(
                    "state `{}` is never assigned; update it with `{} = ...;` or use a plain `let`",
                    slot.name, slot.name
                ),
            );
        }
    }
}

/// Flags are specialised at compile time: a rule reading `k` flags becomes `2^k` kernels.
fn check_flag_count(cx: &mut Errors, opt: &ir::Optimizer, f: &ir::Fused) {
    let n = f.flags_used().len();
    if n > MAX_FLAGS_PER_RULE {
        cx.error(
            opt.name.span(),
            format!("a rule reads {n} flags; at most {MAX_FLAGS_PER_RULE} are supported (each combination is compiled into its own kernel)"),
        );
    }
}

/// Each global reduction of a rule has its own id in the runtime's fixed table of
/// `MAX_GLOBALS` totals.
fn check_global_count(cx: &mut Errors, f: &ir::Fused) {
    for node in &f.nodes {
        if let Op::Global(_, _, id) = node.op {
            if id >= MAX_GLOBALS {
                cx.error(
                    node.span,
                    format!("a rule may take at most {MAX_GLOBALS} global reductions (`global_norm`, `clip_global_norm`); this is reduction {}", id + 1),
                );
            }
        }
    }
}
