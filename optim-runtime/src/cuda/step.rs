//! The device step driver: one optimizer step with every element-wise buffer on a device.
//!
//! The same contract as the CPU step ([`crate::optimizer`]): validation (hyperparameters at
//! this step, names, shapes, state) is agreed through [`StepSync`] before anything is written;
//! the non-finite-gradient policy is decided next; then state is created and each parameter's
//! generated `prepare` runs on its host state, linked to the device ([`super::link`]) so that
//! element-wise buffers are made there. Each stage then runs as **one multi-tensor launch per
//! generated loop** over every tensor that runs it, cut into rows of at most
//! [`Backend::chunk_len`] elements ([`super::backend::rows`]); its scalars are packed once per
//! stage; reduction totals come back to the host once per stage (they feed the next stage's
//! scalars and global reductions); barriers run through the link; `finish` writes scalar
//! states. Host code (scalars, per-row values, matrix state) is the generated code of the CPU
//! path, unchanged.
//!
//! Failure: an allocation failure while state is created undoes the step's changes to the host
//! state and frees what it allocated (nothing is modified). A device failure once stages run
//! returns [`OptimError::Device`] with the step half done (the device is then unusable anyway).

use super::backend::{rows, Backend, StageKernel, StageTensor};
use super::link::{DeviceLink, LinkCell, Loc};
use super::store::{Store, Stored};
use crate::error::OptimError;
use crate::kernel::{
    stage_count, GlobalContribution, GlobalMap, Scalars, StagedJob, MAX_GLOBALS, MAX_REDUCTIONS,
};
use crate::matrix::OrthogonalizeConfig;
use crate::optimizer::{
    agreed, ensure_states, skip_non_finite, validate, DslOptimizer, Meta, StepSync,
};
use crate::state::ParamState;
use crate::{Float, ParamInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One parameter of a device step: its name, shape and module, and its value and gradient
/// buffers on the device (moved in for the step and handed back after it). Public only for
/// backend crates, through [`crate::cuda::__private`].
pub struct DevEntry<'a, B> {
    /// Unique name; the state is keyed by it.
    pub name: &'a str,
    /// Logical shape (as [`ParamSlice::shape`](crate::ParamSlice::shape)).
    pub shape: &'a [usize],
    /// The module the parameter belongs to, for `module == ...` routing guards (`""` for none).
    pub module: &'a str,
    /// The parameter's values; the last stage updates them in place.
    pub param: B,
    /// The gradient (read only).
    pub grad: B,
}

/// A parameter's device buffers while its step runs.
struct Bufs<B> {
    param: B,
    grad: B,
    slots: Vec<Option<B>>,
    temps: Vec<Option<B>>,
}

/// The [`DeviceLink`] of one parameter during a step.
struct Link<E: Float, B: Backend<E>> {
    backend: B,
    bufs: Mutex<Bufs<B::Buf>>,
    error: Mutex<Option<OptimError>>,
    /// What this step put on the device (undone if the step is).
    created: Mutex<Made>,
}

/// Buffers a step put on the device.
#[derive(Default)]
struct Made {
    /// Slots uploaded from the host state.
    uploaded: Vec<usize>,
    /// Slots created.
    slots: Vec<usize>,
    /// Scratch buffers created.
    temps: Vec<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn slot_mut<B>(v: &mut Vec<Option<B>>, k: usize) -> &mut Option<B> {
    if v.len() <= k {
        v.resize_with(k + 1, || None);
    }
    &mut v[k]
}

impl<E: Float, B: Backend<E>> Link<E, B> {
    fn take_error(&self) -> Option<OptimError> {
        lock(&self.error).take()
    }

    fn buf(b: &Bufs<B::Buf>, loc: Loc) -> Option<&B::Buf> {
        match loc {
            Loc::Param => Some(&b.param),
            Loc::Grad => Some(&b.grad),
            Loc::Slot(k) => b.slots.get(k).and_then(Option::as_ref),
            Loc::Temp(t) => b.temps.get(t).and_then(Option::as_ref),
        }
    }

