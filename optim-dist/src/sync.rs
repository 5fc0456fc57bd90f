//! Whole-step decisions that every rank must take identically: agreeing on an error, on
//! "did any rank see X", and on global reduction totals.
//!
//! [`agree`] and [`any`] are used by [`Distributed`](crate::Distributed) for its own checks;
//! [`CommSync`] implements the runtime's [`StepSync`] hook, through which the optimizer's step
//! agrees on validation, on non-finite gradients and on the totals of global reductions
//! (`global_norm`, `clip_global_norm`) across ranks.

use crate::comm::{CommError, Communicator};
use crate::layout::Layout;
use optim_runtime::__private::{sum_in_order, MAX_GLOBALS};
use optim_runtime::GlobalContribution;
use optim_runtime::OptimError;
use serde::{Deserialize, Serialize};

/// A communicator failure as the optimizer error type: [`OptimError::Communication`].
pub fn comm_error(e: CommError) -> OptimError {
    OptimError::Communication(e.to_string())
}

/// The variants of [`OptimError`] that carry only owned text, so that they can be rebuilt on
/// another rank exactly; anything else travels as its message.
#[derive(Serialize, Deserialize)]
enum Wire {
    ShapeMismatch { param: String, detail: String },
    DuplicateParam(String),
    NonFiniteGradient { param: String },
    CheckpointMismatch { param: String, detail: String },
    Checkpoint(String),
    InvalidUse(String),
    Device(String),
    Communication(String),
    Other(String),
}

fn encode(e: &OptimError) -> Vec<u8> {
    let w = match e {
        OptimError::ShapeMismatch { param, detail } => Wire::ShapeMismatch {
            param: param.clone(),
            detail: detail.clone(),
        },
        OptimError::DuplicateParam(p) => Wire::DuplicateParam(p.clone()),
        OptimError::NonFiniteGradient { param } => Wire::NonFiniteGradient {
            param: param.clone(),
        },
        OptimError::CheckpointMismatch { param, detail } => Wire::CheckpointMismatch {
            param: param.clone(),
            detail: detail.clone(),
        },
        OptimError::Checkpoint(s) => Wire::Checkpoint(s.clone()),
        OptimError::InvalidUse(s) => Wire::InvalidUse(s.clone()),
        OptimError::Device(s) => Wire::Device(s.clone()),
        OptimError::Communication(s) => Wire::Communication(s.clone()),
        other => Wire::Other(other.to_string()),
    };
    // Serialising an enum of strings cannot fail; an empty message would read as success,
    // so fall back to a fixed text.
    serde_json::to_vec(&w).unwrap_or_else(|_| b"{\"Other\":\"unencodable error\"}".to_vec())
}

fn decode(bytes: &[u8], rank: usize, local: Option<&OptimError>) -> OptimError {
    let w: Wire = serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Wire::Other(String::from_utf8_lossy(bytes).into_owned()));
    match w {
        Wire::ShapeMismatch { param, detail } => OptimError::ShapeMismatch { param, detail },
        Wire::DuplicateParam(p) => OptimError::DuplicateParam(p),
        Wire::NonFiniteGradient { param } => OptimError::NonFiniteGradient { param },
        Wire::CheckpointMismatch { param, detail } => {
            OptimError::CheckpointMismatch { param, detail }
        }
        Wire::Checkpoint(s) => OptimError::Checkpoint(s),
        Wire::InvalidUse(s) => OptimError::InvalidUse(s),
        Wire::Device(s) => OptimError::Device(s),
        Wire::Communication(s) => OptimError::Communication(s),
        Wire::Other(msg) => match local {
            // The same error here (e.g. a hyperparameter out of its domain: every rank
            // evaluates the same config at the same step): keep the typed value.
            Some(e) if e.to_string() == msg => e.clone(),
            _ => OptimError::InvalidUse(format!("rank {rank} failed: {msg}")),
        },
    }
}

/// Agrees on the outcome of a check run on every rank: `Ok` on every rank if it passed on every
/// rank; otherwise, on every rank, the error of the lowest-numbered rank that failed (rebuilt
/// from its message where it is not this rank's own). Two collectives when some rank failed,
/// one when none did.
///
/// # Errors
/// The agreed error, or [`comm_error`] when the communicator fails.
pub fn agree<C: Communicator>(comm: &C, local: Result<(), OptimError>) -> Result<(), OptimError> {
    agree_with_header(comm, local, [0, 0])
}

