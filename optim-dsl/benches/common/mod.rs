//! What the AdamW-like benches share: the memory-bound baseline (a hand-written loop with
//! AdamW's access pattern and trivial arithmetic, run through the runtime's SIMD dispatch and
//! chunking) and criterion's settings. Used by `adamw.rs` and `lowp.rs` here (`mod common;`)
//! and by optim-candle's `benches/candle_adamw.rs` (by path), so that every bench measures
//! against the same bound.

// each bench uses part of this module
#![allow(dead_code)]

use criterion::Criterion;
use optim_dsl::__private::{dispatch, Kernel, CHUNK, PARALLEL_THRESHOLD};
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;
use optim_dsl::RuleBody;
use rayon::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// Samples per variant (criterion's `sample_size`).
pub const SAMPLES: usize = 10;

/// Criterion with [`SAMPLES`] samples, 1 s of warm-up and 4 s of measurement per variant,
/// then the command line's options.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args()
}

/// Reads `p, g, m, v` and writes `p, m, v` once per element, with one multiply-add per stream.
pub struct BoundKernel;

impl Kernel<f32> for BoundKernel {
    #[inline(always)]
    fn run(s: &[f32], p: &mut [f32], g: &[f32], st: &mut [&mut [f32]], _red: &mut [f64]) {
        let [m, v] = st else {
            panic!("bound kernel takes two state buffers")
        };
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        let (a, b, c, d, e, f) = (s[0], s[1], s[2], s[3], s[4], s[5]);
        for i in 0..n {
            let gi = g[i];
            let mi = m[i] * a + gi * b;
            let vi = v[i] * c + gi * gi * d;
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] - mi * e + vi * f;
        }
    }
}

/// Scalars of the bound kernel: an EMA of `g` and of `g²` (AdamW's own moment updates, so
/// running it over AdamW's state buffers leaves valid moments there), and a small step
/// (values stay finite).
pub const BOUND_SCALARS: [f32; 6] = [0.9, 0.1, 0.999, 0.001, 1e-3, -1e-3];

/// One bound step over all tensors (`params[i]`, `grads[i]`, state `m[i]`, `v[i]`), threaded
/// like the runtime's executor: sequential below [`PARALLEL_THRESHOLD`] elements, otherwise one
/// `into_par_iter` over [`CHUNK`]-element pieces of every tensor.
pub fn bound_step<P, G, S>(params: &mut [P], grads: &[G], m: &mut [S], v: &mut [S])
where
    P: AsMut<[f32]> + Send,
    G: AsRef<[f32]> + Sync,
    S: AsMut<[f32]> + Send,
{
    let s = &BOUND_SCALARS[..];
    let total: usize = params.iter_mut().map(|p| p.as_mut().len()).sum();
    let count = params.len();
    let tensors = params
        .iter_mut()
        .zip(grads)
        .zip(m.iter_mut().zip(v.iter_mut()));
    if total < PARALLEL_THRESHOLD || rayon::current_num_threads() <= 1 {
        for ((p, g), (m, v)) in tensors {
            dispatch::<f32, BoundKernel>(
                s,
                p.as_mut(),
                g.as_ref(),
                &mut [m.as_mut(), v.as_mut()],
                &mut [],
            );
        }
        return;
    }
    let mut items = Vec::with_capacity(total / CHUNK + count);
    for ((p, g), (m, v)) in tensors {
        let pieces = p
            .as_mut()
            .chunks_mut(CHUNK)
            .zip(g.as_ref().chunks(CHUNK))
            .zip(
                m.as_mut()
                    .chunks_mut(CHUNK)
                    .zip(v.as_mut().chunks_mut(CHUNK)),
            );
        items.extend(pieces);
    }
    items.into_par_iter().for_each(|((p, g), (m, v))| {
        dispatch::<f32, BoundKernel>(s, p, g, &mut [m, v], &mut []);
    });
}

/// Slots of AdamW's first and second moment (`m`, `v`) in its per-parameter state, read from
/// its plan; also checks that the plan is one loop moving 28 bytes per `f32` parameter.
pub fn moment_slots(opt: &AdamW<f32>) -> (usize, usize) {
    let plan = opt.explain();
    let RuleBody::Fused { kernels, state, .. } = &plan.rules[0].body else {
        panic!("AdamW is expected to be a fused rule: {plan:?}")
    };
    assert_eq!(
        kernels.len(),
        1,
        "AdamW is expected to be one loop: {plan:?}"
    );
    assert_eq!(
        kernels[0].bytes_per_param(4),
        28,
        "AdamW is expected to move 28 B/param: {plan:?}"
    );
    let slot = |n: &str| {
        state
            .iter()
            .position(|s| *s == n)
            .unwrap_or_else(|| panic!("no state `{n}` in AdamW's plan: {plan:?}"))
    };
    (slot("m"), slot("v"))
}

/// AdamW's `m` and `v` buffers of every parameter, in the order of `names` (the buffers a bound
/// over the same memory as the optimizer's step runs on).
pub fn moments<'a>(
    opt: &'a mut AdamW<f32>,
    names: &[String],
) -> (Vec<&'a mut [f32]>, Vec<&'a mut [f32]>) {
    let (ms, vs) = moment_slots(opt);
    assert_ne!(ms, vs);
    let mut by_name: HashMap<&str, (&mut [f32], &mut [f32])> = opt
        .opt_state_mut()
        .params
        .iter_mut()
        .map(|(name, ps)| {
            let (lo, hi) = ps.buffers.split_at_mut(ms.max(vs));
            let (a, b) = (&mut lo[ms.min(vs)], &mut hi[0]);
            let (m, v) = if ms < vs { (a, b) } else { (b, a) };
            (name.as_str(), (m.as_mut_slice(), v.as_mut_slice()))
        })
        .collect();
    names
        .iter()
        .map(|n| {
            by_name
                .remove(n.as_str())
                .unwrap_or_else(|| panic!("no AdamW state for `{n}`"))
        })
        .unzip()
}
