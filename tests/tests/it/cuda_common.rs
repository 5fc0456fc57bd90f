//! Shared by `cuda_source.rs` (host-compiled CUDA sources) and `cuda_gpu.rs` (GPU): every zoo
//! stage's Rust kernel and scalars as the executor builds them, random inputs, and comparisons.

#![allow(dead_code)]

use optim_dsl::__private::{KernelFn, StagedJob};
use optim_dsl::zoo::{
    AdEMAMix, Adadelta, Adafactor, Adagrad, Adam, AdamW, Adamax, Adan, Adopt, CautiousAdamW,
    CautiousLion, Dion, KFac, LaProp, Lamb, Lion, MarsAdamW, Muon, NAdam, NorMuon, PsgdKron, RAdam,
    RMSprop, ScheduleFreeAdamW, Sgd, Shampoo, Soap, Splus,
};
use optim_dsl::{
    CudaKernelSource, DslOptimizer, Field, Float, OptimizerConfig, ParamInfo, ParamState,
};

/// A zoo stage: its record, its Rust kernel, and the scalars the executor hands that kernel.
pub type Stage<E> = (&'static CudaKernelSource, KernelFn<E>, Vec<E>);

/// What a stage leaves in one tensor: the parameter, the streams, the reduction totals.
pub type Outputs<E> = (Vec<E>, Vec<Vec<E>>, Vec<f64>);

pub struct Rng(pub u64);

impl Rng {
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
    pub fn vec<E: Float>(&mut self, n: usize, lo: f64, hi: f64) -> Vec<E> {
        (0..n).map(|_| E::of_f64(self.uniform(lo, hi))).collect()
    }
}

/// The Rust kernel of stage `k.stage` and its scalars, as the executor would run them for a
/// fresh 48 x 40 parameter (earlier stages run on the CPU, with reductions and barriers).
pub fn rust_stage<E: Float, O: DslOptimizer<E>>(k: &CudaKernelSource) -> (KernelFn<E>, Vec<E>) {
    let mut cfg = O::Config::default();
    for &(flag, value) in k.flags {
        cfg.set_field(flag, Field::Flag(value)).unwrap();
    }
    let values = cfg.values(1).unwrap();
    let shape = [48usize, 40];
    let n = 48 * 40;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ k.name.len() as u64);
    let mut p: Vec<E> = rng.vec(n, -1.0, 1.0);
    let g: Vec<E> = rng.vec(n, -1.0, 1.0);
    let mut ps = ParamState::new(k.rule, n);
    let info = ParamInfo::new("layer.weight", &shape);
    let mut job = O::prepare(&values, k.rule, &mut ps, info, &mut p, &g);
    let mut globals = [0.0f64; 4];
    // matrix work on the raw gradient or parameter runs before the first loop (Adafactor, Dion)
    if job.has_pre_barrier() {
        job.pre_barrier();
    }
    for s in 0..k.stage {
        let mut call = job.kernel(s, &globals);
        let mut red = [0.0f64; 8];
        let nred = call.reductions;
        (call.kernel)(
            &call.scalars,
            call.param,
            call.grad,
            &mut call.bufs,
            &mut red[..nred],
        );
        let map = call.globals.clone();
        drop(call);
        for (l, gi) in map {
            globals[gi] = red[l];
        }
        job.reduced(s, &red);
        job.barrier(s);
    }
    let call = job.kernel(k.stage, &globals);
    (call.kernel, call.scalars.to_vec())
}

macro_rules! zoo_stages {
    ($e:ty; $($t:ident),* $(,)?) => {{
        let mut v: Vec<Stage<$e>> = Vec::new();
        $(for k in <$t<$e> as DslOptimizer<$e>>::cuda_sources() {
            let (f, s) = rust_stage::<$e, $t<$e>>(k);
            v.push((k, f, s));
        })*
        v
    }};
}

pub fn zoo<E: Float>() -> Vec<Stage<E>> {
    // one generic body per element type: the macro names the concrete types
    if E::BYTES == 4 {
        cast(
            zoo_stages!(f32; Sgd, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
            Lion, AdEMAMix, Muon, Adafactor, Shampoo, Lamb, Soap, ScheduleFreeAdamW, KFac,
            NorMuon, CautiousAdamW, CautiousLion, MarsAdamW, Adan, Adopt, LaProp, Splus, PsgdKron, Dion),
        )
    } else {
        cast(
            zoo_stages!(f64; Sgd, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
            Lion, AdEMAMix, Muon, Adafactor, Shampoo, Lamb, Soap, ScheduleFreeAdamW, KFac,
            NorMuon, CautiousAdamW, CautiousLion, MarsAdamW, Adan, Adopt, LaProp, Splus, PsgdKron, Dion),
        )
    }
}

