//! AdamW step throughput with low-precision state (`let m: bf16 = ...`), each against the bound
//! of its own access pattern, in the same run.
//!
//! Groups `flat_1M`, `flat_10M`: one rank-1 tensor of 1 000 000 / 10 000 000 `f32`
//! parameters, stepped through `update_slices`. Variants (criterion function ids), with the
//! bytes each moves per parameter:
//!
//! | id | state | B/param |
//! |---|---|---|
//! | `bound_f32` | hand-written loop: reads `p, g, m, v`, writes `p, m, v`, trivial math | 28 |
//! | `bound_16` | the same with `m`, `v` as 16-bit bits (bf16 by truncation) | 20 |
//! | `dsl_f32` | AdamW, `f32` moments (the zoo's `AdamW`) | 28 |
//! | `dsl_bf16` | AdamW, `bf16` moments, round to nearest (the zoo's `AdamWBf16`) | 20 |
//! | `dsl_bf16_sr` | AdamW, `bf16` moments, stochastic rounding | 20 |
//! | `dsl_f16` | AdamW, `f16` moments, round to nearest | 20 |
//! | `dsl_f16_sr` | AdamW, `f16` moments, stochastic rounding | 20 |
//! | `bound_8` | the same with `m`, `v` as 8-bit codes and one `f32` scale per 256 (linear codes, block absmax) | 16.0625 |
//! | `dsl_q8` | AdamW, `q8`/`uq8` moments (8-bit block-wise, dynamic maps; the zoo's `AdamW8bit`) | 16.0625 |
//! | `bound_16_again` | `bound_16` again, after the others (drift check) | 20 |
//!
//! Each DSL variant is compared with the bound of the same byte count (`dsl_bf16 / bound_16`,
//! `dsl_q8 / bound_8`);
//! `dsl_f32 / bound_f32` is the f32 floor of `benches/adamw.rs`. The bounds run through the
//! runtime's own SIMD dispatch (`dispatch`, `dispatch_low`) and chunking (one rayon dispatch
//! over [`CHUNK`]-element pieces at or above [`PARALLEL_THRESHOLD`] elements). Before timing,
//! each DSL optimizer's `explain()` is checked to move the bytes in the table.
//!
//! Run: `cargo bench -p optim-dsl --bench lowp` (timings are taken on a quiet machine).

use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use optim_dsl::__private::{
    dispatch, dispatch_low,
    lowp::q8::{self, Q8Map, Q8Mut},
    lowp::Bits,
    LowAt, LowKernel, CHUNK, PARALLEL_THRESHOLD,
};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamW8bit, AdamWBf16};
use optim_dsl::RuleBody;
use rayon::prelude::*;

mod common;
// the scalars of every bound loop here: EMAs of `g` and `g²` and a small step
use common::BOUND_SCALARS as S;

