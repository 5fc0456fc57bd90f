//! Stage 4, plan: for each rule and each combination of the flags it reads, fold the flags,
//! drop what is dead under them (a disabled `amsgrad` keeps no state), assign every live node a
//! *stage*, describe each stage's loop and each barrier, and build each loop's backend-neutral
//! statement list (`loop_ir`). Plans the runtime cannot run (too many reductions in one loop)
//! are reported here, on the user's token.
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

use crate::errors::Errors;
/// Operands of a node (defined in `ir`, next to `Op`).
pub(crate) use crate::ir::operands;
use crate::ir::{self, Fused, Level, MatDef, MatPhase, NodeId, Op, RedKind, RuleBody};
use crate::loop_ir::{self, LoopIr};
use optim_abi::MAX_REDUCTIONS;

mod dataflow;
use dataflow::{fold, liveness};

/// Where a loop reads or writes an element stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub(crate) enum Stream {
    Param,
    Grad,
    Slot(usize),
    Temp(usize),
}

/// A reduction a loop accumulates: its kind, the element value, the node receiving the total
/// and, for a global reduction, its id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reduction {
    pub kind: RedKind,
    pub value: NodeId,
    pub node: NodeId,
    pub global: Option<usize>,
}

/// One loop.
#[derive(Default)]
pub(crate) struct Stage {
    /// Values loaded at the top of each iteration: `(node, from)`.
    pub loads: Vec<(NodeId, Stream)>,
    /// Element nodes computed in this loop, topological order.
    pub nodes: Vec<NodeId>,
    pub reductions: Vec<Reduction>,
    /// Writes at the end of each iteration: `(to, node)`.
    pub writes: Vec<(Stream, NodeId)>,
    /// Host nodes the loop reads (its scalars), in order.
    pub scalars: Vec<NodeId>,
    /// Slot and temp streams passed to the loop, in order (slots ascending, then temps).
    pub bufs: Vec<Stream>,
}

/// The length of a buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Len {
    /// The parameter's number of elements.
    Elems,
    /// Rows of its matrix view.
    Rows,
    /// Columns of its matrix view.
    Cols,
}

impl Len {
    /// The buffer length of values at `level`.
    pub(crate) fn of(level: Level) -> Len {
        match level {
            Level::Row => Len::Rows,
            Level::Col => Len::Cols,
            _ => Len::Elems,
        }
    }
}

/// An axis reduction after stage `k`: reads an element stream, writes one value per row or
/// column into scratch buffer `out`.
pub(crate) struct AxisCall {
    pub axis: ir::Axis,
    pub kind: ir::AxisKind,
    pub input: Stream,
    pub out: usize,
}

