//! [`Distributed`]: an optimizer whose state and update are sharded over the ranks of a
//! [`Communicator`] (ZeRO stage 1), with the same `update_slices` surface as the optimizer.

use crate::comm::{CommElem, Communicator};
use crate::layout::{Layout, ShardOptions};
use crate::sync::{agree, agree_with_header, comm_error, min_u64, CommSync};
use optim_runtime::{
    DslOptimizer, Float, NonFinitePolicy, OptimError, OptimizerConfig, ParamSlice,
};
use std::any::Any;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// How gradients are averaged across ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradSync {
    /// Ordered reduce-scatter (the default): each rank receives every rank's gradient for the
    /// parameters it owns (one `all_to_all_v`) and averages them in rank order,
    /// `mean = (((g₀ + g₁) + g₂) + … + g_{N−1}) / N`, every operation rounded in the element
    /// type. Bit-reproducible: the mean of an element does not depend on which rank owns it, on
    /// the partition or on the transport. Moves `(N−1)/N` of the gradient bytes per rank, as a
    /// ring reduce-scatter does.
    #[default]
    ReduceScatter,
    /// One `all_reduce_sum` of all gradients, then `/ N`: the transport's summation order (MPI
    /// and NCCL use rings and trees), so the mean can differ from the ordered one in the last
    /// bit, and Adam-type optimizers amplify such differences. Moves about twice the bytes of
    /// the reduce-scatter; offered for comparison and for transports whose all-reduce is much
    /// faster than their all-to-all.
    AllReduce,
}

/// Options of [`Distributed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DistOptions {
    /// Gradient averaging (default [`GradSync::ReduceScatter`]).
    pub grad_sync: GradSync,
    /// Partition options (default: split only element-wise parameters, blocks ≥ 64 Ki elements).
    pub shard: ShardOptions,
}

/// Wall time of the phases of the last step on this rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepTimings {
    /// Local validation, layout and the agreement collectives.
    pub checks: Duration,
    /// Gradient averaging (the reduce-scatter or all-reduce, and the averaging loop).
    pub grad_sync: Duration,
    /// The optimizer's update of this rank's parameters, and the non-finite decision.
    pub update: Duration,
    /// The all-gather of updated parameters and the copy back.
    pub param_sync: Duration,
}

struct Buffers<E> {
    send: Vec<E>,
    recv: Vec<E>,
    mean: Vec<E>,
}

/// An optimizer `O` run data-parallel over the ranks of `C`, with ZeRO-1 sharding: every rank
/// holds the whole model and computes gradients on its own data, but each parameter's optimizer
/// state lives on, and its update runs on, one rank only (a large element-wise parameter may
/// be split into row blocks over several). See [`Layout`] for who owns what and why.
///
/// One step ([`update_slices`](Self::update_slices)), called with the same parameter list
/// (names, shapes, order) on every rank, each rank passing its own local gradients:
/// 1. checks, on every rank, before anything is written: names, shapes, hyperparameters at
///    this step, the owned state's sizes, and that every rank has the same parameter list,
///    config, step and non-finite policy; all ranks agree on the outcome (the error of the
///    lowest failing rank is returned on every rank);
/// 2. gradients averaged across ranks ([`GradSync`]; by default an ordered reduce-scatter);
/// 3. under [`NonFinitePolicy::SkipStep`]/[`NonFinitePolicy::Error`], one decision for all
///    ranks: skip (every rank counts the skip) or the same error on every rank;
/// 4. the optimizer updates this rank's parameters (a rank that owns nothing still advances the
///    step, so schedules stay in lock-step);
/// 5. one all-gather puts the updated parameters on every rank.
///
/// **Bit-identity.** With [`GradSync::ReduceScatter`], the parameters after each step are
/// bit-identical to those of the plain optimizer in one process fed the mean gradient
/// `(((g₀ + g₁) + …) + g_{N−1}) / N` in the same parameter order, for any number of ranks. This
/// relies on the runtime summing every per-tensor reduction in fixed 32 Ki-element chunks in a
/// fixed order, whatever the step's size and thread count (so a rank that holds a few
/// parameters computes the same norms as the single process holding all of them).
///
/// **Global reductions** (`global_norm`, `clip_global_norm`, …) span every rank: each rank
/// sums its own pieces, the per-piece sums are exchanged and added in the single process's
/// parameter order ([`crate::sync::CommSync`], the runtime's `StepSync` hook), so the clip
/// factor, and hence the parameters, match the single process bit for bit.
///
/// Communicator failures are reported as [`OptimError::Communication`].
pub struct Distributed<O, C> {
    inner: O,
    comm: C,
    opts: DistOptions,
    layout: Option<(u64, Layout)>,
    timings: StepTimings,
    buffers: Option<Box<dyn Any + Send>>,
}