    fn buf_mut(b: &mut Bufs<B::Buf>, loc: Loc) -> Option<&mut B::Buf> {
        match loc {
            Loc::Param => Some(&mut b.param),
            Loc::Grad => Some(&mut b.grad),
            Loc::Slot(k) => b.slots.get_mut(k).and_then(Option::as_mut),
            Loc::Temp(t) => b.temps.get_mut(t).and_then(Option::as_mut),
        }
    }

    /// `(input, out scratch)` borrowed together; `None` if either is missing or they alias.
    fn pair(b: &mut Bufs<B::Buf>, input: Loc, out: usize) -> Option<(&B::Buf, &mut B::Buf)> {
        if input == Loc::Temp(out) {
            return None;
        }
        let Bufs {
            param,
            grad,
            slots,
            temps,
        } = b;
        let split = out.min(temps.len());
        let (before, rest) = temps.split_at_mut(split);
        let (o, after) = rest.split_first_mut()?;
        let o = o.as_mut()?;
        let i = match input {
            Loc::Param => &*param,
            Loc::Grad => &*grad,
            Loc::Slot(k) => slots.get(k)?.as_ref()?,
            Loc::Temp(t) if t < out => before.get(t)?.as_ref()?,
            Loc::Temp(t) => after.get(t - out - 1)?.as_ref()?,
        };
        Some((i, o))
    }
}

impl<E: Float, B: Backend<E>> DeviceLink<E> for Link<E, B> {
    fn ensure_slot(&self, slot: usize, len: usize, init: E, host: &mut Vec<E>) -> bool {
        let mut b = lock(&self.bufs);
        let cur = slot_mut(&mut b.slots, slot);
        if cur.as_ref().is_some_and(|x| B::len(x) == len) {
            return false;
        }
        if host.len() == len {
            match self.backend.upload(host) {
                Ok(x) => {
                    *cur = Some(x);
                    *host = Vec::new();
                }
                Err(e) => self.fail(e),
            }
            lock(&self.created).uploaded.push(slot);
            return false;
        }
        match self.backend.alloc(len, init) {
            Ok(x) => *cur = Some(x),
            Err(e) => self.fail(e),
        }
        lock(&self.created).slots.push(slot);
        true
    }

    fn ensure_temp(&self, temp: usize, len: usize) {
        let mut b = lock(&self.bufs);
        let cur = slot_mut(&mut b.temps, temp);
        if cur.as_ref().is_some_and(|x| B::len(x) == len) {
            return;
        }
        match self.backend.alloc(len, E::zero()) {
            Ok(x) => *cur = Some(x),
            Err(e) => self.fail(e),
        }
        lock(&self.created).temps.push(temp);
    }

    fn resident(&self, loc: Loc) -> bool {
        Self::buf(&lock(&self.bufs), loc).is_some()
    }