/// A matrix primitive between stage `k` and `k + 1`.
pub(crate) struct MatCall {
    pub def: &'static MatDef,
    pub input: Stream,
    /// Scratch buffer receiving the output.
    pub out: usize,
    /// Arguments by config field name (host nodes).
    pub args: Vec<(&'static str, NodeId)>,
    pub consts: Vec<(&'static str, ir::MatConst)>,
    /// Its state buffers (indices into `ParamState::buffers`).
    pub slots: Vec<usize>,
    /// The `q` buffer of the eigenbasis it rotates in.
    pub basis_q: Option<usize>,
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
    /// `loops[k]`: stage `k`'s loop as backend-neutral statements.
    pub loops: Vec<LoopIr>,
    /// `barriers[k]`: matrix work between stage `k` and `k + 1`.
    pub barriers: Vec<Vec<MatCall>>,
    /// Matrix work before stage 0: barriers on the raw `grad` or `param` (no loop computes
    /// their input).
    pub pre_barriers: Vec<MatCall>,
    /// Scratch buffers, by description.
    pub temps: Vec<String>,
    /// Length of each scratch buffer: a parameter's, or one value per row or column.
    pub temp_lens: Vec<Len>,
    /// `axis_calls[k]`: axis reductions of values computed by stage `k`'s loop, run after it.
    pub axis_calls: Vec<Vec<AxisCall>>,
    /// `axis_nodes[k]`: per-row and per-column values computed before stage `k`'s loop (and,
    /// for `k == stages`, after the last one), in order; each lives in its scratch buffer
    /// `axis_temp[node]`.
    pub axis_nodes: Vec<Vec<NodeId>>,
    /// The row- or column-sized scratch buffer of each per-row or per-column value.
    pub axis_temp: Vec<Option<usize>>,
    /// The element-sized scratch buffer a per-row or per-column value is broadcast into for the
    /// loops that read it.
    pub bcast: Vec<Option<usize>>,
    pub param_write: NodeId,
    /// The user's `let` name of each node, under this variant's flags (for `explain`).
    pub names: Vec<Option<String>>,
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

    fn names(&self, f: &Fused, mut v: Vec<Stream>) -> Vec<String> {
        v.sort();
        v.dedup();
        v.into_iter().map(|s| self.stream_name(f, s)).collect()
    }

    /// Names of the streams stage `k` reads.
    pub(crate) fn reads(&self, f: &Fused, k: usize) -> Vec<String> {
        self.names(f, self.stages[k].loads.iter().map(|(_, s)| *s).collect())
    }

    /// Names of the streams stage `k` writes.
    pub(crate) fn writes(&self, f: &Fused, k: usize) -> Vec<String> {
        self.names(f, self.stages[k].writes.iter().map(|(s, _)| *s).collect())
    }

    /// Whether node `x` is a per-element value under this variant (not folded to a constant).
    pub(crate) fn is_elem(&self, f: &Fused, x: NodeId) -> bool {
        f.nodes[x].ty.level == Level::Elem && self.konst[x].is_none()
    }

    /// Whether node `x` is a per-row or per-column value under this variant.
    pub(crate) fn is_axis(&self, f: &Fused, x: NodeId) -> bool {
        f.nodes[x].ty.level.is_axis() && self.konst[x].is_none()
    }

    /// Live nodes that stand for themselves (not replaced by flag folding).
    pub(crate) fn live_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.live.len()).filter(|&i| self.live[i] && self.repl[i] == i)
    }
}

/// The flags a rule reads and one `Variant` per combination (`2^k`; bit `j` of the index is the
/// value of the `j`-th flag).
pub(crate) struct RulePlan {
    pub flags: Vec<usize>,
    pub variants: Vec<Variant>,
}

/// The plan of every rule (`None` for reuse rules).
pub(crate) struct Plan {
    pub rules: Vec<Option<RulePlan>>,
}

/// Plans every fused rule; reports plans the runtime cannot run.
pub(crate) fn plan(cx: &mut Errors, opt: &ir::Optimizer) -> Plan {
    let rules = opt
        .rules
        .iter()
        .map(|r| match &r.body {
            RuleBody::Fused(f) => {
                let p = plan_rule(f);
                check_limits(cx, f, &p);
                Some(p)
            }
            RuleBody::Reuse { .. } => None,
        })
        .collect();
    Plan { rules }
}

/// One loop accumulates at most `MAX_REDUCTIONS` reductions (the executor's fixed buffers).
fn check_limits(cx: &mut Errors, f: &Fused, p: &RulePlan) {
    for v in &p.variants {
        for st in &v.stages {
            if let Some(r) = st.reductions.get(MAX_REDUCTIONS) {
                cx.error(
                    f.nodes[r.node].span,
                    format!(
                        "one loop of this rule needs {} reductions (`norm`, `rms`, `sum`, `mean`, `trust_ratio`, `graft`, global norms); at most {MAX_REDUCTIONS} are supported per loop",
                        st.reductions.len()
                    ),
                );
                return;
            }
        }
    }
}