/// Declares `pub $name`, the zoo's AdamW rule (and defaults) with the moments stored as named,
/// for the storages the zoo has no optimizer for.
macro_rules! adamw_stored {
    ($(#[doc = $doc:tt])* pub $name:ident: $m:ident, $v:ident) => {
        optimizer! {
            $(#[doc = $doc])*
            pub $name<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2> {
                let m: $m = momentum(grad, beta1);
                let v: $v = second_moment(grad, beta2);
                param = decoupled_decay(param, lr, weight_decay)
                    - lr / (1.0 - pow(beta1, step)) * m / (sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps);
            }
        }
    };
}

adamw_stored! {
    /// AdamW with both moments in bf16 (stochastic rounding).
    pub AdamWBf16Sr: bf16_sr, bf16_sr
}

adamw_stored! {
    /// AdamW with both moments in f16 (round to nearest).
    pub AdamWF16: f16, f16
}

adamw_stored! {
    /// AdamW with both moments in f16 (stochastic rounding).
    pub AdamWF16Sr: f16_sr, f16_sr
}

/// `p, g` in `f32`, `m, v` as bf16 bits (widened by a shift, narrowed by truncation): 20 B/param.
struct Bound16;

impl LowKernel<f32> for Bound16 {
    #[inline(always)]
    fn run(
        s: &[f32],
        p: &mut [f32],
        g: &[f32],
        _: &mut [&mut [f32]],
        lo: &mut [&mut [Bits]],
        _: &mut [Q8Mut<'_>],
        _: LowAt,
        _: &mut [f64],
    ) {
        let [m, v] = lo else { return };
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i];
            let mi = f32::from_bits(u32::from(m[i]) << 16) * s[0] + gi * s[1];
            let vi = f32::from_bits(u32::from(v[i]) << 16) * s[2] + gi * gi * s[3];
            m[i] = (mi.to_bits() >> 16) as Bits;
            v[i] = (vi.to_bits() >> 16) as Bits;
            p[i] = p[i] - mi * s[4] + vi * s[5];
        }
    }
}

/// `p, g` in `f32`, `m, v` as 8-bit codes with one `f32` scale per 256-element block: linear
/// codes (`x ≈ (c − 128) · absmax / 127`), the block's new values staged, its absmax, then the
/// codes; 16 + 4·4/256 B/param.
struct Bound8;

impl LowKernel<f32> for Bound8 {
    #[inline(always)]
    fn run(
        s: &[f32],
        p: &mut [f32],
        g: &[f32],
        _: &mut [&mut [f32]],
        _: &mut [&mut [Bits]],
        q: &mut [Q8Mut<'_>],
        _: LowAt,
        _: &mut [f64],
    ) {
        let [m, v] = q else { return };
        let n = p.len();
        if g.len() < n || m.codes.len() < n || v.codes.len() < n {
            return;
        }
        let mut i0 = 0;
        while i0 < n {
            let i1 = (i0 + q8::BLOCK).min(n);
            let b = i0 / q8::BLOCK;
            let (sm, sv) = (m.scales[b] / 127.0, v.scales[b] / 127.0);
            // every stream re-sliced to the block, so that the loops vectorise
            let (p, g) = (&mut p[i0..i1], &g[i0..i1]);
            let (mc, vc) = (&mut m.codes[i0..i1], &mut v.codes[i0..i1]);
            let len = i1 - i0;
            let (mut qm, mut qv) = ([0.0f32; q8::BLOCK], [0.0f32; q8::BLOCK]);
            let (qm, qv) = (&mut qm[..len], &mut qv[..len]);
            // absmax as the largest magnitude bit pattern (an integer maximum vectorises)
            let (mut am, mut av) = (0u32, 0u32);
            for i in 0..len {
                let gi = g[i];
                let mi = (f32::from(mc[i]) - 128.0) * sm * s[0] + gi * s[1];
                let vi = (f32::from(vc[i]) - 128.0) * sv * s[2] + gi * gi * s[3];
                qm[i] = mi;
                qv[i] = vi;
                am = am.max(mi.abs().to_bits());
                av = av.max(vi.abs().to_bits());
                p[i] = p[i] - mi * s[4] + vi * s[5];
            }
            let (am, av) = (f32::from_bits(am), f32::from_bits(av));
            let (rm, rv) = (127.0 / am.max(1e-30), 127.0 / av.max(1e-30));
            // the nearest integer as the low bits of `x + 2^23` (saturating float-to-int casts
            // do not vectorise)
            let code = |x: f32| (x.clamp(0.0, 255.0) + 8_388_608.0).to_bits() as u8;
            for i in 0..len {
                mc[i] = code(qm[i] * rm + 128.0);
                vc[i] = code(qv[i] * rv + 128.0);
            }
            m.scales[b] = am;
            v.scales[b] = av;
            i0 = i1;
        }
    }
}

/// One 8-bit bound step, threaded like the executor (chunks of whole blocks).
fn bound_step8(p: &mut [f32], g: &[f32], m: &mut q8::Q8Buf, v: &mut q8::Q8Buf) {
    let run = |p: &mut [f32], g: &[f32], mut qs: [Q8Mut<'_>; 2]| {
        dispatch_low::<f32, Bound8>(
            &S,
            p,
            g,
            &mut [],
            &mut [],
            &mut qs,
            LowAt::default(),
            &mut [],
        );
    };
    let nb = CHUNK / q8::BLOCK;
    if p.len() < PARALLEL_THRESHOLD || rayon::current_num_threads() <= 1 {
        let qs = [m, v].map(|b| Q8Mut {
            map: b.map,
            codes: &mut b.codes[..],
            scales: &mut b.scales[..],
        });
        return run(p, g, qs);
    }
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(
            m.codes
                .par_chunks_mut(CHUNK)
                .zip(m.scales.par_chunks_mut(nb)),
        )
        .zip(
            v.codes
                .par_chunks_mut(CHUNK)
                .zip(v.scales.par_chunks_mut(nb)),
        )
        .for_each(|(((p, g), (mc, ms)), (vc, vs))| {
            let qs = [
                Q8Mut {
                    map: Q8Map::Signed,
                    codes: mc,
                    scales: ms,
                },
                Q8Mut {
                    map: Q8Map::Unsigned,
                    codes: vc,
                    scales: vs,
                },
            ];
            run(p, g, qs)
        });
}

/// One bound step, threaded like the executor.
fn bound_step<T: Send>(
    p: &mut [f32],
    g: &[f32],
    m: &mut [T],
    v: &mut [T],
    run: impl Fn(&mut [f32], &[f32], &mut [T], &mut [T]) + Sync,
) {
    if p.len() < PARALLEL_THRESHOLD || rayon::current_num_threads() <= 1 {
        return run(p, g, m, v);
    }
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| run(p, g, m, v));
}

/// Bytes per `f32` parameter the optimizer's single loop moves, from its plan.
fn plan_bytes<O: DslOptimizer<f32>>(opt: &O) -> usize {
    let plan = opt.explain();
    match &plan.rules[0].body {
        RuleBody::Fused { kernels, .. } if kernels.len() == 1 => kernels[0].bytes_per_param(4),
        other => panic!("expected one loop, got {other:?}"),
    }
}

/// Steps of `opt` on one parameter `"w"`.
struct Slices<O> {
    opt: O,
    w: Vec<f32>,
    g: Vec<f32>,
}

impl<O: DslOptimizer<f32>> Slices<O> {
    fn new(opt: O, n: usize, bytes: usize) -> Self {
        assert_eq!(plan_bytes(&opt), bytes, "B/param of the plan");
        let w = (0..n).map(|i| ((i % 1000) as f32) * 1e-3 - 0.5).collect();
        let g = (0..n)
            .map(|i| ((i * 7 % 1001) as f32) * 2e-3 - 1.0)
            .collect();
        Slices { opt, w, g }
    }
    fn step(&mut self) {
        let n = self.w.len();
        self.opt
            .update_slices(&mut [ParamSlice {
                name: "w",
                shape: &[n],
                param: &mut self.w,
                grad: &self.g,
            }])
            .unwrap();
    }
}

fn bench_case(c: &mut Criterion, label: &str, n: usize) {
    let mut group = c.benchmark_group(label);
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(n as u64));
    let mut p = vec![0.1f32; n];
    let g: Vec<f32> = (0..n)
        .map(|i| ((i * 7 % 1001) as f32) * 2e-3 - 1.0)
        .collect();
    let (mut m32, mut v32) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut m16, mut v16) = (vec![0 as Bits; n], vec![0 as Bits; n]);
    let run32 = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        dispatch::<f32, common::BoundKernel>(&S, p, g, &mut [m, v], &mut []);
    };
    let run16 = |p: &mut [f32], g: &[f32], m: &mut [Bits], v: &mut [Bits]| {
        dispatch_low::<f32, Bound16>(
            &S,
            p,
            g,
            &mut [],
            &mut [m, v],
            &mut [],
            LowAt::default(),
            &mut [],
        );
    };
    group.bench_function("bound_f32", |b| {
        b.iter(|| bound_step(&mut p, &g, &mut m32, &mut v32, run32))
    });
    group.bench_function("bound_16", |b| {
        b.iter(|| bound_step(&mut p, &g, &mut m16, &mut v16, run16))
    });
    let mut f32s = Slices::new(AdamW::<f32>::default(), n, 28);
    group.bench_function("dsl_f32", |b| b.iter(|| f32s.step()));
    drop(f32s);
    let mut bf16 = Slices::new(AdamWBf16::<f32>::default(), n, 20);
    group.bench_function("dsl_bf16", |b| b.iter(|| bf16.step()));
    drop(bf16);
    let mut sr = Slices::new(AdamWBf16Sr::<f32>::default(), n, 20);
    group.bench_function("dsl_bf16_sr", |b| b.iter(|| sr.step()));
    drop(sr);
    let mut f16 = Slices::new(AdamWF16::<f32>::default(), n, 20);
    group.bench_function("dsl_f16", |b| b.iter(|| f16.step()));
    drop(f16);
    let mut f16_sr = Slices::new(AdamWF16Sr::<f32>::default(), n, 20);
    group.bench_function("dsl_f16_sr", |b| b.iter(|| f16_sr.step()));
    drop(f16_sr);
    let (mut m8, mut v8) = (
        q8::Q8Buf::filled(Q8Map::Signed, n, 0.0),
        q8::Q8Buf::filled(Q8Map::Unsigned, n, 0.0),
    );
    group.bench_function("bound_8", |b| {
        b.iter(|| bound_step8(&mut p, &g, &mut m8, &mut v8))
    });
    drop((m8, v8));
    let mut q8s = Slices::new(AdamW8bit::<f32>::default(), n, 16);
    group.bench_function("dsl_q8", |b| b.iter(|| q8s.step()));
    drop(q8s);
    group.bench_function("bound_16_again", |b| {
        b.iter(|| bound_step(&mut p, &g, &mut m16, &mut v16, run16))
    });
    group.finish();
}

/// Runs every group (what `criterion_group!` would generate, with a doc comment).
fn benches() {
    let mut c = common::criterion();
    bench_case(&mut c, "flat_1M", 1_000_000);
    bench_case(&mut c, "flat_10M", 10_000_000);
}

criterion_main!(benches);
