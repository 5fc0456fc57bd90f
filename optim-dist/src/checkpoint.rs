//! Distributed checkpoints: one optimizer-state file per rank plus a manifest, and a loader that
//! reshards to any number of ranks (save on 4, load on 2).
//!
//! # Format (version 1)
//!
//! A directory with:
//! - `rank-00000.ckpt`, `rank-00001.ckpt`, …: rank `r`'s optimizer state as written by the
//!   runtime ([`Checkpoint::to_checkpoint_bytes`]: safetensors, state keyed by parameter
//!   name, config and step included). A parameter split into row blocks has, on each owning
//!   rank, the state of its block under the parameter's name.
//! - `manifest.json`: `format` (1), `optimizer` (type name), `world` (ranks at save),
//!   `step`, `files` (name, byte length and FNV-1a 64 checksum of each rank file), and
//!   `params` in the step's order: `name`, `shape`, `rule`, `pieces` (`[rank, start, end]`
//!   element ranges, row-major).
//!
//! Saving removes an existing `manifest.json` first and writes the new one last, after every
//! rank has written its file (each file is written next to its path and renamed over it), so a
//! directory with a manifest always holds a complete checkpoint. Loading reads the files every
//! rank needs from a file system all ranks see, validates everything, agrees across ranks, and
//! only then replaces the optimizer: an `Err` changes nothing on any rank.

use crate::comm::Communicator;
use crate::distributed::Distributed;
use crate::layout::{Layout, Piece};
use crate::sync::agree;
use optim_runtime::{
    Checkpoint, DslOptimizer, Float, OptState, OptimError, OptimizerConfig, ParamState,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the manifest written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// A distributed checkpoint's manifest (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The optimizer's type name.
    pub optimizer: String,
    /// Ranks at save time.
    pub world: usize,
    /// The global step at save time.
    pub step: u64,
    /// One entry per rank, in rank order.
    pub files: Vec<FileMeta>,
    /// The parameters in the step's order.
    pub params: Vec<ParamMeta>,
}

/// One rank's state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Length in bytes.
    pub bytes: u64,
    /// FNV-1a 64-bit hash of the contents, as 16 hex digits.
    pub fnv1a64: String,
}

/// One parameter and who held which block of its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamMeta {
    /// Name (the state key).
    pub name: String,
    /// Full logical shape.
    pub shape: Vec<usize>,
    /// Rule index it was routed to.
    pub rule: usize,
    /// `[rank, start, end]`: rank `rank` held elements `start..end`.
    pub pieces: Vec<[usize; 3]>,
}

/// The file name of rank `r`'s state.
pub fn rank_file(r: usize) -> String {
    format!("rank-{r:05}.ckpt")
}

/// FNV-1a, 64 bits (a checksum against truncation and corruption, not an authenticator).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn ck(msg: impl Into<String>) -> OptimError {
    OptimError::Checkpoint(msg.into())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OptimError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ck(format!("cannot write {}: {e}", path.display())))
}