pub(crate) fn plan_rule(f: &Fused) -> RulePlan {
    let flags = f.flags_used();
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

/// A matrix primitive that runs between loops (not an eigenbasis).
fn barrier_node(op: &Op) -> Option<&ir::MatNode> {
    match op {
        Op::Mat(m) if m.def.phase == MatPhase::Barrier => Some(m),
        _ => None,
    }
}

fn plan_variant(f: &Fused, flags: Vec<(usize, bool)>) -> Variant {
    let n = f.nodes.len();
    let (repl, konst) = fold(f, &flags);
    let param_write = f.param_write.map_or(0, |p| repl[p]);
    let (live, slot_live, sslot_live) = liveness(f, &repl, &konst, param_write);
    let mut v = Variant {
        flags,
        repl,
        konst,
        live,
        stage_of: vec![0; n],
        slots: (0..f.slots.len()).filter(|&k| slot_live[k]).collect(),
        scalar_slots: (0..f.scalar_slots.len())
            .filter(|&k| sslot_live[k])
            .collect(),
        host: Vec::new(),
        stages: Vec::new(),
        loops: Vec::new(),
        barriers: Vec::new(),
        pre_barriers: Vec::new(),
        temps: Vec::new(),
        temp_lens: Vec::new(),
        axis_calls: Vec::new(),
        axis_nodes: Vec::new(),
        axis_temp: vec![None; n],
        bcast: vec![None; n],
        param_write,
        names: vec![None; n],
    };
    for l in &f.lets {
        let x = v.repl[l.node];
        v.names[x] = Some(l.ident.to_string());
    }
    assign_stages(f, &mut v);
    sink(f, &mut v);
    v.host = v
        .live_nodes()
        .filter(|&i| !v.is_elem(f, i) && !v.is_axis(f, i))
        .collect();
    let out = Streams::new(f, &v).build();
    v.stages = out.stages;
    v.barriers = out.barriers;
    v.pre_barriers = out.pre_barriers;
    v.temps = out.temps;
    v.temp_lens = out.temp_lens;
    v.axis_calls = out.axis_calls;
    v.axis_nodes = out.axis_nodes;
    v.axis_temp = out.axis_temp;
    v.bcast = out.bcast;
    v.loops = (0..v.stages.len())
        .map(|k| loop_ir::build(f, &v, k))
        .collect();
    v
}

/// Gives every live node its stage and creates one (empty) stage per loop.
fn assign_stages(f: &Fused, v: &mut Variant) {
    let r = |x: NodeId| v.repl[x];
    for i in 0..f.nodes.len() {
        if !v.live[i] || v.repl[i] != i {
            continue;
        }
        let ops = operands(&f.nodes[i].op);
        let base = ops.iter().map(|&o| v.stage_of[r(o)]).max().unwrap_or(0);
        v.stage_of[i] = match &f.nodes[i].op {
            Op::Reduce(_, x) | Op::Global(_, x, _) | Op::Axis(_, _, x) => v.stage_of[r(*x)] + 1,
            // on the raw gradient or parameter (not a rotation): before the first loop
            Op::Mat(m)
                if m.def.phase == MatPhase::Barrier
                    && m.basis.is_none()
                    && matches!(f.nodes[r(m.input)].op, Op::Grad | Op::Param) =>
            {
                base
            }
            Op::Mat(m) if m.def.phase == MatPhase::Barrier => {
                (v.stage_of[r(m.input)] + 1).max(base)
            }
            _ => base,
        };
    }
    // every node that feeds a later stage through a write must exist; the parameter is written
    // in the last stage
    let mut last = 0;
    for i in v.live_nodes() {
        if v.is_elem(f, i) {
            last = last.max(v.stage_of[i]);
        }
        if let Op::Reduce(_, x) | Op::Global(_, x, _) | Op::Axis(_, _, x) = f.nodes[i].op {
            last = last.max(v.stage_of[r(x)]);
        }
    }
    v.stages = (0..=last).map(|_| Stage::default()).collect();
    v.barriers = (0..=last).map(|_| Vec::new()).collect();
}

/// Moves element-wise values that only later loops use into the first loop that uses them (as
/// late as possible), so that they are computed where they are needed instead of crossing a
/// barrier through a scratch buffer. Values read by a reduction or a matrix primitive stay where
/// they are (the barrier reads them after their loop).
fn sink(f: &Fused, v: &mut Variant) {
    let n = f.nodes.len();
    let mut pinned = vec![false; n];
    let mut min_user: Vec<Option<usize>> = vec![None; n];
    let last = v.stages.len().saturating_sub(1);
    min_user[v.param_write] = Some(last);
    for i in v.live_nodes() {
        match &f.nodes[i].op {
            Op::Reduce(_, x) | Op::Global(_, x, _) | Op::Axis(_, _, x) => pinned[v.repl[*x]] = true,
            Op::Mat(m) if m.def.phase == MatPhase::Barrier => pinned[v.repl[m.input]] = true,
            _ => {}
        }
    }
    let order: Vec<NodeId> = v.live_nodes().collect();
    for &i in order.iter().rev() {
        let leaf = matches!(
            f.nodes[i].op,
            Op::Param | Op::Grad | Op::StateRead(_) | Op::Mat(_)
        );
        if v.is_elem(f, i) && !leaf && !pinned[i] {
            if let Some(s) = min_user[i] {
                v.stage_of[i] = v.stage_of[i].max(s);
            }
        }
        if v.is_elem(f, i) && !leaf {
            for o in operands(&f.nodes[i].op) {
                let o = v.repl[o];
                let s = v.stage_of[i];
                min_user[o] = Some(min_user[o].map_or(s, |m| m.min(s)));
            }
        }
    }
}

/// Decides for each stage and each value it references how the loop obtains it (computed, or
/// loaded from which stream), which scratch buffers exist, and which barriers run after it.
struct Streams<'a> {
    f: &'a Fused,
    v: &'a Variant,
    temps: Vec<String>,
    temp_of: Vec<Option<usize>>,
    /// Scratch buffer holding each barrier primitive's output.
    mat_out: Vec<Option<usize>>,
    /// `(node, stage computing it)` for values materialised into a scratch buffer.
    need_temp: Vec<(NodeId, usize)>,
    /// Values computed again in a later loop instead of crossing a barrier: `(node, stage)`.
    remat: Vec<(NodeId, usize)>,
    temp_lens: Vec<Len>,
    axis_temp: Vec<Option<usize>>,
    bcast: Vec<Option<usize>>,
    axis_calls: Vec<Vec<AxisCall>>,
}

