//! A step's loops with each parameter buffer filled just before its job runs and read right
//! after ([`execute_hooked`]): the dfdx driver's staging copies, fused with the loops so that
//! a buffer is still in cache when its loop reads it and when its new values are copied out.

use super::{run_calls, stage_count, GlobalContribution, GlobalSums, Job};
use super::{MAX_GLOBALS, MAX_REDUCTIONS};
use crate::Float;
use rayon::prelude::*;

/// How a step driver fills each job's parameter buffer before the step reads it and takes its
/// new values after (`i`: the job's index, which is the entry's index in the step).
pub(crate) trait ParamHooks<E>: Sync {
    /// Fills `param` with parameter `i`'s current values.
    fn load(&self, i: usize, param: &mut [E]);
    /// Takes parameter `i`'s new values.
    fn store(&self, i: usize, param: &[E]);
}

/// Runs one step's jobs as [`execute_with`](super::execute_with) does, calling `hooks.load`
/// on each job's parameter before anything of the step reads it. Returns `true` when it has
/// also called `hooks.store` on each job's parameter after the job's last write, `false` when
/// the caller must (after the jobs are dropped).
///
/// When the step has at most one loop and no whole-tensor work before it, each job runs as
/// one task (load, loop, finish, store; a large loop's chunks still spread over threads), so
/// that the buffer is in cache for its loop and for the store; the global totals are combined
/// after (nothing of a one-loop step reads them: `finish` gets none). Otherwise every load
/// runs first and the step runs as `execute_with` does.
///
/// # Errors
/// What `global_sums` returns (then every job has run and been stored: the caller decides
/// whether to use the values).
pub(crate) fn execute_hooked<E: Float>(
    mut jobs: Vec<Job<'_, E>>,
    stages: usize,
    global_sums: GlobalSums<'_>,
    hooks: &dyn ParamHooks<E>,
) -> Result<bool, crate::OptimError> {
    let max_stages = stage_count(&jobs, stages);
    if max_stages > 1 || jobs.iter().any(|j| j.has_pre_barrier()) {
        let load = |(i, j): (usize, &mut Job<'_, E>)| hooks.load(i, j.param());
        if parallel(jobs.len()) {
            jobs.par_iter_mut().enumerate().for_each(load);
        } else {
            jobs.iter_mut().enumerate().for_each(load);
        }
        super::execute_with(jobs, stages, global_sums)?;
        return Ok(false);
    }
    let mut contributions = vec![GlobalContribution::default(); jobs.len()];
    let run = |(i, (j, c)): (usize, (&mut Job<'_, E>, &mut GlobalContribution))| {
        hooks.load(i, j.param());
        if j.stages() > 0 {
            let globals = [0.0f64; MAX_GLOBALS];
            let mut calls = [(i, j.kernel(0, &globals))];
            let red = run_calls(&mut calls)[0];
            for &(l, g) in &calls[0].1.globals {
                if g < MAX_GLOBALS && l < MAX_REDUCTIONS {
                    c.sums[g] += red[l];
                    c.produced[g] = true;
                }
            }
            drop(calls);
            j.reduced(0, &red);
        }
        j.finish();
        hooks.store(i, j.param());
    };
    if parallel(jobs.len()) {
        jobs.par_iter_mut()
            .zip(contributions.par_iter_mut())
            .enumerate()
            .for_each(run);
    } else {
        jobs.iter_mut()
            .zip(contributions.iter_mut())
            .enumerate()
            .for_each(run);
    }
    if max_stages == 1 {
        global_sums(&contributions)?;
    }
    Ok(true)
}

/// Whether `n` jobs are worth spreading over rayon's threads.
fn parallel(n: usize) -> bool {
    n > 1 && rayon::current_num_threads() > 1
}
