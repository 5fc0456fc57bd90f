//! Stage 3, check: rules that span a whole rule or optimizer, run after lowering succeeded.
//! One commented function per rule; each pushes to `cx`.

use crate::errors::Errors;
use crate::ir::{self, Op, RuleBody};

/// Most flags a single rule may read: each combination is compiled into its own kernel.
pub(crate) const MAX_FLAGS_PER_RULE: usize = 6;

pub(crate) fn check(cx: &mut Errors, opt: &ir::Optimizer) {
    for rule in &opt.rules {
        if let RuleBody::Fused(f) = &rule.body {
            check_states_assigned(cx, f);
            check_flag_count(cx, opt, f);
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
    let n = flags_used(f).len();
    if n > MAX_FLAGS_PER_RULE {
        cx.error(
            opt.name.span(),
            format!("a rule reads {n} flags; at most {MAX_FLAGS_PER_RULE} are supported (each combination is compiled into its own kernel)"),
        );
    }
}

/// Indices of the flag hyperparameters a rule reads, ascending.
pub(crate) fn flags_used(f: &ir::Fused) -> Vec<usize> {
    let mut v: Vec<usize> = f
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