/// What `Streams::build` plans.
struct Built {
    stages: Vec<Stage>,
    barriers: Vec<Vec<MatCall>>,
    pre_barriers: Vec<MatCall>,
    temps: Vec<String>,
    temp_lens: Vec<Len>,
    axis_calls: Vec<Vec<AxisCall>>,
    axis_nodes: Vec<Vec<NodeId>>,
    axis_temp: Vec<Option<usize>>,
    bcast: Vec<Option<usize>>,
}

impl<'a> Streams<'a> {
    fn new(f: &'a Fused, v: &'a Variant) -> Self {
        let mut s = Streams {
            f,
            v,
            temps: Vec::new(),
            temp_of: vec![None; f.nodes.len()],
            mat_out: vec![None; f.nodes.len()],
            need_temp: Vec::new(),
            remat: Vec::new(),
            temp_lens: Vec::new(),
            axis_temp: vec![None; f.nodes.len()],
            bcast: vec![None; f.nodes.len()],
            axis_calls: Vec::new(),
        };
        for i in v.live_nodes() {
            if barrier_node(&f.nodes[i].op).is_some() {
                s.mat_out[i] = Some(s.push_temp(i, "mat", Len::Elems));
            }
        }
        for i in v.live_nodes() {
            if v.is_axis(f, i) {
                let (prefix, len) = match f.nodes[i].ty.level {
                    Level::Row => ("row", Len::Rows),
                    _ => ("col", Len::Cols),
                };
                s.axis_temp[i] = Some(s.push_temp(i, prefix, len));
            }
        }
        s
    }

    /// A new scratch buffer for node `x`, of length `len`; returns its index.
    fn push_temp(&mut self, x: NodeId, prefix: &str, len: Len) -> usize {
        let name = self.temp_name(x, prefix);
        self.temps.push(name);
        self.temp_lens.push(len);
        self.temps.len() - 1
    }

    /// The element-sized scratch buffer that per-row or per-column value `x` is broadcast into.
    fn broadcast(&mut self, x: NodeId) -> Stream {
        let t = match self.bcast[x] {
            Some(t) => t,
            None => {
                let t = self.push_temp(x, "bcast", Len::Elems);
                self.bcast[x] = Some(t);
                t
            }
        };
        Stream::Temp(t)
    }

