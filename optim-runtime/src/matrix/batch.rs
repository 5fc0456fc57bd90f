//! Batched matrix views: a primitive run once per slice of a parameter's leading batch axes
//! (the DSL's `batch = k`, [`Call::batch`](super::Call::batch)).
//!
//! A parameter of shape `[b0, …, b(k-1), s…]` with `k` batch axes is `B = b0·…·b(k-1)`
//! independent slices of shape `s…` (each `len = prod(s…)` elements, stored one after another
//! in the parameter's row-major layout). Slice `i` is handed to the primitive as a parameter of
//! shape `s…` named `name[i]` (so seeded probes differ per slice and equal those of a separate
//! parameter of that name): the primitive's view rule applies to `s…`, its numerics are those
//! of the unbatched call, and each state buffer holds the `B` slices' states one after another
//! (`B × per-slice length`; checkpoints save it as one buffer).

use super::{put, take, Io, MatrixWord, Primitive, Report, Site};
use crate::{Float, ParamInfo, ParamState};

/// The name slice `index` of parameter `name` is handed to a primitive with under batch axes
/// (`"w[3]"`): seeded probes (`psgd_precondition`, `low_rank_orthonormalize`) are keyed by it.
pub fn slice_name(name: &str, index: usize) -> String {
    format!("{name}[{index}]")
}

/// `(B, len)`: the number of slices and elements per slice of `shape` with `k` batch axes;
/// `None` when `k >= rank` or a product overflows.
fn slices(shape: &[usize], k: usize) -> Option<(usize, usize)> {
    if k >= shape.len() {
        return None;
    }
    let prod = |d: &[usize]| d.iter().try_fold(1usize, |n, &x| n.checked_mul(x));
    let (count, len) = (prod(&shape[..k])?, prod(&shape[k..])?);
    count.checked_mul(len)?;
    Some((count, len))
}

/// [`MatrixWord::check`] for a call with `batch` leading batch axes: with `batch = 0` the word's
/// own check; otherwise `Err` (naming the word, the parameter and the problem) when the word
/// takes no batch axes ([`MatrixWord::BATCHED`]), when `batch >= rank` (no axis would be left
/// for the matrix) or the shape has a zero dimension, else the word's check on one slice
/// (shape `shape[batch..]`). Generated code calls it for every parameter before a step writes
/// anything.
pub fn check_call<P: MatrixWord>(
    cfg: &P::Config,
    batch: usize,
    info: ParamInfo<'_>,
) -> Result<(), String> {
    if batch == 0 {
        return P::check(cfg, info);
    }
    let w = P::WORD;
    if !P::BATCHED {
        return Err(format!(
            "`{w}` on parameter `{}` of shape {:?}: `{w}` takes no batch axes (`batch = {batch}`)",
            info.name, info.shape
        ));
    }
    if batch >= info.rank() {
        return Err(format!(
            "`{w}` with `batch = {batch}` on parameter `{}` of shape {:?}: the batch axes must leave at least one axis for the matrix (batch < rank = {})",
            info.name,
            info.shape,
            info.rank()
        ));
    }
    super::check_shape(w, info)?;
    P::check(
        cfg,
        ParamInfo {
            shape: &info.shape[batch..],
            ..info
        },
    )
}

/// `B` per-slice vectors cut from `v` when its length is a non-zero multiple of `B`, else
/// `None` (the buffer is new or does not belong to this batch).
fn split<E: Float>(v: &[E], count: usize) -> Option<Vec<Vec<E>>> {
    if v.is_empty() || !v.len().is_multiple_of(count) {
        return None;
    }
    Some(v.chunks(v.len() / count).map(<[E]>::to_vec).collect())
}

/// An eigenbasis-rotated buffer during a batched call: the buffer as it was when it cannot be
/// split (its slices then see an empty buffer), and its per-slice parts.
type Rotated<E> = (Option<Vec<E>>, Vec<Vec<E>>);

/// Part `i` of `v` cut in parts of `len` (empty when `len` is 0).
fn part<E>(v: &[E], i: usize, len: usize) -> &[E] {
    if len > 0 {
        &v[i * len..(i + 1) * len]
    } else {
        &[]
    }
}

