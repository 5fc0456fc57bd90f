//! Dataflow of one variant: flags folded to constants (`fold`) and liveness from the parameter
//! update and the `output_state`s (`liveness`).

use super::operands;
use crate::ir::{BinOp, Fused, NodeId, Op};

/// Flags folded to constants, and selects on known conditions to their chosen side.
pub(super) fn fold(f: &Fused, flags: &[(usize, bool)]) -> (Vec<NodeId>, Vec<Option<bool>>) {
    let n = f.nodes.len();
    let mut repl: Vec<NodeId> = (0..n).collect();
    let mut konst: Vec<Option<bool>> = vec![None; n];
    for (i, node) in f.nodes.iter().enumerate() {
        match &node.op {
            Op::Flag(h) => konst[i] = flags.iter().find(|(x, _)| x == h).map(|(_, v)| *v),
            Op::Bool(b) => konst[i] = Some(*b),
            Op::Not(a) => konst[i] = konst[repl[*a]].map(|v| !v),
            Op::Bin(BinOp::And, a, b) => {
                konst[i] = match (konst[repl[*a]], konst[repl[*b]]) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                }
            }
            Op::Bin(BinOp::Or, a, b) => {
                konst[i] = match (konst[repl[*a]], konst[repl[*b]]) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                }
            }
            Op::Select(c, a, b) => {
                if let Some(v) = konst[repl[*c]] {
                    repl[i] = if v { repl[*a] } else { repl[*b] };
                    konst[i] = konst[repl[i]];
                }
            }
            _ => {}
        }
    }
    (repl, konst)
}

/// Liveness from the parameter update and the `output_state`s; a state slot is live when its
/// value is read. Returns live nodes, live element slots and live scalar slots.
pub(super) fn liveness(
    f: &Fused,
    repl: &[NodeId],
    konst: &[Option<bool>],
    param_write: NodeId,
) -> (Vec<bool>, Vec<bool>, Vec<bool>) {
    let mut live = vec![false; f.nodes.len()];
    let mut slot_live = vec![false; f.slots.len()];
    let mut sslot_live = vec![false; f.scalar_slots.len()];
    let mut work = vec![param_write];
    for (k, s) in f.slots.iter().enumerate().filter(|(_, s)| s.output) {
        slot_live[k] = true;
        work.extend(s.write.into_iter().chain(s.init));
    }
    while let Some(x) = work.pop() {
        let x = repl[x];
        if live[x] {
            continue;
        }
        live[x] = true;
        if konst[x].is_some() {
            continue;
        }
        match f.nodes[x].op {
            Op::StateRead(k) | Op::First(k) if !slot_live[k] => {
                slot_live[k] = true;
                work.extend(f.slots[k].write);
                work.extend(f.slots[k].init);
            }
            Op::ScalarRead(k) if !sslot_live[k] => {
                sslot_live[k] = true;
                work.extend(f.scalar_slots[k].write);
            }
            _ => {}
        }
        work.extend(operands(&f.nodes[x].op));
    }
    (live, slot_live, sslot_live)
}