    /// A scratch buffer holding `x` is named after `x`'s `let`, when that name is free, else
    /// `{prefix}{index}`.
    fn temp_name(&self, x: NodeId, prefix: &str) -> String {
        let f = self.f;
        match &self.v.names[x] {
            Some(n)
                if !self.temps.contains(n)
                    && !f.slots.iter().any(|s| &s.name == n)
                    && !f.mat_slots.contains(n) =>
            {
                n.clone()
            }
            _ => format!("{prefix}{}", self.temps.len()),
        }
    }

    fn slot_write_stage(&self, s: usize) -> Option<usize> {
        self.f.slots[s]
            .write
            .map(|w| self.v.stage_of[self.v.repl[w]])
    }

    fn slot_of_write(&self, x: NodeId) -> Option<usize> {
        self.v
            .slots
            .iter()
            .copied()
            .find(|&s| self.f.slots[s].write.map(|w| self.v.repl[w]) == Some(x))
    }

    /// A new scratch buffer holding `x`, written by the stage computing it.
    fn materialise(&mut self, x: NodeId) -> Stream {
        let t = self.push_temp(x, "tmp", Len::Elems);
        self.temp_of[x] = Some(t);
        self.need_temp.push((x, self.v.stage_of[x]));
        Stream::Temp(t)
    }

    /// How stage `k` obtains node `x`: `None` when it computes it.
    fn source(&mut self, x: NodeId, k: usize) -> Option<Stream> {
        if self.v.is_axis(self.f, x) {
            return Some(self.broadcast(x));
        }
        match self.f.nodes[x].op {
            Op::Param => return Some(Stream::Param),
            Op::Grad => return Some(Stream::Grad),
            Op::Mat(_) => return self.mat_out[x].map(Stream::Temp),
            Op::StateRead(s) if self.slot_write_stage(s).is_none_or(|w| k <= w) => {
                return Some(Stream::Slot(s))
            }
            _ => {}
        }
        if self.v.stage_of[x] == k && !matches!(self.f.nodes[x].op, Op::StateRead(_)) {
            return None; // computed here
        }
        if let Some(s) = self.slot_of_write(x) {
            if self.slot_write_stage(s).is_some_and(|w| w < k) {
                return Some(Stream::Slot(s));
            }
        }
        if self.remat.contains(&(x, k)) || self.can_recompute(x, k, 6).is_some() {
            if !self.remat.contains(&(x, k)) {
                self.remat.push((x, k));
            }
            return None; // computed again here
        }
        Some(match self.temp_of[x] {
            Some(t) => Stream::Temp(t),
            None => self.materialise(x),
        })
    }

    /// Whether stage `k` can compute `x` (an element-wise operation of an earlier loop) from
    /// what it can read without a scratch buffer, within `budget` operations; returns the
    /// operations it would take. Cheaper than carrying `x` through a buffer (8 bytes per element
    /// written and read back).
    fn can_recompute(&self, x: NodeId, k: usize, budget: usize) -> Option<usize> {
        let (f, v) = (self.f, self.v);
        if budget == 0
            || !v.is_elem(f, x)
            || matches!(
                f.nodes[x].op,
                Op::Param | Op::Grad | Op::StateRead(_) | Op::Mat(_)
            )
        {
            return None;
        }
        let mut used = 1;
        for o in operands(&f.nodes[x].op) {
            let o = v.repl[o];
            let readable = !v.is_elem(f, o)
                || match f.nodes[o].op {
                    Op::Param | Op::Grad => true,
                    Op::Mat(_) => self.mat_out[o].is_some(),
                    Op::StateRead(s) => self.slot_write_stage(s).is_none_or(|w| k <= w),
                    _ => {
                        v.stage_of[o] == k
                            || self.remat.contains(&(o, k))
                            || self
                                .slot_of_write(o)
                                .is_some_and(|s| self.slot_write_stage(s).is_some_and(|w| w < k))
                    }
                };
            if !readable {
                used += self.can_recompute(o, k, budget - used)?;
            }
            if used > budget {
                return None;
            }
        }
        Some(used)
    }

