//! Stage 4, plan: for each rule and each combination of the flags it reads, fold the flags,
//! drop what is dead under them (a disabled `amsgrad` keeps no state), and split the live graph
//! into host work (per-step scalars, `f64`) and one fused kernel (everything per element).
//!
//! Fusion rule: a rule's element-wise nodes form exactly one loop that reads `param`, `grad` and
//! each live state buffer once and writes `param` and each written state once. Matrix primitives
//! (barriers) will split this into several kernels; the element-wise primitives never do.

use crate::check::flags_used;
use crate::ir::{BinOp, Fused, Level, NodeId, Op};

/// One flag combination of one rule.
pub(crate) struct Variant {
    /// `(hyper index, value)` for each flag the rule reads.
    pub flags: Vec<(usize, bool)>,
    /// Node → the node that stands for it under these flags.
    pub repl: Vec<NodeId>,
    /// Compile-time boolean value of a node, if known.
    pub konst: Vec<Option<bool>>,
    pub live: Vec<bool>,
    /// Live element-wise state slots, ascending: the kernel's `st[k]` order.
    pub slots: Vec<usize>,
    /// Live scalar state slots.
    pub scalar_slots: Vec<usize>,
    /// Host nodes the kernel reads, in order: the kernel's `s[k]`.
    pub kernel_scalars: Vec<NodeId>,
    /// Live host nodes, in topological order.
    pub host: Vec<NodeId>,
    /// Live element-wise nodes, in topological order.
    pub kernel: Vec<NodeId>,
    pub param_write: NodeId,
    pub reads_param: bool,
    pub reads_grad: bool,
}

impl Variant {
    /// Names of the streams the kernel reads, for `explain`.
    pub(crate) fn reads(&self, f: &Fused) -> Vec<String> {
        let mut v = Vec::new();
        if self.reads_param {
            v.push("param".to_string());
        }
        if self.reads_grad {
            v.push("grad".to_string());
        }
        for &s in &self.slots {
            if self.slot_is_read(f, s) {
                v.push(f.slots[s].name.clone());
            }
        }
        v
    }

    /// Names of the streams the kernel writes.
    pub(crate) fn writes(&self, f: &Fused) -> Vec<String> {
        let mut v = vec!["param".to_string()];
        for &s in &self.slots {
            if f.slots[s].write.is_some() {
                v.push(f.slots[s].name.clone());
            }
        }
        v
    }

    fn slot_is_read(&self, f: &Fused, s: usize) -> bool {
        f.nodes.iter().enumerate().any(|(i, n)| {
            self.live[i] && self.repl[i] == i && matches!(n.op, Op::StateRead(k) if k == s)
        })
    }

    /// Arithmetic operations per element.
    pub(crate) fn ops(&self, f: &Fused) -> usize {
        self.kernel
            .iter()
            .filter(|&&n| !matches!(f.nodes[n].op, Op::Param | Op::Grad | Op::StateRead(_)))
            .count()
    }
}

/// The flags a rule reads and one `Variant` per combination (`2^k`, bit `j` of the index is
/// the value of the `j`-th flag).
pub(crate) struct RulePlan {
    pub flags: Vec<usize>,
    pub variants: Vec<Variant>,
}

pub(crate) fn plan_rule(f: &Fused, flag_defaults: &dyn Fn(usize) -> bool) -> RulePlan {
    let _ = flag_defaults;
    let flags = flags_used(f);
    let variants = (0..1usize << flags.len())
        .map(|mask| {
            let values: Vec<(usize, bool)> = flags
                .iter()
                .enumerate()
                .map(|(j, &h)| (h, mask >> j & 1 == 1))
                .collect();
            plan_variant(f, values)
        })
        .collect();
    RulePlan { flags, variants }
}

fn operands(op: &Op) -> Vec<NodeId> {
    match op {
        Op::Neg(a) | Op::Not(a) => vec![*a],
        Op::Bin(_, a, b) => vec![*a, *b],
        Op::Func(_, args) => args.clone(),
        Op::Select(c, a, b) => vec![*c, *a, *b],
        _ => Vec::new(),
    }
}

fn plan_variant(f: &Fused, flags: Vec<(usize, bool)>) -> Variant {
    let n = f.nodes.len();
    let mut repl: Vec<NodeId> = (0..n).collect();
    let mut konst: Vec<Option<bool>> = vec![None; n];
    // 1. fold flags and selects on known conditions
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
    // 2. liveness from the parameter update; a state slot is live when its value is read
    let mut live = vec![false; n];
    let mut slot_live = vec![false; f.slots.len()];
    let mut sslot_live = vec![false; f.scalar_slots.len()];
    let param_write = f.param_write.map_or(0, |p| repl[p]);
    let mut work = vec![param_write];
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
        for o in operands(&f.nodes[x].op) {
            work.push(o);
        }
    }
    // 3. split into host and kernel work
    let mut host = Vec::new();
    let mut kernel = Vec::new();
    for i in 0..n {
        if !live[i] || repl[i] != i {
            continue;
        }
        if f.nodes[i].ty.level == Level::Elem && konst[i].is_none() {
            kernel.push(i);
        } else {
            host.push(i);
        }
    }
    let is_host = |x: NodeId| !(f.nodes[x].ty.level == Level::Elem && konst[x].is_none());
    let mut kernel_scalars: Vec<NodeId> = Vec::new();
    let need = |x: NodeId, ks: &mut Vec<NodeId>| {
        if is_host(x) && !ks.contains(&x) {
            ks.push(x);
        }
    };
    for &k in &kernel {
        for o in operands(&f.nodes[k].op) {
            need(repl[o], &mut kernel_scalars);
        }
    }
    let slots: Vec<usize> = (0..f.slots.len()).filter(|&k| slot_live[k]).collect();
    for &s in &slots {
        if let Some(w) = f.slots[s].write {
            need(repl[w], &mut kernel_scalars);
        }
    }
    need(param_write, &mut kernel_scalars);
    let reads_param = kernel.iter().any(|&k| matches!(f.nodes[k].op, Op::Param));
    let reads_grad = kernel.iter().any(|&k| matches!(f.nodes[k].op, Op::Grad));
    Variant {
        flags,
        repl,
        konst,
        live,
        slots,
        scalar_slots: (0..f.scalar_slots.len())
            .filter(|&k| sslot_live[k])
            .collect(),
        kernel_scalars,
        host,
        kernel,
        param_write,
        reads_param,
        reads_grad,
    }
}
