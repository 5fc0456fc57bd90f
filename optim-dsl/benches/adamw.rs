//! AdamW step throughput: the fused DSL kernels against a same-access-pattern bound and dfdx.
//!
//! Every group measures, in the same run, one optimizer step over one parameter layout:
//!
//! | group | layout |
//! |---|---|
//! | `flat_1M`, `flat_10M` | one rank-1 tensor of 1 000 000 / 10 000 000 `f32` |
//! | `layers_1M`, `layers_10M` | 99 tensors of a small GPT-like model, same totals (below) |
//!
//! and, in each group, these variants (criterion function ids):
//!
//! - `bound`: a hand-written single-pass loop with AdamW's access pattern (reads `p, g, m, v`,
//!   writes `p, m, v`: 28 bytes per parameter) and trivial math, run exactly like the library
//!   runs its kernels: run-time SIMD dispatch through `optim_dsl::__private::dispatch`, one
//!   rayon dispatch over `CHUNK`-element pieces of every tensor when the step has at least
//!   `PARALLEL_THRESHOLD` elements (`common::bound_step`, shared with `lowp.rs` and
//!   optim-candle's bench). It runs over exactly the buffers `dsl_slices` touches: the same `p`
//!   and `g`, and that optimizer's own `m` and `v` state (its math is AdamW's moment update, so
//!   the state stays valid).
//! - `dsl_slices`: `AdamW::<f32>::default()` through `update_slices` (the default, exact
//!   arithmetic: agrees with PyTorch).
//! - `dsl_slices_recip`: the same with `set_arithmetic(Arithmetic::Reciprocal)` (the opt-in
//!   cheaper mode: divisions by per-step scalars become multiplications by reciprocals).
//! - `dsl_dfdx`: the same optimizer through `update(&mut model, &mut grads)` on a dfdx model
//!   (the default `ParamSync::Master`: the optimizer's master copy is updated and written back
//!   into the model, which is read only when it was written since: 36 bytes per parameter).
//! - `dsl_dfdx_read`: the same with `set_param_sync(ParamSync::Read)` (each parameter read from
//!   the model every step: 44 bytes per parameter).
//! - `dfdx_adam`: `dfdx::optim::Adam` with `WeightDecay::Decoupled(1e-2)` (AdamW) on a model with
//!   the same tensors.
//! - `dfdx_ops`: AdamW written with dfdx tensor arithmetic (`m * b1 + g * (1 - b1)`, ...), which
//!   allocates per op, over rank-1 tensors of the same sizes.
//! - `bound_again`: `bound` measured again after the others. Memory bandwidth on a shared
//!   machine drifts; `bound_again / bound` far from 1 means the group's ratios are unreliable.
//!
//! The dfdx models: the flat layout is a 1-tuple `(Tensor<Rank1<N>, f32, Cpu>,)` (its one tensor
//! is named `"0."`: the tuple field `0` joined with the tensor's own empty name, as dfdx joins
//! paths); the layered layout is dfdx's own
//! `(Embedding<V, D>, Repeated<TransformerEncoderBlock<D, H, 4D>, 6>, LayerNorm1D<D>)`: per block
//! four `D×D` attention weights and their biases, `D×4D` and `4D×D` MLP weights and biases, and
//! two layer norms (16 tensors), so `6 (12 D² + 13 D) + 2 D + V D` parameters in 99 tensors.
//! `D = 100, V = 2720` gives exactly 1 000 000 and `D = 320, V = 8130` exactly 10 000 000. The
//! slice variants use the layout read from the model (same names, shapes and initial values).
//!
//! Before measuring, each group runs one step of every AdamW variant from the same initial
//! values and checks that they agree, so every variant is timed doing the right thing.
//!
//! Run: `cargo bench -p optim-dsl --bench adamw`; summarize with `python3 scripts/bench-report.py`.

use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use dfdx::nn::builders::{Embedding, LayerNorm1D, Repeated, TransformerEncoderBlock};
use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
    ViewTensorRef,
};
use dfdx::nn::{DeviceBuildExt, ZeroGrads};
use dfdx::optim::{Adam, AdamConfig, Optimizer, WeightDecay};
use dfdx::shapes::{HasShape, Rank1, Shape};
use dfdx::tensor::{Cpu, CpuError, Gradients, Tensor, TensorFrom, ZerosTensor};
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;
use optim_dsl::{Arithmetic, ParamSync};