/// [`agree`], and in the same collective a check that every rank passed the same
/// `header = [parameter-list hash, config/step/policy hash]`; a mismatch is reported first
/// (it usually explains any other error), as the same error on every rank.
///
/// # Errors
/// [`OptimError::InvalidUse`] naming the first rank whose header differs from rank 0's; else as
/// [`agree`].
pub(crate) fn agree_with_header<C: Communicator>(
    comm: &C,
    local: Result<(), OptimError>,
    header: [u64; 2],
) -> Result<(), OptimError> {
    let n = comm.size();
    let mine = match &local {
        Ok(()) => Vec::new(),
        Err(e) => encode(e),
    };
    let mut heads = vec![0u64; 3 * n];
    comm.all_gather_v(
        &[header[0], header[1], mine.len() as u64],
        &mut heads,
        &vec![3; n],
    )
    .map_err(comm_error)?;
    for r in 1..n {
        if heads[3 * r] != heads[0] {
            return Err(OptimError::InvalidUse(format!(
                "rank {r} passed a different parameter list from rank 0 (names, shapes and order \
                 must be identical on every rank)"
            )));
        }
        if heads[3 * r + 1] != heads[1] {
            return Err(OptimError::InvalidUse(format!(
                "rank {r}'s optimizer differs from rank 0's in its config, global step, \
                 skipped-step count, non-finite policy or options"
            )));
        }
    }
    let counts: Vec<usize> = (0..n).map(|r| heads[3 * r + 2] as usize).collect();
    let Some(first) = counts.iter().position(|&l| l > 0) else {
        return Ok(());
    };
    let mut all = vec![0u8; counts.iter().sum()];
    comm.all_gather_v(&mine, &mut all, &counts)
        .map_err(comm_error)?;
    if first == comm.rank() {
        return local;
    }
    let start: usize = counts[..first].iter().sum();
    Err(decode(
        &all[start..start + counts[first]],
        first,
        local.as_ref().err(),
    ))
}

/// Whether `local` is true on any rank (one all-reduce of a `u64`).
///
/// # Errors
/// [`comm_error`] when the communicator fails.
pub fn any<C: Communicator>(comm: &C, local: bool) -> Result<bool, OptimError> {
    let mut x = [u64::from(local)];
    comm.all_reduce_sum(&mut x).map_err(comm_error)?;
    Ok(x[0] > 0)
}

/// The smallest of every rank's `local` (one all-gather of a `u64` per rank).
///
/// # Errors
/// [`comm_error`] when the communicator fails.
pub fn min_u64<C: Communicator>(comm: &C, local: u64) -> Result<u64, OptimError> {
    let n = comm.size();
    let mut all = vec![0u64; n];
    comm.all_gather_v(&[local], &mut all, &vec![1; n])
        .map_err(comm_error)?;
    Ok(all.into_iter().min().unwrap_or(local))
}

pub use optim_runtime::StepSync;

/// [`StepSync`] over a [`Communicator`] for one step of a [`Layout`]: this rank's local entries
/// are its pieces in canonical order (`layout.by_rank[rank]`).
///
/// `global_sums` gathers every piece's contribution and adds them in canonical piece order
/// (the order of the parameter list, which is the order a single process adds them in), from
/// `0.0`, so the totals are bit-identical to a single process fed the same parameters and do
/// not depend on the rank count or the partition.
pub struct CommSync<'a, C> {
    comm: &'a C,
    layout: &'a Layout,
}

impl<'a, C: Communicator> CommSync<'a, C> {
    /// The hook for one step of `layout` on `comm`.
    pub fn new(comm: &'a C, layout: &'a Layout) -> Self {
        CommSync { comm, layout }
    }
}

impl<C: Communicator> StepSync for CommSync<'_, C> {
    fn global_sums(
        &mut self,
        contributions: &[GlobalContribution],
    ) -> Result<GlobalContribution, OptimError> {
        let l = self.layout;
        let mine = &l.by_rank[self.comm.rank()];
        if contributions.len() != mine.len() {
            return Err(OptimError::InvalidUse(format!(
                "global_sums got {} contributions for {} local pieces",
                contributions.len(),
                mine.len()
            )));
        }
        // each row: the sums, then 1.0 / 0.0 for each id produced
        const ROW: usize = 2 * MAX_GLOBALS;
        let counts: Vec<usize> = l.by_rank.iter().map(|p| p.len() * ROW).collect();
        let send: Vec<f64> = contributions
            .iter()
            .flat_map(|c| {
                c.sums
                    .iter()
                    .copied()
                    .chain(c.produced.iter().map(|&p| if p { 1.0 } else { 0.0 }))
            })
            .collect();
        let mut all = vec![0.0f64; counts.iter().sum()];
        self.comm
            .all_gather_v(&send, &mut all, &counts)
            .map_err(comm_error)?;
        // Place each rank's rows at their canonical piece index, then add in that order, as a
        // single process adds its parameters' contributions.
        let mut by_piece = vec![GlobalContribution::default(); l.pieces.len()];
        let mut at = 0;
        for pieces in &l.by_rank {
            for &p in pieces {
                let row = &all[at..at + ROW];
                let c = &mut by_piece[p];
                c.sums.copy_from_slice(&row[..MAX_GLOBALS]);
                for (flag, &v) in c.produced.iter_mut().zip(&row[MAX_GLOBALS..]) {
                    *flag = v != 0.0;
                }
                at += ROW;
            }
        }
        Ok(sum_in_order(&by_piece))
    }
    fn any(&mut self, local: bool) -> Result<bool, OptimError> {
        any(self.comm, local)
    }
    fn agree(&mut self, local: Result<(), OptimError>) -> Result<(), OptimError> {
        agree(self.comm, local)
    }
}