    fn download(&self, loc: Loc) -> Vec<E> {
        let b = lock(&self.bufs);
        match Self::buf(&b, loc).map(|x| self.backend.read(x)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                self.fail(e);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn upload(&self, loc: Loc, data: &[E]) {
        let mut b = lock(&self.bufs);
        if let Some(x) = Self::buf_mut(&mut b, loc) {
            if let Err(e) = self.backend.write(x, data) {
                self.fail(e);
            }
        }
    }

    fn broadcast(&self, line: &[E], temp: usize, row: bool, cols: usize) {
        let mut b = lock(&self.bufs);
        if let Some(x) = Self::buf_mut(&mut b, Loc::Temp(temp)) {
            if let Err(e) = self.backend.broadcast(line, x, row, cols) {
                self.fail(e);
            }
        }
    }

    fn orthogonalize(
        &self,
        cfg: &OrthogonalizeConfig,
        input: Loc,
        out: usize,
        rows: usize,
        cols: usize,
    ) -> bool {
        let Some(ops) = self.backend.blas() else {
            return false;
        };
        let mut b = lock(&self.bufs);
        let Some((i, o)) = Self::pair(&mut b, input, out) else {
            return false;
        };
        if let Err(e) = super::ns::orthogonalize_on(ops, i, o, rows, cols, cfg) {
            self.fail(e);
        }
        true
    }

    fn fail(&self, e: OptimError) {
        lock(&self.error).get_or_insert(e);
    }
}

/// What undoing a step's state creation needs of one parameter's host state.
struct Snapshot {
    step: u64,
    scalars: Vec<f64>,
    scalars_init: Vec<bool>,
    empty_buffers: Vec<bool>,
    empty_temps: Vec<bool>,
    matrix: crate::matrix::MatrixStats,
}

impl Snapshot {
    fn of<E>(ps: &ParamState<E>) -> Self {
        Snapshot {
            step: ps.step,
            scalars: ps.scalars.clone(),
            scalars_init: ps.scalars_init.clone(),
            empty_buffers: ps.buffers.iter().map(Vec::is_empty).collect(),
            empty_temps: ps.temps.iter().map(Vec::is_empty).collect(),
            matrix: ps.matrix,
        }
    }

    fn restore<E>(self, ps: &mut ParamState<E>) {
        ps.step = self.step;
        ps.scalars = self.scalars;
        ps.scalars_init = self.scalars_init;
        ps.matrix = self.matrix;
        for (k, b) in ps.buffers.iter_mut().enumerate() {
            if self.empty_buffers.get(k).copied().unwrap_or(true) {
                *b = Vec::new();
            }
        }
        ps.buffers.truncate(self.empty_buffers.len());
        for (t, b) in ps.temps.iter_mut().enumerate() {
            if self.empty_temps.get(t).copied().unwrap_or(true) {
                *b = Vec::new();
            }
        }
        ps.temps.truncate(self.empty_temps.len());
    }
}

/// One loop of one parameter, as the job handed it out.
struct Call<E> {
    entry: usize,
    stage: StageKernel<E>,
    scalars: Scalars<E>,
    globals: GlobalMap,
}

fn no_twin(name: &str) -> OptimError {
    OptimError::Device(format!(
        "parameter `{name}`: a loop has no CUDA twin (a hand-written kernel, or state stored as bf16/f16/q8/uq8); it cannot run on a device"
    ))
}

/// Runs one step of `opt` over `entries` on `store`'s device (see the [module docs](self)).
/// Every entry's buffers are handed back in it, also on error.
pub(crate) fn step_device<E, O, B>(
    opt: &mut O,
    store: &mut Store<E, B>,
    entries: &mut [DevEntry<'_, B::Buf>],
    sync: &mut dyn StepSync,
) -> Result<(), OptimError>
where
    E: Float,
    O: DslOptimizer<E>,
    B: Backend<E>,
{
    // 1. validation, agreed by every process
    let metas: Vec<Meta<'_>> = entries
        .iter()
        .map(|e| Meta {
            info: ParamInfo {
                name: e.name,
                shape: e.shape,
                module: e.module,
            },
            param_len: B::len(&e.param),
            grad_len: B::len(&e.grad),
        })
        .collect();
    let (values, rules) = agreed(validate(opt, &metas), sync)?;

    // 1b. non-finite gradients (one read of every gradient on the device)
    let first_bad = || {
        let grads: Vec<&B::Buf> = entries.iter().map(|e| &e.grad).collect();
        let finite = store.backend.all_finite(&grads)?;
        Ok(finite.iter().position(|f| !f).map(|b| entries[b].name))
    };
    if skip_non_finite(opt, sync, first_bad)? {
        return Ok(());
    }

    // 2. host state (created or restarted; a restarted state drops its device buffers) and one
    // link per parameter holding its device buffers
    let advance = !entries.is_empty();
    let backend = store.backend.clone();
    // placeholders for the buffers lent to the links, made before anything moves (making one
    // can fail on a device); the hand-back swaps them back
    let mut spare: Vec<(B::Buf, B::Buf)> = Vec::with_capacity(entries.len());
    for _ in 0..entries.len() {
        spare.push((backend.empty()?, backend.empty()?));
    }
    let fresh = ensure_states(opt.opt_state_mut(), &metas, &rules);
    let links: Vec<Arc<Link<E, B>>> = entries
        .iter_mut()
        .zip(&fresh)
        .zip(spare)
        .map(|((e, &fresh), (param, grad))| {
            let stored = store.params.entry(e.name.to_string()).or_default();
            if fresh {
                stored.slots.clear();
                stored.temps.clear();
            }
            Arc::new(Link {
                backend: backend.clone(),
                bufs: Mutex::new(Bufs {
                    param: std::mem::replace(&mut e.param, param),
                    grad: std::mem::replace(&mut e.grad, grad),
                    slots: std::mem::take(&mut stored.slots),
                    temps: std::mem::take(&mut stored.temps),
                }),
                error: Mutex::new(None),
                created: Mutex::new(Made::default()),
            })
        })
        .collect();

    let result = run(opt, &values, &rules, &metas, &links, &fresh, sync);

    // 3. hand every buffer back: the entries' to the caller, state to the store
    let state = opt.opt_state_mut();
    for ((e, link), m) in entries.iter_mut().zip(&links).zip(&metas) {
        if let Some(ps) = state.params.get_mut(m.info.name) {
            ps.device = LinkCell::default();
        }
        let mut b = lock(&link.bufs);
        std::mem::swap(&mut e.param, &mut b.param);
        std::mem::swap(&mut e.grad, &mut b.grad);
        let stored: &mut Stored<B::Buf> = store.params.entry(m.info.name.to_string()).or_default();
        stored.slots = std::mem::take(&mut b.slots);
        stored.temps = std::mem::take(&mut b.temps);
    }
    result?;
    if advance {
        opt.opt_state_mut().step += 1;
    }
    Ok(())
}

/// Prepares every parameter on its linked state and runs the stages; undoes state creation if
/// the device cannot allocate it.
fn run<E, O, B>(
    opt: &mut O,
    values: &<O::Config as crate::optimizer::OptimizerConfig>::Values,
    rules: &[usize],
    metas: &[Meta<'_>],
    links: &[Arc<Link<E, B>>],
    fresh: &[bool],
    sync: &mut dyn StepSync,
) -> Result<(), OptimError>
where
    E: Float,
    O: DslOptimizer<E>,
    B: Backend<E>,
{
    let max_stages = O::max_stages();
    let state = opt.opt_state_mut();
    let mut snapshots = Vec::with_capacity(metas.len());
    let mut by_name: HashMap<&str, &mut ParamState<E>> = state
        .params
        .iter_mut()
        .filter(|(k, _)| metas.iter().any(|m| m.info.name == k.as_str()))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let mut jobs: Vec<O::Job<'_>> = Vec::with_capacity(metas.len());
    for ((m, &rule), link) in metas.iter().zip(rules).zip(links) {
        let Some(ps) = by_name.remove(m.info.name) else {
            continue; // unreachable: every name was inserted by `ensure_states`
        };
        snapshots.push(Snapshot::of(ps));
        ps.rule = rule;
        let dyn_link: Arc<dyn DeviceLink<E>> = link.clone();
        ps.device = LinkCell(Some(dyn_link));
        jobs.push(O::prepare(values, rule, ps, m.info, &mut [], &[]));
    }
    if let Some(e) = links.iter().find_map(|l| l.take_error()) {
        drop(jobs);
        undo(opt.opt_state_mut(), metas, links, fresh, snapshots);
        return Err(e);
    }
    let mut erased: Vec<&mut dyn StagedJob<E>> = jobs
        .iter_mut()
        .map(|j| j as &mut dyn StagedJob<E>)
        .collect();
    execute(&mut erased, links, metas, max_stages, sync)
}

/// Undoes the state creation of a step that could not allocate its device buffers: slots
/// uploaded from the host go back to the host, slots and scratch buffers made by the step are
/// freed, and each host state is restored (or removed, when the step created it).
fn undo<E: Float, B: Backend<E>>(
    state: &mut crate::state::OptState<E>,
    metas: &[Meta<'_>],
    links: &[Arc<Link<E, B>>],
    fresh: &[bool],
    snapshots: Vec<Snapshot>,
) {
    for (((m, link), &fresh), snap) in metas.iter().zip(links).zip(fresh).zip(snapshots) {
        let made = std::mem::take(&mut *lock(&link.created));
        let mut b = lock(&link.bufs);
        for &k in &made.uploaded {
            let back = b
                .slots
                .get(k)
                .and_then(Option::as_ref)
                .map(|x| link.backend.read(x));
            let host = state
                .params
                .get_mut(m.info.name)
                .and_then(|p| p.buffers.get_mut(k));
            if let (Some(Ok(v)), Some(h)) = (back, host) {
                *h = v;
            }
        }
        for &k in made.uploaded.iter().chain(&made.slots) {
            if let Some(s) = b.slots.get_mut(k) {
                *s = None;
            }
        }
        for &t in &made.temps {
            if let Some(s) = b.temps.get_mut(t) {
                *s = None;
            }
        }
        drop(b);
        if fresh {
            state.params.remove(m.info.name);
        } else if let Some(ps) = state.params.get_mut(m.info.name) {
            snap.restore(ps);
        }
    }
}

/// Appends to `bufs` the buffers of `have` at the ascending indices `want` (what a kernel
/// reads, in its order); `missing(i)` is the error for an index past `have` or not on the device.
fn lend<'b, T>(
    have: &'b mut [Option<T>],
    want: &[usize],
    bufs: &mut Vec<&'b mut T>,
    missing: impl Fn(usize) -> OptimError,
) -> Result<(), OptimError> {
    let mut want = want.iter().peekable();
    for (i, s) in have.iter_mut().enumerate() {
        if want.peek() == Some(&&i) {
            want.next();
            bufs.push(s.as_mut().ok_or_else(|| missing(i))?);
        }
    }
    match want.next() {
        Some(&i) => Err(missing(i)),
        None => Ok(()),
    }
}

/// The stages of every job, stage by stage across all parameters (as the CPU executor), each
/// loop as one multi-tensor launch. The jobs are trait objects, so that this is compiled once
/// per element type and backend, not once per optimizer.
fn execute<E: Float, B: Backend<E>>(
    jobs: &mut [&mut dyn StagedJob<E>],
    links: &[Arc<Link<E, B>>],
    metas: &[Meta<'_>],
    max_stages: usize,
    sync: &mut dyn StepSync,
) -> Result<(), OptimError> {
    let stages = stage_count(jobs, max_stages);
    let check = || {
        links
            .iter()
            .find_map(|l| l.take_error())
            .map_or(Ok(()), Err)
    };
    let mut globals = [0.0f64; MAX_GLOBALS];
    // whole-tensor work on the raw gradient or parameter, before the first loop (as the CPU
    // executor), through the same link as the barriers
    for j in jobs.iter_mut().filter(|j| j.has_pre_barrier()) {
        j.pre_barrier();
    }
    check()?;
    for k in 0..stages {
        let mut calls: Vec<Call<E>> = Vec::new();
        for (i, j) in jobs.iter_mut().enumerate() {
            if j.stages() <= k {
                continue;
            }
            let c = j.kernel(k, &globals);
            let cuda = c.cuda.ok_or_else(|| no_twin(metas[i].info.name))?;
            if cuda.n_bufs != c.bufs.len() || cuda.n_reductions != c.reductions {
                return Err(OptimError::Device(format!(
                    "parameter `{}`: stage {} of {} does not match its CUDA twin",
                    metas[i].info.name, cuda.stage, cuda.optimizer
                )));
            }
            calls.push(Call {
                entry: i,
                stage: StageKernel {
                    rust: c.kernel,
                    cuda: Some(cuda),
                    reductions: c.reductions.min(MAX_REDUCTIONS),
                    n_bufs: cuda.n_bufs,
                },
                scalars: c.scalars.clone(),
                globals: c.globals.clone(),
            });
        }
        check()?;
        let sums = launch_all(&calls, links, metas)?;
        let mut contributions = Vec::with_capacity(calls.len());
        let mut per_job: Vec<Option<[f64; MAX_REDUCTIONS]>> = vec![None; jobs.len()];
        for (c, red) in calls.iter().zip(&sums) {
            let mut g = GlobalContribution::default();
            for &(l, gi) in &c.globals {
                if gi < MAX_GLOBALS && l < MAX_REDUCTIONS {
                    g.sums[gi] += red[l];
                    g.produced[gi] = true;
                }
            }
            contributions.push(g);
            per_job[c.entry] = Some(*red);
        }
        let total = sync.global_sums(&contributions)?;
        for (j, red) in jobs.iter_mut().zip(&per_job) {
            if let Some(red) = red {
                j.reduced(k, red);
            }
        }
        for g in 0..MAX_GLOBALS {
            if total.produced[g] {
                globals[g] = total.sums[g];
            }
        }
        if k + 1 < stages {
            for j in jobs.iter_mut().filter(|j| j.stages() > k + 1) {
                j.barrier(k);
            }
            check()?;
        }
    }
    for j in jobs.iter_mut() {
        j.finish();
    }
    check()
}

/// Launches one stage's calls: one multi-tensor launch per distinct loop (first-come order),
/// and returns each call's reduction totals (its rows added in order).
fn launch_all<E: Float, B: Backend<E>>(
    calls: &[Call<E>],
    links: &[Arc<Link<E, B>>],
    metas: &[Meta<'_>],
) -> Result<Vec<[f64; MAX_REDUCTIONS]>, OptimError> {
    let mut out = vec![[0.0f64; MAX_REDUCTIONS]; calls.len()];
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (ci, c) in calls.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| same_loop(&calls[g[0]].stage, &c.stage))
        {
            Some(g) => g.push(ci),
            None => groups.push(vec![ci]),
        }
    }
    let Some(first) = links.first() else {
        return Ok(out);
    };
    let backend = first.backend.clone();
    for group in groups {
        let stage = calls[group[0]].stage;
        let cuda = stage
            .cuda
            .ok_or_else(|| no_twin(metas[calls[group[0]].entry].info.name))?;
        let mut guards: Vec<MutexGuard<'_, Bufs<B::Buf>>> = group
            .iter()
            .map(|&ci| lock(&links[calls[ci].entry].bufs))
            .collect();
        let mut tensors = Vec::with_capacity(group.len());
        let mut lens = Vec::with_capacity(group.len());
        for (g, &ci) in guards.iter_mut().zip(&group) {
            let name = metas[calls[ci].entry].info.name;
            let Bufs {
                param,
                grad,
                slots,
                temps,
            } = &mut **g;
            let missing = |what: &str, i: usize| {
                OptimError::Device(format!(
                    "parameter `{name}`: {} reads {what} {i}, which is not on the device",
                    cuda.name
                ))
            };
            let mut bufs: Vec<&mut B::Buf> = Vec::with_capacity(stage.n_bufs);
            lend(slots, cuda.slots, &mut bufs, |k| missing("state slot", k))?;
            lend(temps, cuda.temps, &mut bufs, |t| {
                missing("scratch buffer", t)
            })?;
            lens.push(B::len(param));
            tensors.push(StageTensor {
                param,
                grad: &*grad,
                bufs,
                scalars: &calls[ci].scalars[..],
            });
        }
        let rows = rows(&lens, backend.chunk_len());
        let red = backend.run_stage(&stage, &rows, &mut tensors)?;
        let nred = stage.reductions;
        for (r, row) in rows.iter().enumerate() {
            let ci = group[row.tensor];
            for j in 0..nred {
                out[ci][j] += red.get(r * nred + j).copied().unwrap_or(0.0);
            }
        }
    }
    Ok(out)
}

/// Whether two calls run the same loop (so they share a launch). Records are compared by
/// entry point and source: the address of a `const` item's data is not unique.
fn same_loop<E>(a: &StageKernel<E>, b: &StageKernel<E>) -> bool {
    match (a.cuda, b.cuda) {
        (Some(x), Some(y)) => {
            std::ptr::eq(x, y) || (x.name == y.name && x.source_f32 == y.source_f32)
        }
        _ => false,
    }
}