    /// Where a barrier after stage `k` reads its input `input`; `refs` collects the values stage
    /// `k` must have.
    fn mat_input(&mut self, input: NodeId, k: usize, refs: &mut Vec<NodeId>) -> Stream {
        match self.f.nodes[input].op {
            Op::Param => Stream::Param,
            Op::Grad => Stream::Grad,
            Op::Mat(_) => Stream::Temp(self.mat_out[input].unwrap_or(0)),
            _ => match self.slot_of_write(input) {
                Some(s) if self.slot_write_stage(s).is_some_and(|w| w <= k) => Stream::Slot(s),
                _ => {
                    refs.push(input);
                    match self.source(input, self.v.stage_of[input]) {
                        Some(s) => s,
                        // computed in its own stage: force a scratch buffer
                        None => self.materialise(input),
                    }
                }
            },
        }
    }

    /// The barriers that run before stage `stage` (after stage `stage - 1`, whose loop makes
    /// their input; before stage 0: on the raw gradient or parameter).
    fn barriers_at(&mut self, stage: usize, refs: &mut Vec<NodeId>) -> Vec<MatCall> {
        let k = stage.saturating_sub(1);
        let (f, v) = (self.f, self.v);
        let mut calls = Vec::new();
        for i in v.live_nodes() {
            let Some(m) = barrier_node(&f.nodes[i].op) else {
                continue;
            };
            if v.stage_of[i] != stage {
                continue;
            }
            let input = self.mat_input(v.repl[m.input], k, refs);
            let basis_q = m.basis.and_then(|b| match &f.nodes[v.repl[b]].op {
                Op::Mat(bm) => bm.slots.get(1).map(|s| f.slots.len() + s),
                _ => None,
            });
            calls.push(MatCall {
                def: m.def,
                input,
                out: self.mat_out[i].unwrap_or(0),
                args: m.args.iter().map(|&(k, a)| (k, v.repl[a])).collect(),
                consts: m.consts.clone(),
                slots: m.slots.iter().map(|s| f.slots.len() + s).collect(),
                basis_q,
            });
        }
        calls
    }

    /// The axis reductions of values computed by stage `k` (they run after its loop).
    fn axis_after(&mut self, k: usize, refs: &mut Vec<NodeId>) -> Vec<AxisCall> {
        let (f, v) = (self.f, self.v);
        let mut calls = Vec::new();
        for i in v.live_nodes() {
            let Op::Axis(axis, kind, x) = f.nodes[i].op else {
                continue;
            };
            if v.stage_of[i] != k + 1 {
                continue;
            }
            let input = self.mat_input(v.repl[x], k, refs);
            calls.push(AxisCall {
                axis,
                kind,
                input,
                out: self.axis_temp[i].unwrap_or(0),
            });
        }
        calls
    }

    /// Everything stage `k` references: its nodes' operands, its writes, its reductions and its
    /// barriers' inputs. Fills the stage's writes, reductions and barriers.
    fn references(&mut self, k: usize, st: &mut Stage) -> (Vec<NodeId>, Vec<MatCall>) {
        let (f, v) = (self.f, self.v);
        let r = |x: NodeId| v.repl[x];
        let mut refs: Vec<NodeId> = Vec::new();
        for &i in &st.nodes {
            refs.extend(operands(&f.nodes[i].op).into_iter().map(r));
        }
        for &s in &v.slots {
            if let Some(w) = f.slots[s].write {
                // per-row and per-column states are written by the axis code, not the loop
                if v.stage_of[r(w)] == k && !v.is_axis(f, r(w)) {
                    st.writes.push((Stream::Slot(s), r(w)));
                    refs.push(r(w));
                }
            }
        }
        if k + 1 == v.stages.len() {
            st.writes.push((Stream::Param, v.param_write));
            refs.push(v.param_write);
        }
        for i in v.live_nodes() {
            let (kind, x, global) = match f.nodes[i].op {
                Op::Reduce(kind, x) => (kind, x, None),
                Op::Global(kind, x, g) => (kind, x, Some(g)),
                _ => continue,
            };
            if v.stage_of[r(x)] == k {
                st.reductions.push(Reduction {
                    kind,
                    value: r(x),
                    node: i,
                    global,
                });
                refs.push(r(x));
            }
        }
        let calls = self.barriers_at(k + 1, &mut refs);
        let axis = self.axis_after(k, &mut refs);
        self.axis_calls.push(axis);
        refs.sort_unstable();
        refs.dedup();
        (refs, calls)
    }