impl<O, C: Communicator> Distributed<O, C> {
    /// `inner` data-parallel over `comm` with default options.
    pub fn new(inner: O, comm: C) -> Self {
        Self::with_options(inner, comm, DistOptions::default())
    }

    /// `inner` data-parallel over `comm` with `opts`.
    pub fn with_options(inner: O, comm: C, opts: DistOptions) -> Self {
        Distributed {
            inner,
            comm,
            opts,
            layout: None,
            timings: StepTimings::default(),
            buffers: None,
        }
    }

    /// This rank's optimizer (its state holds only this rank's parameters).
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// Mutable access to this rank's optimizer. Changing its config or policy on some ranks
    /// only makes the next step fail on all ranks (the check compares them).
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// The communicator.
    pub fn comm(&self) -> &C {
        &self.comm
    }

    /// The options.
    pub fn options(&self) -> DistOptions {
        self.opts
    }

    /// The partition of the last step's parameter list (`None` before the first step or load).
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref().map(|(_, l)| l)
    }

    /// Phase timings of the last step on this rank.
    pub fn last_timings(&self) -> StepTimings {
        self.timings
    }

    /// Gives back the optimizer and the communicator.
    pub fn into_parts(self) -> (O, C) {
        (self.inner, self.comm)
    }

    pub(crate) fn set_layout(&mut self, key: u64, layout: Layout) {
        self.layout = Some((key, layout));
    }

    /// Copies rank `root`'s parameters into every rank's (one broadcast per parameter), so
    /// that training starts from identical replicas. Collective: call it on every rank with
    /// the same list of parameter lengths.
    ///
    /// # Errors
    /// [`OptimError::Communication`] when the communicator fails (including a `root` out of range).
    pub fn broadcast_params<E: CommElem>(
        &self,
        params: &mut [&mut [E]],
        root: usize,
    ) -> Result<(), OptimError> {
        for p in params.iter_mut() {
            self.comm.broadcast(p, root).map_err(comm_error)?;
        }
        Ok(())
    }
}

/// Hash of the parameter list (names, shapes, order).
pub(crate) fn params_key(params: &[(&str, &[usize])]) -> u64 {
    let mut h = DefaultHasher::new();
    params.len().hash(&mut h);
    for (n, s) in params {
        n.hash(&mut h);
        s.hash(&mut h);
    }
    h.finish()
}

