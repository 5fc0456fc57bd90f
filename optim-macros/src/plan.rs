//! Stage 4, plan: for each rule and each combination of the flags it reads, fold the flags,
//! drop what is dead under them (a disabled `amsgrad` keeps no state), assign every live node a
//! *stage*, and describe each stage's loop and each barrier.
//!
//! Stages: element-wise nodes run in the loop of their stage; a reduction or matrix primitive is
//! a barrier, so what depends on it runs one stage later. Host nodes (per-step scalars, `f64`)
//! are computed before the loop of their stage. A value used by a later stage crosses the
//! barrier through a scratch buffer, except values that can be re-read where they already live:
//! `param` (written only in the last loop), `grad`, a state's stored value before its write, a
//! state's new value after its write, and a matrix primitive's output.
//!
//! Fusion rule: every loop reads each of its streams once and writes each once. A purely
//! element-wise rule (AdamW) is exactly one loop.

use crate::check::flags_used;
use crate::ir::{BinOp, Fused, Level, MatOp, NodeId, Op, RedKind};

/// Where a loop reads or writes an element stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub(crate) enum Stream {
    Param,
    Grad,
    Slot(usize),
    Temp(usize),
}

/// One loop.
#[derive(Default)]
pub(crate) struct Stage {
    /// Values loaded at the top of each iteration: `(node, from)`.
    pub loads: Vec<(NodeId, Stream)>,
    /// Element nodes computed in this loop, topological order.
    pub nodes: Vec<NodeId>,
    /// Reductions accumulated: `(kind, input node, reduce node, global id)`.
    pub reductions: Vec<(RedKind, NodeId, NodeId, Option<usize>)>,
    /// Writes at the end of each iteration: `(to, node)`.
    pub writes: Vec<(Stream, NodeId)>,
    /// Host nodes the loop reads (its scalars), in order.
    pub scalars: Vec<NodeId>,
    /// Slot and temp streams passed to the loop, in order (slots ascending, then temps).
    pub bufs: Vec<Stream>,
}

/// A matrix primitive between stage `k` and `k + 1`.
pub(crate) struct MatCall {
    /// The matrix node (kept for diagnostics and future multi-output primitives).
    #[allow(dead_code)]
    pub node: NodeId,
    pub op: MatOp,
    pub input: Stream,
    pub out: usize,
    pub args: Vec<Option<NodeId>>,
    /// Its state buffers (indices into `ParamState::buffers`).
    pub slots: Vec<usize>,
}

/// One flag combination of one rule.
pub(crate) struct Variant {
    /// `(hyper index, value)` for each flag the rule reads.
    pub flags: Vec<(usize, bool)>,
    /// Node → the node that stands for it under these flags.
    pub repl: Vec<NodeId>,
    /// Compile-time boolean value of a node, if known.
    pub konst: Vec<Option<bool>>,
    pub live: Vec<bool>,
    pub stage_of: Vec<usize>,
    /// Live element-wise state slots, ascending.
    pub slots: Vec<usize>,
    /// Live scalar state slots.
    pub scalar_slots: Vec<usize>,
    /// Live host nodes, topological order.
    pub host: Vec<NodeId>,
    pub stages: Vec<Stage>,
    /// `barriers[k]`: matrix work between stage `k` and `k + 1`.
    pub barriers: Vec<Vec<MatCall>>,
    /// Number of scratch buffers and, for each, a description.
    pub temps: Vec<String>,
    pub param_write: NodeId,
}

impl Variant {
    /// Arithmetic operations per element of stage `k`.
    pub(crate) fn ops(&self, f: &Fused, k: usize) -> usize {
        self.stages[k]
            .nodes
            .iter()
            .filter(|&&n| !matches!(f.nodes[n].op, Op::Param | Op::Grad | Op::StateRead(_)))
            .count()
    }