impl<O, C: Communicator> Distributed<O, C> {
    /// Saves the distributed optimizer state to directory `dir` (created if missing; must be
    /// visible to every rank at load time): this rank's state file, and on rank 0 the
    /// manifest. Collective. Saves the partition of the last step, so call it after at least
    /// one step (or a load).
    ///
    /// # Errors
    /// On every rank alike: [`OptimError::Checkpoint`] when no step has fixed the partition
    /// yet or a file cannot be written on some rank; [`OptimError::Communication`] when the
    /// communicator fails.
    pub fn save_checkpoint<E: Float>(&self, dir: impl AsRef<Path>) -> Result<(), OptimError>
    where
        O: DslOptimizer<E>,
    {
        let dir = dir.as_ref();
        let comm = self.comm();
        let me = comm.rank();
        // 1. rank 0 removes the old manifest: from here on the directory is "incomplete".
        let r = self
            .layout()
            .ok_or_else(|| ck("no step has been taken yet; nothing to save"))
            .and_then(|_| {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ck(format!("cannot create {}: {e}", dir.display())))
            })
            .and_then(|()| {
                let m = dir.join(MANIFEST);
                if me == 0 && m.exists() {
                    std::fs::remove_file(&m)
                        .map_err(|e| ck(format!("cannot remove {}: {e}", m.display())))
                } else {
                    Ok(())
                }
            });
        agree(comm, r)?;
        // 2. every rank writes its file; the lengths and checksums go to rank 0.
        let bytes = self.inner().to_checkpoint_bytes(None);
        let r = bytes.and_then(|b| {
            write_atomic(&dir.join(rank_file(me)), &b)?;
            Ok(b)
        });
        let meta = match &r {
            Ok(b) => [b.len() as u64, fnv1a64(b)],
            Err(_) => [0, 0],
        };
        agree(comm, r.map(|_| ()))?;
        let n = comm.size();
        let mut all = vec![0u64; 2 * n];
        comm.all_gather_v(&meta, &mut all, &vec![2; n])
            .map_err(crate::sync::comm_error)?;
        // 3. rank 0 writes the manifest last.
        let r = if me == 0 {
            let layout = self.layout().ok_or_else(|| ck("no partition"))?;
            let m = manifest(
                layout,
                <O::Config as OptimizerConfig>::NAME,
                self.inner().opt_state().step,
                &all,
            );
            serde_json::to_vec_pretty(&m)
                .map_err(|e| ck(format!("cannot encode the manifest: {e}")))
                .and_then(|b| write_atomic(&dir.join(MANIFEST), &b))
        } else {
            Ok(())
        };
        agree(comm, r)
    }

    /// Loads a checkpoint written by [`save_checkpoint`](Self::save_checkpoint) on any number
    /// of ranks, resharding to this communicator's rank count: each rank computes the
    /// partition of the saved parameter list for the current ranks, reads the files holding
    /// the state of the blocks it now owns, and assembles its state (a whole parameter's
    /// state moves as it is; a split element-wise parameter's buffers are cut and joined by
    /// element range). The config, global step, skipped-step count and non-finite policy come
    /// from the checkpoint. Collective; an `Err` changes nothing on any rank.
    ///
    /// The next [`update_slices`](Self::update_slices) must pass the same parameter list
    /// (names, shapes, order) as at save time. Each rank file is parsed by a fresh
    /// `O::default()` (every `optimizer!` type implements `Default`), so a config holding a
    /// custom schedule closure, which checkpoints store only by name, cannot be loaded this way.
    ///
    /// # Errors
    /// On every rank alike: [`OptimError::Checkpoint`] when the manifest or a file is missing,
    /// unreadable, of another format or optimizer, or fails its checksum;
    /// [`OptimError::CheckpointMismatch`] when a parameter's saved state does not fit (routed to
    /// another rule now, inconsistent blocks, a matrix-state buffer that would have to be cut);
    /// the runtime's checkpoint errors; [`OptimError::Communication`] when the communicator fails.
    pub fn load_checkpoint<E: Float>(&mut self, dir: impl AsRef<Path>) -> Result<(), OptimError>
    where
        O: DslOptimizer<E> + Default,
    {
        let prepared = self.prepare_load::<E>(dir.as_ref()).and_then(|(cfg, st, key, layout)| {
            // The checkpoint's config replaces ours; an optimizer that does not expose its
            // config must already have the same one.
            let same = format!("{cfg:?}") == format!("{:?}", self.inner().config());
            if same || self.inner_mut().config_mut().is_some() {
                Ok((cfg, st, key, layout))
            } else {
                Err(ck("the checkpoint's config differs and the optimizer does not expose config_mut"))
            }
        });
        agree(
            self.comm(),
            prepared.as_ref().map(|_| ()).map_err(Clone::clone),
        )?;
        let (cfg, st, key, layout) = prepared?;
        if let Some(c) = self.inner_mut().config_mut() {
            *c = cfg;
        }
        *self.inner_mut().opt_state_mut() = st;
        self.set_layout(key, layout);
        Ok(())
    }

    /// Everything of a load that can fail, on this rank, without modifying `self`.
    #[allow(clippy::type_complexity)]
    fn prepare_load<E: Float>(
        &self,
        dir: &Path,
    ) -> Result<(O::Config, OptState<E>, u64, Layout), OptimError>
    where
        O: DslOptimizer<E> + Default,
    {
        let mpath = dir.join(MANIFEST);
        let text = std::fs::read(&mpath)
            .map_err(|e| ck(format!("cannot read {}: {e}", mpath.display())))?;
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| ck(format!("{} is not a manifest: {e}", mpath.display())))?;
        if m.format != FORMAT_VERSION {
            return Err(ck(format!(
                "manifest format {} (this build reads {FORMAT_VERSION})",
                m.format
            )));
        }
        let name = <O::Config as OptimizerConfig>::NAME;
        if m.optimizer != name {
            return Err(ck(format!(
                "written by optimizer `{}`, loading into `{name}`",
                m.optimizer
            )));
        }
        if m.files.len() != m.world || m.world == 0 {
            return Err(ck(format!(
                "manifest lists {} files for {} ranks",
                m.files.len(),
                m.world
            )));
        }
        let list: Vec<(&str, &[usize])> = m
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.shape.as_slice()))
            .collect();
        let key = crate::distributed::params_key(&list);
        let me = self.comm().rank();
        let layout = Layout::compute::<E, O>(
            &self.inner().explain(),
            &list,
            self.comm().size(),
            self.options().shard,
        );
        // Which old ranks hold state this rank needs (rank 0's file at least, for the
        // global step and config).
        let mut need: Vec<usize> = vec![0];
        for piece in layout.pieces_of(me) {
            let pm = &m.params[piece.param];
            if pm.rule != layout.params[piece.param].rule {
                return Err(OptimError::CheckpointMismatch {
                    param: pm.name.clone(),
                    detail: format!(
                        "saved under rule {}, routed to rule {} now",
                        pm.rule, layout.params[piece.param].rule
                    ),
                });
            }
            for &[r, s, e] in &pm.pieces {
                if s < piece.end && piece.start < e && !need.contains(&r) {
                    need.push(r);
                }
            }
        }
        need.sort_unstable();
        let mut loaded: BTreeMap<usize, OptState<E>> = BTreeMap::new();
        let mut base: Option<O> = None;
        for &r in &need {
            let f = m
                .files
                .get(r)
                .ok_or_else(|| ck(format!("manifest has no file for rank {r}")))?;
            let path = dir.join(&f.name);
            let bytes = std::fs::read(&path)
                .map_err(|e| ck(format!("cannot read {}: {e}", path.display())))?;
            if bytes.len() as u64 != f.bytes || format!("{:016x}", fnv1a64(&bytes)) != f.fnv1a64 {
                return Err(ck(format!(
                    "{} does not match its manifest entry (length or checksum)",
                    path.display()
                )));
            }
            let mut scratch = O::default();
            scratch.load_checkpoint_bytes(&bytes, None)?;
            let st = std::mem::take(scratch.opt_state_mut());
            if let Some(b) = &base {
                let b = b.opt_state();
                if (b.step, b.skipped_steps, b.non_finite)
                    != (st.step, st.skipped_steps, st.non_finite)
                {
                    return Err(ck(format!(
                        "rank files 0 and {r} disagree on the step, skipped steps or policy"
                    )));
                }
            } else {
                let mut s0 = scratch;
                let o = s0.opt_state_mut();
                o.step = st.step;
                o.skipped_steps = st.skipped_steps;
                o.non_finite = st.non_finite;
                base = Some(s0);
            }
            loaded.insert(r, st);
        }
        let base = base.ok_or_else(|| ck("rank 0's file was not loaded"))?;
        let b = base.opt_state();
        let mut st = OptState::default();
        st.step = b.step;
        st.skipped_steps = b.skipped_steps;
        st.non_finite = b.non_finite;
        for piece in layout.pieces_of(me) {
            let pm = &m.params[piece.param];
            if let Some(ps) = assemble(pm, piece, &loaded)? {
                st.params.insert(pm.name.clone(), ps);
            }
        }
        Ok((base.config().clone(), st, key, layout))
    }
}

