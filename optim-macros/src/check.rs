//! Stage 3, check: rules that span a whole rule or optimizer, run after lowering succeeded.
//! One commented function per rule; each pushes to `cx`. Limits shared with the runtime come
//! from `optim_abi`.

use crate::errors::Errors;
use crate::ir::{self, Op, RuleBody};
use crate::plan::{Plan, Stream};
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

/// A state stored in 16 bits (`let m: bf16 = ...`) or 8 bits (`let m: q8 = ...`) lives in the
/// runtime's `ParamState::low` or `ParamState::q8`,
/// which only the element-wise loops read and write: a matrix primitive or axis reduction
/// reading it directly, or an eigenbasis that permutes it (SOAP's rotated moments), would see
/// no buffer. Runs after planning, which decides where whole-tensor work reads its input.
pub(crate) fn check_plan(cx: &mut Errors, opt: &ir::Optimizer, plan: &Plan) {
    for (rule, rp) in opt.rules.iter().zip(&plan.rules) {
        let (RuleBody::Fused(f), Some(rp)) = (&rule.body, rp) else {
            continue;
        };
        let low = |s: Stream| matches!(s, Stream::Slot(k) if f.slots[k].storage.is_low());
        let mut bad: Vec<usize> = Vec::new();
        for v in &rp.variants {
            let inputs = v
                .barriers
                .iter()
                .flatten()
                .map(|c| c.input)
                .chain(v.axis_calls.iter().flatten().map(|c| c.input));
            bad.extend(inputs.filter_map(|s| match s {
                Stream::Slot(k) if low(s) => Some(k),
                _ => None,
            }));
            let has_basis = v.live_nodes().any(
                |i| matches!(&f.nodes[i].op, Op::Mat(m) if m.def.phase == ir::MatPhase::Basis),
            );
            if has_basis {
                bad.extend(
                    v.slots
                        .iter()
                        .copied()
                        .filter(|&k| f.slots[k].storage.is_low()),
                );
            }
        }
        bad.sort_unstable();
        bad.dedup();
        for k in bad {
            cx.error(
                f.slots[k].span,
                format!("state `{}` is stored in {} bits, but a whole-tensor primitive (a matrix word, an axis reduction or an eigenbasis) reads it; store it in the parameter's type (drop the `: type`)", f.slots[k].name, f.slots[k].storage.bits().unwrap_or(16)),
            );
        }
    }
}