mod common;
use common::{bound_step, moments};

// ---------------------------------------------------------------------------------------------
// Deterministic data.

/// Initial parameter value of element `i` of tensor `t`: in `[-0.5, 0.5)`.
fn init_value(t: usize, i: usize) -> f32 {
    (hash(t, i, 0x9e37_79b9) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// Gradient of element `i` of tensor `t`: magnitude in `[1e-3, 1e-2]` (no denormals in `g²`),
/// random sign.
fn grad_value(t: usize, i: usize) -> f32 {
    let h = hash(t, i, 0x85eb_ca6b);
    let mag = 1e-3 + 9e-3 * ((h >> 40) as f32 / (1u64 << 24) as f32);
    if h & 1 == 0 {
        mag
    } else {
        -mag
    }
}

fn hash(t: usize, i: usize, salt: u64) -> u64 {
    let mut x = (t as u64).wrapping_mul(0x0100_0000_01b3) ^ (i as u64) ^ (salt << 32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

// ---------------------------------------------------------------------------------------------
// Visitors over a dfdx model.

/// Sets every tensor to [`init_value`] and its gradient (allocated if needed) to
/// [`grad_value`].
struct Fill<'a> {
    grads: &'a mut Gradients<f32, Cpu>,
    idx: usize,
}

impl TensorVisitor<f32, Cpu> for Fill<'_> {
    type Viewer = ViewTensorMut;
    type Err = CpuError;
    type E2 = f32;
    type D2 = Cpu;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, Cpu>,
        t: &mut Tensor<S, f32, Cpu>,
    ) -> Result<Option<Tensor<S, f32, Cpu>>, CpuError> {
        let n = t.shape().num_elements();
        let vals: Vec<f32> = (0..n).map(|i| init_value(self.idx, i)).collect();
        t.copy_from(&vals);
        let buf = self.grads.get_or_alloc_mut(&*t)?;
        for (i, x) in buf.iter_mut().enumerate() {
            *x = grad_value(self.idx, i);
        }
        self.idx += 1;
        Ok(None)
    }
}

/// One trainable tensor: dotted name, shape, current values.
struct Leaf {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Reads every trainable tensor's name, shape and values, in visiting order.
#[derive(Default)]
struct Snapshot {
    leaves: Vec<Leaf>,
}

impl TensorVisitor<f32, Cpu> for Snapshot {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = CpuError;
    type E2 = f32;
    type D2 = Cpu;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, Cpu>,
        (t, name): (&Tensor<S, f32, Cpu>, String),
    ) -> Result<Option<Tensor<S, f32, Cpu>>, CpuError> {
        if opts.do_gradient_update {
            let shape = t.shape().concrete().into_iter().collect();
            self.leaves.push(Leaf {
                name,
                shape,
                values: t.as_vec(),
            });
        }
        Ok(None)
    }
}

fn snapshot<M: TensorCollection<f32, Cpu>>(model: &M) -> Vec<Leaf> {
    let mut s = Snapshot::default();
    M::iter_tensors(&mut RecursiveWalker {
        m: (model, String::new()),
        f: &mut s,
    })
    .expect("walk model");
    s.leaves
}

// ---------------------------------------------------------------------------------------------
// AdamW from dfdx tensor ops.

/// AdamW state for `dfdx_ops`: one rank-1 tensor per parameter for `p, g, m, v`.
struct OpsAdamW {
    p: Vec<Tensor<(usize,), f32, Cpu>>,
    g: Vec<Tensor<(usize,), f32, Cpu>>,
    m: Vec<Tensor<(usize,), f32, Cpu>>,
    v: Vec<Tensor<(usize,), f32, Cpu>>,
    step: i32,
}

/// AdamW hyperparameters (the zoo's defaults).
const LR: f64 = 1e-3;
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const WD: f64 = 1e-2;

impl OpsAdamW {
    fn new(dev: &Cpu, leaves: &[Leaf], grads: &[Vec<f32>]) -> Self {
        let mk = |v: &[f32]| dev.tensor((v.to_vec(), (v.len(),)));
        OpsAdamW {
            p: leaves.iter().map(|l| mk(&l.values)).collect(),
            g: grads.iter().map(|g| mk(g)).collect(),
            m: leaves
                .iter()
                .map(|l| dev.zeros_like(&(l.values.len(),)))
                .collect(),
            v: leaves
                .iter()
                .map(|l| dev.zeros_like(&(l.values.len(),)))
                .collect(),
            step: 0,
        }
    }

    /// `p = p (1 - lr wd) - lr / bc1 * m / (sqrt(v / bc2) + eps)`, one tensor op at a time.
    fn step(&mut self) {
        self.step += 1;
        let bc1 = 1.0 - BETA1.powi(self.step);
        let bc2 = 1.0 - BETA2.powi(self.step);
        for i in 0..self.p.len() {
            let g = &self.g[i];
            let m = std::mem::replace(&mut self.m[i], g.clone());
            let v = std::mem::replace(&mut self.v[i], g.clone());
            let p = std::mem::replace(&mut self.p[i], g.clone());
            let m = m * BETA1 as f32 + g.clone() * (1.0 - BETA1) as f32;
            let v = v * BETA2 as f32 + g.clone().square() * (1.0 - BETA2) as f32;
            let denom = (v.clone() * (1.0 / bc2) as f32).sqrt() + EPS as f32;
            let p = p * (1.0 - LR * WD) as f32 - m.clone() * (LR / bc1) as f32 / denom;
            self.m[i] = m;
            self.v[i] = v;
            self.p[i] = p;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One group.

/// Largest allowed difference between two AdamW implementations after one step.
fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 + 1e-5 * a.abs().max(b.abs())
}

fn assert_same(what: &str, expect: &[Vec<f32>], got: &[Vec<f32>]) {
    assert_eq!(expect.len(), got.len(), "{what}: tensor count");
    for (t, (e, g)) in expect.iter().zip(got).enumerate() {
        assert_eq!(e.len(), g.len(), "{what}: tensor {t} length");
        if let Some(i) = (0..e.len()).find(|&i| !close(e[i], g[i])) {
            panic!(
                "{what}: tensor {t} element {i}: expected {}, got {}",
                e[i], g[i]
            );
        }
    }
}

fn bench_case<M>(c: &mut Criterion, label: &str, dev: &Cpu, mut model: M)
where
    M: TensorCollection<f32, Cpu> + Clone,
{
    // Model and gradients with deterministic values; the slice layout read back from the model.
    let mut grads = model.alloc_grads();
    M::iter_tensors(&mut RecursiveWalker {
        m: &mut model,
        f: &mut Fill {
            grads: &mut grads,
            idx: 0,
        },
    })
    .expect("fill params and grads");
    let leaves = snapshot(&model);
    let total: usize = leaves.iter().map(|l| l.values.len()).sum();
    let names: Vec<String> = leaves.iter().map(|l| l.name.clone()).collect();
    let shapes: Vec<Vec<usize>> = leaves.iter().map(|l| l.shape.clone()).collect();
    let mut params: Vec<Vec<f32>> = leaves.iter().map(|l| l.values.clone()).collect();
    let g: Vec<Vec<f32>> = leaves
        .iter()
        .enumerate()
        .map(|(t, l)| (0..l.values.len()).map(|i| grad_value(t, i)).collect())
        .collect();
    eprintln!("{label}: {} tensors, {total} parameters", leaves.len());

    // Optimizers, and one checked step of each AdamW variant from the same initial values.
    let mut slices_opt = AdamW::<f32>::default();
    let mut recip_opt = AdamW::<f32>::default();
    recip_opt.set_arithmetic(Arithmetic::Reciprocal);
    let mut recip_params = params.clone();
    let mut dfdx_opt = AdamW::<f32>::default();
    let mut model_dsl = model.clone(); // same tensor ids (so `grads` applies), own storage on write
    let mut read_opt = AdamW::<f32>::default();
    read_opt.set_param_sync(ParamSync::Read);
    let mut model_read = model.clone();
    let mut model_adam = model;
    let mut adam = Adam::new(
        &model_adam,
        AdamConfig {
            lr: LR,
            betas: [BETA1, BETA2],
            eps: EPS,
            weight_decay: Some(WeightDecay::Decoupled(WD)),
        },
    );
    let mut ops = OpsAdamW::new(dev, &leaves, &g);
    drop(leaves);

    let slices_step = |opt: &mut AdamW<f32>, params: &mut [Vec<f32>]| {
        let mut ps: Vec<ParamSlice<'_, f32>> = params
            .iter_mut()
            .zip(&g)
            .zip(names.iter().zip(&shapes))
            .map(|((p, g), (name, shape))| ParamSlice {
                name,
                shape,
                param: p,
                grad: g,
            })
            .collect();
        opt.update_slices(&mut ps).expect("dsl_slices step");
    };
    slices_step(&mut slices_opt, &mut params);
    slices_step(&mut recip_opt, &mut recip_params);
    dfdx_opt
        .update(&mut model_dsl, &mut grads)
        .expect("dsl_dfdx step");
    read_opt
        .update(&mut model_read, &mut grads)
        .expect("dsl_dfdx_read step");
    adam.update(&mut model_adam, &grads)
        .expect("dfdx_adam step");
    ops.step();
    assert_same("dsl_slices_recip vs dsl_slices", &params, &recip_params);
    let values = |leaves: Vec<Leaf>| leaves.into_iter().map(|l| l.values).collect::<Vec<_>>();
    assert_same(
        "dsl_dfdx vs dsl_slices",
        &params,
        &values(snapshot(&model_dsl)),
    );
    assert_same(
        "dsl_dfdx_read vs dsl_slices",
        &params,
        &values(snapshot(&model_read)),
    );
    assert_same(
        "dfdx_adam vs dsl_slices",
        &params,
        &values(snapshot(&model_adam)),
    );
    let ops_p: Vec<Vec<f32>> = ops.p.iter().map(|t| t.as_vec()).collect();
    assert_same("dfdx_ops vs dsl_slices", &params, &ops_p);
    drop(ops_p);

    let mut group = c.benchmark_group(label);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(total as u64));
    group.bench_function("bound", |b| {
        let (mut m, mut v) = moments(&mut slices_opt, &names);
        b.iter(|| bound_step(&mut params, &g, &mut m, &mut v))
    });
    group.bench_function("dsl_slices", |b| {
        b.iter(|| slices_step(&mut slices_opt, &mut params))
    });
    group.bench_function("dsl_slices_recip", |b| {
        b.iter(|| slices_step(&mut recip_opt, &mut recip_params))
    });
    group.bench_function("dsl_dfdx", |b| {
        b.iter(|| {
            dfdx_opt
                .update(&mut model_dsl, &mut grads)
                .expect("dsl_dfdx step")
        })
    });
    group.bench_function("dsl_dfdx_read", |b| {
        b.iter(|| {
            read_opt
                .update(&mut model_read, &mut grads)
                .expect("dsl_dfdx_read step")
        })
    });
    group.bench_function("dfdx_adam", |b| {
        b.iter(|| {
            adam.update(&mut model_adam, &grads)
                .expect("dfdx_adam step")
        })
    });
    group.bench_function("dfdx_ops", |b| b.iter(|| ops.step()));
    // The bound once more at the end: this machine's memory bandwidth drifts (it is shared), so
    // `bound_again / bound` says how much the group's ratios can be trusted.
    group.bench_function("bound_again", |b| {
        let (mut m, mut v) = moments(&mut slices_opt, &names);
        b.iter(|| bound_step(&mut params, &g, &mut m, &mut v))
    });
    group.finish();
}

/// `6 (12 D² + 13 D) + 2 D + V D` parameters in 99 tensors (see the module docs).
type Gpt<const V: usize, const D: usize, const H: usize, const F: usize> = (
    Embedding<V, D>,
    Repeated<TransformerEncoderBlock<D, H, F>, 6>,
    LayerNorm1D<D>,
);

fn flat<const N: usize>(dev: &Cpu) -> (Tensor<Rank1<N>, f32, Cpu>,) {
    (dev.zeros::<Rank1<N>>(),)
}

fn adamw(c: &mut Criterion) {
    let dev = Cpu::default();
    let plan = AdamW::<f32>::default().explain();
    eprintln!("AdamW plan: {} kernel(s)", plan.kernel_count());
    bench_case(c, "flat_1M", &dev, flat::<1_000_000>(&dev));
    bench_case(
        c,
        "layers_1M",
        &dev,
        dev.build_module::<Gpt<2720, 100, 4, 400>, f32>(),
    );
    bench_case(c, "flat_10M", &dev, flat::<10_000_000>(&dev));
    bench_case(
        c,
        "layers_10M",
        &dev,
        dev.build_module::<Gpt<8130, 320, 8, 1280>, f32>(),
    );
}

/// Runs every group (what `criterion_group!` would generate, with a doc comment).
fn benches() {
    adamw(&mut common::criterion());
}

criterion_main!(benches);