impl<O, C> Distributed<O, C>
where
    C: Communicator,
{
    /// Bytes of optimizer state held on this rank (every allocated buffer and scalar state).
    pub fn state_bytes<E: Float>(&self) -> usize
    where
        O: DslOptimizer<E>,
    {
        self.inner
            .opt_state()
            .params
            .values()
            .map(|ps| {
                ps.buffers.iter().map(Vec::len).sum::<usize>() * E::BYTES + ps.scalars.len() * 8
            })
            .sum()
    }

    /// Hash of what must be equal on every rank besides the parameter list: the config (every
    /// hyperparameter and flag, schedules included), the global step, the non-finite policy,
    /// the options and the rank count.
    fn state_key<E: Float>(&self) -> u64
    where
        O: DslOptimizer<E>,
    {
        let mut h = DefaultHasher::new();
        format!("{:?}", self.inner.config()).hash(&mut h);
        let st = self.inner.opt_state();
        st.step.hash(&mut h);
        st.skipped_steps.hash(&mut h);
        format!("{:?}", st.non_finite).hash(&mut h);
        format!("{:?}", self.opts).hash(&mut h);
        self.comm.size().hash(&mut h);
        h.finish()
    }

    /// The layout for `list`, recomputed when the list changed.
    pub(crate) fn layout_for<E: Float>(&mut self, list: &[(&str, &[usize])]) -> &Layout
    where
        O: DslOptimizer<E>,
    {
        let key = params_key(list);
        if self.layout.as_ref().map(|(k, _)| *k) != Some(key) {
            let l = Layout::compute::<E, O>(
                &self.inner.explain(),
                list,
                self.comm.size(),
                self.opts.shard,
            );
            self.layout = Some((key, l));
        }
        match &self.layout {
            Some((_, l)) => l,
            None => unreachable!("layout was set above"),
        }
    }

    /// Everything checked before a step, on this rank only.
    fn check_local<E: Float>(&mut self, params: &[ParamSlice<'_, E>]) -> Result<(), OptimError>
    where
        O: DslOptimizer<E>,
    {
        let mut seen = HashSet::with_capacity(params.len());
        for p in params {
            if !seen.insert(p.name) {
                return Err(OptimError::DuplicateParam(p.name.to_string()));
            }
            let numel: usize = p.shape.iter().product();
            if p.param.len() != numel {
                return Err(OptimError::ShapeMismatch {
                    param: p.name.to_string(),
                    detail: format!(
                        "shape {:?} has {numel} elements but the parameter has {}",
                        p.shape,
                        p.param.len()
                    ),
                });
            }
            if p.grad.len() != p.param.len() {
                return Err(OptimError::ShapeMismatch {
                    param: p.name.to_string(),
                    detail: format!(
                        "gradient has {} elements, parameter has {}",
                        p.grad.len(),
                        p.param.len()
                    ),
                });
            }
        }
        let step = self.inner.opt_state().step;
        self.inner.config().values(step)?;
        let me = self.comm.rank();
        let list: Vec<(&str, &[usize])> = params.iter().map(|p| (p.name, p.shape)).collect();
        let layout = self.layout_for::<E>(&list).clone();
        let state = &self.inner.opt_state().params;
        let mut my_piece = vec![None; layout.params.len()];
        let mut owner_of = vec![0; layout.params.len()];
        for piece in &layout.pieces {
            owner_of[piece.param] = piece.owner;
            if piece.owner == me {
                my_piece[piece.param] = Some(piece);
            }
        }
        for (k, entry) in layout.params.iter().enumerate() {
            let name = entry.name.as_str();
            let Some(ps) = state.get(name) else { continue };
            let Some(piece) = my_piece[k] else {
                return Err(OptimError::InvalidUse(format!(
                    "rank {me} holds optimizer state for `{name}`, which rank {} now owns: the \
                     parameter list changed after the first step; save a distributed checkpoint \
                     and load it to reshard",
                    owner_of[k]
                )));
            };
            if ps.len != piece.len() {
                return Err(OptimError::ShapeMismatch {
                    param: name.to_string(),
                    detail: format!(
                        "this rank's block has {} elements but its optimizer state has {}",
                        piece.len(),
                        ps.len
                    ),
                });
            }
        }
        Ok(())
    }
}

impl<O, C> Distributed<O, C>
where
    C: Communicator,
{
    /// One data-parallel step over the whole model; `params` holds this rank's local gradients
    /// and is updated to the same values on every rank. Collective: every rank calls it with
    /// the same parameter list (names, shapes, order). See the type's docs for the phases.
    ///
    /// # Errors
    /// On every rank alike: the errors of [`DslOptimizer::update_slices`] (detected on any
    /// rank; nothing is modified on any rank); [`OptimError::InvalidUse`] when the ranks' parameter
    /// lists, configs, steps or policies differ, when this rank holds state for a parameter
    /// that another rank now owns, or for a global reduction on more than one rank;
    /// [`OptimError::Communication`] when the communicator fails.
    pub fn update_slices<E>(&mut self, params: &mut [ParamSlice<'_, E>]) -> Result<(), OptimError>
    where
        E: Float + CommElem,
        O: DslOptimizer<E>,
    {
        let t0 = Instant::now();
        // 1. checks, agreed by all ranks before anything is written.
        let local = self.check_local(params);
        let pkey = params_key(&params.iter().map(|p| (p.name, p.shape)).collect::<Vec<_>>());
        let skey = self.state_key::<E>();
        agree_with_header(&self.comm, local, [pkey, skey])?;
        // Moved out for the step (the phases borrow `self` mutably) and put back at the end.
        let Some((key, layout)) = self.layout.take() else {
            unreachable!("check_local computed the layout")
        };
        let mut bufs = self
            .buffers
            .take()
            .and_then(|b| b.downcast::<Buffers<E>>().ok())
            .map(|b| *b)
            .unwrap_or(Buffers {
                send: Vec::new(),
                recv: Vec::new(),
                mean: Vec::new(),
            });
        let t1 = Instant::now();

        // 2. gradient averaging into `bufs.mean` (this rank's pieces, canonical order).
        let result = self.average(&layout, params, &mut bufs);
        let t2 = Instant::now();
        let result = result.and_then(|()| {
            // 3–4. the non-finite decision, then the update of the owned pieces.
            self.update_owned(&layout, params, &bufs.mean)
        });
        let t3 = Instant::now();
        // 5. the updated parameters to every rank.
        let result = result.and_then(|updated| {
            if updated {
                self.gather_params(&layout, params, &mut bufs)
            } else {
                Ok(())
            }
        });
        self.buffers = Some(Box::new(bufs));
        self.layout = Some((key, layout));
        self.timings = StepTimings {
            checks: t1 - t0,
            grad_sync: t2 - t1,
            update: t3 - t2,
            param_sync: t3.elapsed(),
        };
        result
    }

    fn average<E>(
        &self,
        layout: &Layout,
        params: &[ParamSlice<'_, E>],
        bufs: &mut Buffers<E>,
    ) -> Result<(), OptimError>
    where
        E: Float + CommElem,
    {
        let world = self.comm.size();
        let me = self.comm.rank();
        let mine = layout.counts[me];
        let n = E::of_f64(world as f64);
        bufs.send.clear();
        bufs.mean.clear();
        match self.opts.grad_sync {
            GradSync::ReduceScatter => {
                for r in 0..world {
                    for p in layout.pieces_of(r) {
                        bufs.send
                            .extend_from_slice(&params[p.param].grad[p.start..p.end]);
                    }
                }
                bufs.recv.clear();
                bufs.recv.resize(mine * world, E::zero());
                self.comm
                    .all_to_all_v(
                        &bufs.send,
                        &layout.counts,
                        &mut bufs.recv,
                        &vec![mine; world],
                    )
                    .map_err(comm_error)?;
                bufs.mean.extend_from_slice(&bufs.recv[..mine]);
                for s in 1..world {
                    let from = &bufs.recv[s * mine..(s + 1) * mine];
                    for (m, g) in bufs.mean.iter_mut().zip(from) {
                        *m += *g;
                    }
                }
            }
            GradSync::AllReduce => {
                for p in &layout.pieces {
                    bufs.send
                        .extend_from_slice(&params[p.param].grad[p.start..p.end]);
                }
                self.comm
                    .all_reduce_sum(&mut bufs.send)
                    .map_err(comm_error)?;
                let mut at = 0;
                for (i, p) in layout.pieces.iter().enumerate() {
                    if layout.by_rank[me].binary_search(&i).is_ok() {
                        bufs.mean.extend_from_slice(&bufs.send[at..at + p.len()]);
                    }
                    at += p.len();
                }
            }
        }
        for m in &mut bufs.mean {
            *m /= n;
        }
        Ok(())
    }

    /// The non-finite decision and the update of this rank's pieces. `Ok(false)`: the step was
    /// skipped on every rank.
    fn update_owned<E>(
        &mut self,
        layout: &Layout,
        params: &mut [ParamSlice<'_, E>],
        mean: &[E],
    ) -> Result<bool, OptimError>
    where
        E: Float + CommElem,
        O: DslOptimizer<E>,
    {
        let me = self.comm.rank();
        let policy = self.inner.opt_state().non_finite;
        if policy != NonFinitePolicy::Propagate {
            let mut at = 0;
            let mut first_bad = u64::MAX;
            for &i in &layout.by_rank[me] {
                let n = layout.pieces[i].len();
                if mean[at..at + n].iter().any(|x| !x.is_finite()) {
                    first_bad = layout.pieces[i].param as u64;
                    break;
                }
                at += n;
            }
            let bad = min_u64(&self.comm, first_bad)?;
            if bad != u64::MAX {
                if policy == NonFinitePolicy::Error {
                    return Err(OptimError::NonFiniteGradient {
                        param: layout.params[bad as usize].name.clone(),
                    });
                }
                self.inner.opt_state_mut().skipped_steps += 1;
                return Ok(false);
            }
        }
        // This rank's pieces as slices (at most one piece per parameter per rank).
        let mut mine: HashMap<usize, (usize, usize)> = HashMap::new();
        let mut at = 0;
        for &i in &layout.by_rank[me] {
            let p = &layout.pieces[i];
            mine.insert(p.param, (i, at));
            at += p.len();
        }
        let mut slices: Vec<(usize, ParamSlice<'_, E>)> = Vec::with_capacity(mine.len());
        for (k, ps) in params.iter_mut().enumerate() {
            if let Some(&(i, off)) = mine.get(&k) {
                let p = &layout.pieces[i];
                slices.push((
                    i,
                    ParamSlice {
                        name: ps.name,
                        shape: &p.shape,
                        param: &mut ps.param[p.start..p.end],
                        grad: &mean[off..off + p.len()],
                    },
                ));
            }
        }
        slices.sort_by_key(|(i, _)| *i);
        let mut slices: Vec<ParamSlice<'_, E>> = slices.into_iter().map(|(_, s)| s).collect();
        // Every check the optimizer makes was made and agreed in step 1; agreeing again keeps
        // the ranks together should it still fail (no rank proceeds to the all-gather alone).
        let idle = slices.is_empty();
        let r = self
            .inner
            .update_slices_synced(&mut slices, &mut CommSync::new(&self.comm, layout));
        agree(&self.comm, r)?;
        if idle {
            // an update with no parameters does not advance the step: keep the schedules in
            // lock-step with the ranks that had some
            self.inner.advance_step();
        }
        Ok(true)
    }

    fn gather_params<E>(
        &self,
        layout: &Layout,
        params: &mut [ParamSlice<'_, E>],
        bufs: &mut Buffers<E>,
    ) -> Result<(), OptimError>
    where
        E: Float + CommElem,
    {
        let me = self.comm.rank();
        bufs.send.clear();
        for p in layout.pieces_of(me) {
            bufs.send
                .extend_from_slice(&params[p.param].param[p.start..p.end]);
        }
        let total: usize = layout.counts.iter().sum();
        bufs.recv.clear();
        bufs.recv.resize(total, E::zero());
        self.comm
            .all_gather_v(&bufs.send, &mut bufs.recv, &layout.counts)
            .map_err(comm_error)?;
        let mut at = 0;
        for r in 0..layout.world {
            for p in layout.pieces_of(r) {
                if r != me {
                    params[p.param].param[p.start..p.end]
                        .copy_from_slice(&bufs.recv[at..at + p.len()]);
                }
                at += p.len();
            }
        }
        Ok(())
    }
}