/// `Vec<(…, KernelFn<F>, Vec<F>)>` as the same type with `E`, when `E` and `F` are the same type.
pub fn cast<E: Float, F: Float>(v: Vec<Stage<F>>) -> Vec<Stage<E>> {
    let any: Box<dyn std::any::Any> = Box::new(v);
    *any.downcast::<Vec<Stage<E>>>().expect("same element type")
}

/// Inputs of one tensor: parameter, gradient, streams (mostly positive, like second moments).
pub struct Inputs<E> {
    pub param: Vec<E>,
    pub grad: Vec<E>,
    pub bufs: Vec<Vec<E>>,
}

pub fn inputs<E: Float>(rng: &mut Rng, n: usize, nbufs: usize) -> Inputs<E> {
    let mut x = Inputs {
        param: rng.vec(n, -1.0, 1.0),
        grad: rng.vec(n, -1.0, 1.0),
        bufs: (0..nbufs).map(|_| rng.vec(n, 0.05, 1.0)).collect(),
    };
    // edge cases the semantics pin down: signed zeros (`sign`), NaN (`max`/`min` propagate it),
    // infinities, zero and negative state (division by zero, `sqrt` of a negative)
    for i in 0..n {
        match i % 97 {
            5 => x.grad[i] = E::zero(),
            11 => x.grad[i] = -E::zero(),
            17 => x.param[i] = -E::zero(),
            23 => x.grad[i] = E::nan(),
            31 => x.grad[i] = E::infinity(),
            41 => x.param[i] = E::nan(),
            _ => {}
        }
        for (j, b) in x.bufs.iter_mut().enumerate() {
            match (i + 13 * j) % 89 {
                7 => b[i] = E::zero(),
                19 => b[i] = E::of_f64(-0.5),
                29 => b[i] = E::nan(),
                _ => {}
            }
        }
    }
    x
}

/// Runs the Rust kernel on a copy of `x`; returns (param, streams, reduction totals).
pub fn cpu<E: Float>(f: KernelFn<E>, scalars: &[E], nred: usize, x: &Inputs<E>) -> Outputs<E> {
    let mut p = x.param.clone();
    let mut bufs = x.bufs.clone();
    let mut refs: Vec<&mut [E]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    let mut red = vec![0.0f64; nred];
    f(scalars, &mut p, &x.grad, &mut refs, &mut red);
    (p, bufs, red)
}

/// Elements that differ, and the largest difference in ulps, between `a` and `b`.
pub fn ulps<E: Float>(a: &[E], b: &[E]) -> (usize, f64) {
    let mut diff = 0;
    let mut worst = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x.as_f64(), y.as_f64());
        if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
            continue;
        }
        diff += 1;
        if x == y || x.is_nan() || y.is_nan() {
            // +0 against -0, or NaN against a number
            worst = f64::INFINITY;
            continue;
        }
        let eps = if E::BYTES == 4 {
            f64::from(f32::EPSILON)
        } else {
            f64::EPSILON
        };
        let ulp = (x.abs().max(y.abs()) * eps).max(f64::MIN_POSITIVE);
        worst = worst.max((x - y).abs() / ulp);
    }
    (diff, worst)
}

pub fn assert_close<E: Float>(what: &str, cpu: &[E], gpu: &[E], transcendental: bool) {
    let (diff, worst) = ulps(cpu, gpu);
    let limit = if transcendental { 64.0 } else { 0.0 };
    assert!(
        worst <= limit,
        "{what}: {diff} of {} elements differ, up to {worst:.1} ulp",
        cpu.len()
    );
}

pub fn assert_red(what: &str, cpu: &[f64], gpu: &[f64]) {
    assert_eq!(cpu.len(), gpu.len(), "{what}");
    for (c, g) in cpu.iter().zip(gpu) {
        let ok =
            c == g || (c.is_nan() && g.is_nan()) || (c - g).abs() <= 1e-9 * c.abs().max(g.abs());
        assert!(ok, "{what}: reduction {c} on the CPU, {g} on the GPU");
    }
}

pub fn uses_transcendental(k: &CudaKernelSource) -> bool {
    let body = &k.source_f32[k.source_f32.find("void dsl_stage(").unwrap_or(0)..];
    ["dsl_exp(", "dsl_ln(", "dsl_pow("]
        .iter()
        .any(|f| body.contains(f))
}