    pub(crate) fn stream_name(&self, f: &Fused, s: Stream) -> String {
        match s {
            Stream::Param => "param".into(),
            Stream::Grad => "grad".into(),
            Stream::Slot(k) => f.slots[k].name.clone(),
            Stream::Temp(t) => self.temps[t].clone(),
        }
    }

    /// Names of the streams stage `k` reads.
    pub(crate) fn reads(&self, f: &Fused, k: usize) -> Vec<String> {
        let st = &self.stages[k];
        let mut v: Vec<Stream> = st.loads.iter().map(|(_, s)| *s).collect();
        v.sort();
        v.dedup();
        v.into_iter().map(|s| self.stream_name(f, s)).collect()
    }

    /// Names of the streams stage `k` writes.
    pub(crate) fn writes(&self, f: &Fused, k: usize) -> Vec<String> {
        let mut v: Vec<Stream> = self.stages[k].writes.iter().map(|(s, _)| *s).collect();
        v.sort();
        v.dedup();
        v.into_iter().map(|s| self.stream_name(f, s)).collect()
    }
}

/// The flags a rule reads and one `Variant` per combination (`2^k`; bit `j` of the index is the
/// value of the `j`-th flag).
pub(crate) struct RulePlan {
    pub flags: Vec<usize>,
    pub variants: Vec<Variant>,
}