fn manifest(layout: &Layout, optimizer: &str, step: u64, files: &[u64]) -> Manifest {
    let mut params: Vec<ParamMeta> = layout
        .params
        .iter()
        .map(|p| ParamMeta {
            name: p.name.clone(),
            shape: p.shape.clone(),
            rule: p.rule,
            pieces: Vec::new(),
        })
        .collect();
    for p in &layout.pieces {
        params[p.param].pieces.push([p.owner, p.start, p.end]);
    }
    Manifest {
        format: FORMAT_VERSION,
        optimizer: optimizer.to_string(),
        world: layout.world,
        step,
        files: (0..layout.world)
            .map(|r| FileMeta {
                name: rank_file(r),
                bytes: files[2 * r],
                fnv1a64: format!("{:016x}", files[2 * r + 1]),
            })
            .collect(),
        params,
    }
}

/// The state of `piece` (a block of parameter `pm`) from the saved blocks that overlap it;
/// `None` when the parameter had no state yet (never updated).
fn assemble<E: Float>(
    pm: &ParamMeta,
    piece: &Piece,
    loaded: &BTreeMap<usize, OptState<E>>,
) -> Result<Option<ParamState<E>>, OptimError> {
    let bad = |d: String| OptimError::CheckpointMismatch {
        param: pm.name.clone(),
        detail: d,
    };
    let mut parts: Vec<(usize, usize, &ParamState<E>)> = Vec::new();
    for &[r, s, e] in &pm.pieces {
        if s < piece.end && piece.start < e {
            let st = loaded
                .get(&r)
                .ok_or_else(|| bad(format!("the file of rank {r} was not loaded")))?;
            match st.params.get(&pm.name) {
                Some(ps) if ps.len == e - s => parts.push((s, e, ps)),
                Some(ps) => {
                    return Err(bad(format!(
                        "rank {r}'s block {s}..{e} has state of {} elements",
                        ps.len
                    )))
                }
                None => {}
            }
        }
    }
    parts.sort_by_key(|p| p.0);
    let Some(&(s0, e0, first)) = parts.first() else {
        return Ok(None);
    };
    if parts.len() == 1 && (s0, e0) == (piece.start, piece.end) {
        // The same block: the state moves as it is.
        return Ok(Some(first.clone()));
    }
    let covered: usize = parts
        .iter()
        .map(|&(s, e, _)| e.min(piece.end) - s.max(piece.start))
        .sum();
    if covered != piece.len() {
        return Err(bad(format!(
            "the saved blocks cover {covered} of the {} elements of {}..{}",
            piece.len(),
            piece.start,
            piece.end
        )));
    }
    if parts.iter().any(|(_, _, ps)| {
        ps.low.iter().any(|l| !l.bits.is_empty()) || ps.q8.iter().any(|q| !q.codes.is_empty())
    }) {
        // `ParamState::low` (`let m: bf16 = ...`) and `ParamState::q8` (`let m: q8 = ...`) are
        // not cut and joined yet: refuse rather than lose them
        return Err(bad(format!(
            "state stored in 16 or 8 bits (bf16/f16/q8/uq8) cannot be resharded yet (block {}..{})",
            piece.start, piece.end
        )));
    }
    let mut out = ParamState::new(first.rule, piece.len());
    out.step = first.step;
    out.scalars = first.scalars.clone();
    out.scalars_init = first.scalars_init.clone();
    let nbuf = first.buffers.len();
    for &(s, e, ps) in &parts {
        if ps.step != first.step
            || ps.rule != first.rule
            || ps.buffers.len() != nbuf
            || ps.scalars != first.scalars
            || ps.scalars_init != first.scalars_init
        {
            return Err(bad(format!(
                "the saved blocks disagree on the step, rule, buffers or scalar states (block {s}..{e})"
            )));
        }
    }
    for k in 0..nbuf {
        let allocated = !first.buffers[k].is_empty();
        let mut buf = Vec::with_capacity(if allocated { piece.len() } else { 0 });
        for &(s, e, ps) in &parts {
            let b = &ps.buffers[k];
            if b.is_empty() == allocated || (allocated && b.len() != e - s) {
                return Err(bad(format!(
                    "state slot {k} is not an element-wise buffer of the block {s}..{e} ({} elements)",
                    b.len()
                )));
            }
            if allocated {
                let lo = piece.start.max(s) - s;
                let hi = piece.end.min(e) - s;
                buf.extend_from_slice(&b[lo..hi]);
            }
        }
        out.buffers.push(buf);
    }
    Ok(Some(out))
}