    /// The stages, the barriers after each, the scratch buffers and the axis work.
    fn build(mut self) -> Built {
        let (f, v) = (self.f, self.v);
        let nstages = v.stages.len();
        let mut stages: Vec<Stage> = (0..nstages).map(|_| Stage::default()).collect();
        let mut barriers = Vec::with_capacity(nstages);
        let pre_barriers = self.barriers_at(0, &mut Vec::new());
        // element nodes computed in their stage (matrix outputs and leaves are loaded)
        for i in v.live_nodes() {
            if v.is_elem(f, i)
                && !matches!(
                    f.nodes[i].op,
                    Op::Param | Op::Grad | Op::StateRead(_) | Op::Mat(_)
                )
            {
                stages[v.stage_of[i]].nodes.push(i);
            }
        }
        for (k, st) in stages.iter_mut().enumerate() {
            let (mut refs, calls) = self.references(k, st);
            barriers.push(calls);
            let mut seen: Vec<NodeId> = Vec::new();
            // in rounds: a value computed again here needs its own operands
            while !refs.is_empty() {
                let mut next = Vec::new();
                for x in refs {
                    if seen.contains(&x) {
                        continue;
                    }
                    seen.push(x);
                    if !v.is_elem(f, x) && !v.is_axis(f, x) {
                        if !st.scalars.contains(&x) {
                            st.scalars.push(x);
                        }
                    } else if let Some(src) = self.source(x, k) {
                        st.loads.push((x, src));
                    } else if v.stage_of[x] != k && !st.nodes.contains(&x) {
                        st.nodes.push(x);
                        next.extend(operands(&f.nodes[x].op).into_iter().map(|o| v.repl[o]));
                    }
                }
                next.sort_unstable();
                next.dedup();
                refs = next;
            }
            st.nodes.sort_unstable();
        }
        self.scratch_writes(&mut stages);
        for st in &mut stages {
            finish_stage(f, v, st);
        }
        // per-row and per-column values computed before each loop (and after the last);
        // axis reductions themselves are filled by their barrier
        let axis_nodes = (0..=nstages)
            .map(|k| {
                v.live_nodes()
                    .filter(|&i| {
                        v.is_axis(f, i)
                            && v.stage_of[i] == k
                            && !matches!(f.nodes[i].op, Op::Axis(..))
                    })
                    .collect()
            })
            .collect();
        let mut axis_calls = self.axis_calls;
        axis_calls.resize_with(nstages, Vec::new);
        Built {
            stages,
            barriers,
            pre_barriers,
            temps: self.temps,
            temp_lens: self.temp_lens,
            axis_calls,
            axis_nodes,
            axis_temp: self.axis_temp,
            bcast: self.bcast,
        }
    }

    /// Scratch writes in the stage that computes each materialised value.
    fn scratch_writes(&self, stages: &mut [Stage]) {
        for &(x, j) in &self.need_temp {
            let (Some(t), Some(st)) = (self.temp_of[x], stages.get_mut(j)) else {
                continue;
            };
            st.writes.push((Stream::Temp(t), x));
            // a leaf materialised in its stage must be loaded there
            if let Op::StateRead(s) = self.f.nodes[x].op {
                if !st.loads.iter().any(|(y, _)| *y == x) {
                    st.loads.push((x, Stream::Slot(s)));
                }
            }
        }
    }
}

/// Sorts a stage's loads, lists its buffers, and adds the host values its writes read.
fn finish_stage(f: &Fused, v: &Variant, st: &mut Stage) {
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
    for (_, x) in st.writes.clone() {
        if !v.is_elem(f, x) && !v.is_axis(f, x) && !st.scalars.contains(&x) {
            st.scalars.push(x);
        }
    }
}