/// [`super::run_host`] with `call.batch > 0`: the primitive once per slice (see the module
/// docs). Does nothing when `call.batch >= rank` or the parameter is empty ([`check_call`]
/// refuses both). Inputs shorter
/// than the parameter give every slice an empty input (the primitive leaves its output as it
/// is). A state buffer whose length is not a multiple of `B` is created afresh by each slice;
/// an eigenbasis-rotated buffer whose length is not the parameter's is left as it is.
/// User-supplied factors and probes ([`crate::KronFactors`]) are not lent to slices.
pub(crate) fn run_batched<E: Float, P: Primitive<E>>(
    cfg: &P::Config,
    site: Site<'_, E>,
    ps: &mut ParamState<E>,
) -> Report {
    let Site {
        phase,
        call,
        param,
        grad,
        info,
    } = site;
    let Some((count, len)) = slices(info.shape, call.batch) else {
        return Report::default();
    };
    if count == 0 || len == 0 {
        // an empty parameter: nothing to do (`check_call` refuses zero sides)
        return Report::default();
    }
    let n = count * len;
    let shape = &info.shape[call.batch..];
    let empty = || vec![Vec::new(); count];
    // per state buffer, per slice
    let mut state: Vec<Vec<Vec<E>>> = call
        .state
        .iter()
        .map(|&k| split(&take(ps.buffers.get_mut(k)), count).unwrap_or_else(empty))
        .collect();
    // rotated buffers: (the buffer as it was when it cannot be split, per-slice parts)
    let mut rotated: Vec<Rotated<E>> = call
        .rotated
        .iter()
        .map(|&k| {
            let b = take(ps.buffers.get_mut(k));
            match (b.len() == n).then(|| split(&b, count)).flatten() {
                Some(parts) => (None, parts),
                None => (Some(b), empty()),
            }
        })
        .collect();
    let mut out = take(call.out.and_then(|t| ps.temps.get_mut(t)));
    let mut work = std::mem::take(&mut ps.work);
    let mut report = Report::default();
    {
        let (input, basis_q) = super::inputs(&call, ps, param, grad);
        let q_len = if basis_q.len() % count == 0 {
            basis_q.len() / count
        } else {
            0
        };
        let whole_out = out.len() >= n;
        for i in 0..count {
            let name = slice_name(info.name, i);
            let mut st: Vec<Vec<E>> = state.iter_mut().map(|s| take(s.get_mut(i))).collect();
            let mut rot: Vec<Vec<E>> = rotated.iter_mut().map(|r| take(r.1.get_mut(i))).collect();
            let o: &mut [E] = if whole_out {
                &mut out[i * len..(i + 1) * len]
            } else {
                &mut []
            };
            let r = P::apply(
                cfg,
                Io {
                    phase,
                    input: part(input, i, if input.len() >= n { len } else { 0 }),
                    out: o,
                    state: &mut st,
                    basis_q: part(basis_q, i, q_len),
                    rotated: &mut rot,
                    info: ParamInfo {
                        name: &name,
                        shape,
                        module: info.module,
                    },
                    step: ps.step,
                    work: &mut work,
                    factors: None,
                },
            );
            for (s, b) in state.iter_mut().zip(st) {
                put(s.get_mut(i), b);
            }
            for (r, b) in rotated.iter_mut().zip(rot) {
                put(r.1.get_mut(i), b);
            }
            report.initialised |= r.initialised;
            report.skipped_inputs = report.skipped_inputs.saturating_add(r.skipped_inputs);
            report.refreshes = report.refreshes.saturating_add(r.refreshes);
            report.failed_refreshes = report.failed_refreshes.saturating_add(r.failed_refreshes);
        }
    }
    ps.work = work;
    if let Some(t) = call.out {
        put(ps.temps.get_mut(t), out);
    }
    for (&k, (whole, parts)) in call.rotated.iter().zip(rotated) {
        put(
            ps.buffers.get_mut(k),
            whole.unwrap_or_else(|| parts.concat()),
        );
    }
    for (&k, parts) in call.state.iter().zip(state) {
        put(ps.buffers.get_mut(k), parts.concat());
    }
    ps.matrix.record(&report);
    report
}