pub(crate) fn plan_rule(f: &Fused) -> RulePlan {
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

/// Operands of a node (matrix primitives: input and scalar arguments).
pub(crate) fn operands(op: &Op) -> Vec<NodeId> {
    match op {
        Op::Neg(a) | Op::Not(a) | Op::Reduce(_, a) | Op::Global(_, a, _) => vec![*a],
        Op::Bin(_, a, b) => vec![*a, *b],
        Op::Func(_, args) => args.clone(),
        Op::Select(c, a, b) => vec![*c, *a, *b],
        Op::Mat(_, args, _) | Op::Basis(args, _) => args.iter().flatten().copied().collect(),
        _ => Vec::new(),
    }
}

fn is_elem(f: &Fused, konst: &[Option<bool>], x: NodeId) -> bool {
    f.nodes[x].ty.level == Level::Elem && konst[x].is_none()
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
    let r = |x: NodeId| repl[x];
    // 2. liveness from the parameter update; a state slot is live when its value is read
    let mut live = vec![false; n];
    let mut slot_live = vec![false; f.slots.len()];
    let mut sslot_live = vec![false; f.scalar_slots.len()];
    let param_write = f.param_write.map_or(0, r);
    let mut work = vec![param_write];
    while let Some(x) = work.pop() {
        let x = r(x);
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
    let slots: Vec<usize> = (0..f.slots.len()).filter(|&k| slot_live[k]).collect();
    // 3. stages
    let mut stage_of = vec![0usize; n];
    for i in 0..n {
        if !live[i] || repl[i] != i {
            continue;
        }
        let ops = operands(&f.nodes[i].op);
        let base = ops.iter().map(|&o| stage_of[r(o)]).max().unwrap_or(0);
        stage_of[i] = match &f.nodes[i].op {
            Op::Reduce(_, x) | Op::Global(_, x, _) => stage_of[r(*x)] + 1,
            Op::Mat(_, args, _) => {
                let input = args[0].map_or(0, |x| stage_of[r(x)] + 1);
                input.max(base)
            }
            _ => base,
        };
    }
    // every node that feeds a later stage through a write must exist; the parameter is written
    // in the last stage
    let mut last = 0;
    for i in 0..n {
        if live[i] && repl[i] == i {
            if is_elem(f, &konst, i) {
                last = last.max(stage_of[i]);
            }
            if let Op::Reduce(_, x) | Op::Global(_, x, _) = f.nodes[i].op {
                last = last.max(stage_of[r(x)]);
            }
        }
    }
    let nstages = last + 1;
    let slot_write_stage = |s: usize| f.slots[s].write.map(|w| stage_of[r(w)]);
    let slot_of_write = |x: NodeId| {
        slots
            .iter()
            .copied()
            .find(|&s| f.slots[s].write.map(r) == Some(x))
    };

    // 4. host nodes
    let host: Vec<NodeId> = (0..n)
        .filter(|&i| live[i] && repl[i] == i && !is_elem(f, &konst, i))
        .collect();

    // 5. streams: decide for each (stage, referenced node) how it is obtained
    let mut stages: Vec<Stage> = (0..nstages).map(|_| Stage::default()).collect();
    let mut temps: Vec<String> = Vec::new();
    let mut temp_of: Vec<Option<usize>> = vec![None; n];
    let mut mat_out: Vec<Option<usize>> = vec![None; n];
    let mut barriers: Vec<Vec<MatCall>> = (0..nstages).map(|_| Vec::new()).collect();
    for i in 0..n {
        if let Op::Mat(..) = f.nodes[i].op {
            if live[i] && repl[i] == i {
                let t = temps.len();
                temps.push(format!("mat{t}"));
                mat_out[i] = Some(t);
            }
        }
    }
    // elem nodes computed in their stage (Mat outputs are loaded, leaves loaded)
    for i in 0..n {
        if !(live[i] && repl[i] == i && is_elem(f, &konst, i)) {
            continue;
        }
        match f.nodes[i].op {
            Op::Param | Op::Grad | Op::StateRead(_) | Op::Mat(..) => {}
            _ => stages[stage_of[i]].nodes.push(i),
        }
    }
    // how stage k obtains node x
    let mut need_temp: Vec<(NodeId, usize)> = Vec::new(); // (node, stage where it is computed)
    let source = |x: NodeId,
                  k: usize,
                  need_temp: &mut Vec<(NodeId, usize)>,
                  temp_of: &mut Vec<Option<usize>>,
                  temps: &mut Vec<String>|
     -> Option<Stream> {
        match f.nodes[x].op {
            Op::Param => return Some(Stream::Param),
            Op::Grad => return Some(Stream::Grad),
            Op::Mat(..) => return mat_out[x].map(Stream::Temp),
            Op::StateRead(s) if slot_write_stage(s).is_none_or(|w| k <= w) => {
                return Some(Stream::Slot(s))
            }
            _ => {}
        }
        if stage_of[x] == k && !matches!(f.nodes[x].op, Op::StateRead(_)) {
            return None; // computed here
        }
        if let Some(s) = slot_of_write(x) {
            if slot_write_stage(s).is_some_and(|w| w < k) {
                return Some(Stream::Slot(s));
            }
        }
        // materialise into a scratch buffer in the stage computing it
        let t = match temp_of[x] {
            Some(t) => t,
            None => {
                let t = temps.len();
                temps.push(format!("tmp{t}"));
                temp_of[x] = Some(t);
                need_temp.push((x, stage_of[x]));
                t
            }
        };
        Some(Stream::Temp(t))
    };
    for k in 0..nstages {
        let mut refs: Vec<NodeId> = Vec::new();
        for &i in &stages[k].nodes {
            for o in operands(&f.nodes[i].op) {
                refs.push(r(o));
            }
        }
        // writes of this stage
        let mut writes: Vec<(Stream, NodeId)> = Vec::new();
        for &s in &slots {
            if let Some(w) = f.slots[s].write {
                if stage_of[r(w)] == k {
                    writes.push((Stream::Slot(s), r(w)));
                    refs.push(r(w));
                }
            }
        }
        if k == last {
            writes.push((Stream::Param, param_write));
            refs.push(param_write);
        }
        // reductions whose input is computed in this stage
        for i in 0..n {
            if !(live[i] && repl[i] == i) {
                continue;
            }
            match f.nodes[i].op {
                Op::Reduce(kind, x) if stage_of[r(x)] == k => {
                    stages[k].reductions.push((kind, r(x), i, None));
                    refs.push(r(x));
                }
                Op::Global(kind, x, g) if stage_of[r(x)] == k => {
                    stages[k].reductions.push((kind, r(x), i, Some(g)));
                    refs.push(r(x));
                }
                _ => {}
            }
        }
        // matrix primitives whose input is ready after this stage
        for i in 0..n {
            if let Op::Mat(op, args, mslots) = &f.nodes[i].op {
                if live[i] && repl[i] == i && stage_of[i] == k + 1 {
                    let input = args[0].map_or(param_write, r);
                    let src = match f.nodes[input].op {
                        Op::Param => Stream::Param,
                        Op::Grad => Stream::Grad,
                        Op::Mat(..) => Stream::Temp(mat_out[input].unwrap_or(0)),
                        _ => match slot_of_write(input) {
                            Some(s) if slot_write_stage(s).is_some_and(|w| w <= k) => {
                                Stream::Slot(s)
                            }
                            _ => {
                                refs.push(input);
                                match source(
                                    input,
                                    stage_of[input],
                                    &mut need_temp,
                                    &mut temp_of,
                                    &mut temps,
                                ) {
                                    Some(s) => s,
                                    None => {
                                        // computed in its own stage: force a scratch buffer
                                        let t = temps.len();
                                        temps.push(format!("tmp{t}"));
                                        temp_of[input] = Some(t);
                                        need_temp.push((input, stage_of[input]));
                                        Stream::Temp(t)
                                    }
                                }
                            }
                        },
                    };
                    barriers[k].push(MatCall {
                        node: i,
                        op: *op,
                        input: src,
                        out: mat_out[i].unwrap_or(0),
                        args: args[1..].iter().map(|a| a.map(r)).collect(),
                        slots: mslots.iter().map(|s| f.slots.len() + s).collect(),
                    });
                }
            }
        }
        refs.sort_unstable();
        refs.dedup();
        for x in refs {
            if !is_elem(f, &konst, x) {
                if !stages[k].scalars.contains(&x) {
                    stages[k].scalars.push(x);
                }
                continue;
            }
            if let Some(src) = source(x, k, &mut need_temp, &mut temp_of, &mut temps) {
                stages[k].loads.push((x, src));
            }
        }
        stages[k].writes = writes;
    }
    // scratch writes in the stage that computes each materialised value
    for (x, j) in need_temp {
        if let Some(t) = temp_of[x] {
            if j < nstages {
                stages[j].writes.push((Stream::Temp(t), x));
                // a leaf materialised in its stage must be loaded there
                if matches!(f.nodes[x].op, Op::StateRead(_))
                    && !stages[j].loads.iter().any(|(y, _)| *y == x)
                {
                    if let Op::StateRead(s) = f.nodes[x].op {
                        stages[j].loads.push((x, Stream::Slot(s)));
                    }
                }
            }
        }
    }
    for st in &mut stages {
        st.loads.sort_by_key(|(x, _)| *x);
        st.loads.dedup();
        let mut bufs: Vec<Stream> = st
            .loads
            .iter()
            .map(|(_, s)| *s)
            .chain(st.writes.iter().map(|(s, _)| *s))
            .filter(|s| matches!(s, Stream::Slot(_) | Stream::Temp(_)))
            .collect();
        bufs.sort();
        bufs.dedup();
        st.bufs = bufs;
        // scalars used by writes/reductions that are host values
        for (_, x) in st.writes.clone() {
            if !is_elem(f, &konst, x) && !st.scalars.contains(&x) {
                st.scalars.push(x);
            }
        }
    }
    Variant {
        flags,
        repl,
        konst,
        live,
        stage_of,
        slots,
        scalar_slots: (0..f.scalar_slots.len())
            .filter(|&k| sslot_live[k])
            .collect(),
        host,
        stages,
        barriers,
        temps,
        param_write,
    }
}
