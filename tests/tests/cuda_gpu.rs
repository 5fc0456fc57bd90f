//! GPU conformance of the generated CUDA kernels (feature `cuda`; needs an NVIDIA GPU and the CUDA
//! driver — run through `scripts/gpu-check.sh`).
//!
//! For every stage of every zoo optimizer, in `f32` and `f64`: the Rust path prepares the stage
//! the way the executor does (a fresh parameter, stages before it run on the CPU with their
//! reductions and barriers) and hands over its scalars and kernel; the same random inputs then go
//! through the Rust kernel and through the CUDA kernel, single-tensor and multi-tensor, and the
//! parameter, every stream and every reduction total must agree: bit for bit for most elements
//! (`+ - * /` and `sqrt` round identically), within a few ulp where CUDA's `exp`/`ln`/`pow`
//! differ from libm, and within `1e-9` relative for reduction totals (summed in another order).
//!
//! `opt.update` on dfdx `Cuda` models (the master-copy driver, `docs/gpu.md`): every zoo
//! optimizer steps a `Cuda` model as the CPU driver steps the same model on `Cpu` (within a
//! tolerance: CUDA's transcendentals and reduction order differ in the last bits), and
//! checkpoints cross between `Cuda` and `Cpu` with identical bytes. The shared reference
//! trajectories run through the `Cuda` path in `conformance*.rs` with `OPTIM_GPU=1`.
//!
//! The ignored `gpu_bench_*` tests print one `BENCH` line each (fixed iteration counts).

#![cfg(feature = "cuda")]

#[path = "it/cuda_common.rs"]
mod cuda_common;

/// The shared reference trajectories (every `conformance!` case of `conformance.rs` and
/// `conformance_2026.rs`): with `OPTIM_GPU=1` (set by `scripts/gpu-check.sh`) each case also
/// runs through `opt.update` on a dfdx `Cuda` model within the case's tolerance, its final
/// state checked like the CPU paths'.
#[path = "it/conformance.rs"]
mod reference_cases;
#[path = "it/conformance_2026.rs"]
mod reference_cases_2026;

use cuda_common::{
    assert_close, assert_red, cpu, inputs, rust_stage, uses_transcendental, zoo, Inputs, Rng,
};
use dfdx::prelude::{BuildOnDevice, Cpu, Cuda, DeviceBuildExt, Linear, ToDevice, ZeroGrads};
use dfdx::shapes::{Rank1, Rank2};
use dfdx::tensor::{Gradients, Tensor, ZerosTensor};
use optim_dsl::cuda::device::CudaBlas;
use optim_dsl::cuda::device::{CudaDevice, CudaSlice, CudaStage, CudaTensor};
use optim_dsl::zoo::*;
use optim_dsl::{Checkpoint, DfdxUpdate, DslOptimizer, Float};
use std::sync::Arc;
use std::time::Instant;

fn device() -> Arc<CudaDevice> {
    CudaDevice::new(0).expect("a CUDA device")
}

fn conformance<E: Float>() {
    let dev = device();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut checked = 0;
    for (k, f, scalars) in zoo::<E>() {
        let stage = CudaStage::<E>::load(&dev, k).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        let tr = uses_transcendental(k);
        // single tensor: small, and large enough for several grid-stride rounds
        for n in [1920usize, (1 << 20) + 3] {
            let x = inputs::<E>(&mut rng, n, k.n_bufs);
            let (p, bufs, red) = cpu(f, &scalars, k.n_reductions, &x);
            let mut dp: CudaSlice<E> = dev.htod_sync_copy(&x.param).unwrap();
            let dg: CudaSlice<E> = dev.htod_sync_copy(&x.grad).unwrap();
            let mut db: Vec<CudaSlice<E>> = x
                .bufs
                .iter()
                .map(|b| dev.htod_sync_copy(b).unwrap())
                .collect();
            let mut refs: Vec<&mut CudaSlice<E>> = db.iter_mut().collect();
            let gred = stage.run(&scalars, &mut dp, &dg, &mut refs).unwrap();
            let what = format!("{} {} n={n}", k.name, E::NAME);
            assert_close(
                &format!("{what} param"),
                &p,
                &dev.dtoh_sync_copy(&dp).unwrap(),
                tr,
            );
            for (j, (b, d)) in bufs.iter().zip(&db).enumerate() {
                assert_close(
                    &format!("{what} b{j}"),
                    b,
                    &dev.dtoh_sync_copy(d).unwrap(),
                    tr,
                );
            }
            assert_red(&what, &red, &gred);
        }
        // one multi-tensor launch over tensors of different sizes
        let sizes = [1usize, 300, 1920, 1 << 16];
        let xs: Vec<Inputs<E>> = sizes
            .iter()
            .map(|&n| inputs(&mut rng, n, k.n_bufs))
            .collect();
        let want: Vec<_> = xs
            .iter()
            .map(|x| cpu(f, &scalars, k.n_reductions, x))
            .collect();
        let mut dps: Vec<CudaSlice<E>> = xs
            .iter()
            .map(|x| dev.htod_sync_copy(&x.param).unwrap())
            .collect();
        let dgs: Vec<CudaSlice<E>> = xs
            .iter()
            .map(|x| dev.htod_sync_copy(&x.grad).unwrap())
            .collect();
        let mut dbs: Vec<Vec<CudaSlice<E>>> = xs
            .iter()
            .map(|x| {
                x.bufs
                    .iter()
                    .map(|b| dev.htod_sync_copy(b).unwrap())
                    .collect()
            })
            .collect();
        let mut tensors: Vec<CudaTensor<'_, E>> = dps
            .iter_mut()
            .zip(&dgs)
            .zip(dbs.iter_mut())
            .map(|((param, grad), bufs)| CudaTensor {
                scalars: &scalars,
                param,
                grad,
                bufs: bufs.iter_mut().collect(),
            })
            .collect();
        let greds = stage.run_multi(&mut tensors).unwrap();
        drop(tensors);
        for (t, (p, bufs, red)) in want.iter().enumerate() {
            let what = format!("{} {} multi tensor {t}", k.name, E::NAME);
            assert_close(
                &format!("{what} param"),
                p,
                &dev.dtoh_sync_copy(&dps[t]).unwrap(),
                tr,
            );
            for (j, b) in bufs.iter().enumerate() {
                let got = dev.dtoh_sync_copy(&dbs[t][j]).unwrap();
                assert_close(&format!("{what} b{j}"), b, &got, tr);
            }
            assert_red(&what, red, &greds[t]);
        }
        checked += 1;
    }
    println!("{checked} {} kernels match their Rust twins", E::NAME);
    assert!(checked >= 50);
}

#[test]
fn every_zoo_kernel_matches_the_cpu_in_f32() {
    conformance::<f32>();
}

#[test]
fn every_zoo_kernel_matches_the_cpu_in_f64() {
    conformance::<f64>();
}

/// AdamW's `f32` stage (every flag off) loaded on `dev`, with the scalars of its Rust twin.
fn adamw_stage(dev: &Arc<CudaDevice>) -> (CudaStage<f32>, Vec<f32>) {
    let k = <AdamW<f32> as DslOptimizer<f32>>::cuda_sources()
        .iter()
        .find(|k| k.flags.iter().all(|(_, v)| !v))
        .unwrap();
    let (_, scalars) = rust_stage::<f32, AdamW<f32>>(k);
    (CudaStage::<f32>::load(dev, k).unwrap(), scalars)
}

/// AdamW's stage on 64 Mi `f32` elements: effective bandwidth (28 bytes per element).
#[test]
#[ignore = "benchmark; run by scripts/gpu-check.sh"]
fn gpu_bench_adamw_bandwidth() {
    let dev = device();
    let (stage, scalars) = adamw_stage(&dev);
    let n = 1usize << 26;
    let mut p: CudaSlice<f32> = dev.alloc_zeros(n).unwrap();
    let g: CudaSlice<f32> = dev.alloc_zeros(n).unwrap();
    let mut m: CudaSlice<f32> = dev.alloc_zeros(n).unwrap();
    let mut v: CudaSlice<f32> = dev.alloc_zeros(n).unwrap();
    let iters = 20;
    for i in 0..=iters {
        if i == 1 {
            dev.synchronize().unwrap();
        }
        stage
            .run(&scalars, &mut p, &g, &mut [&mut m, &mut v])
            .unwrap();
    }
    dev.synchronize().unwrap();
    let t0 = Instant::now();
    for _ in 0..iters {
        stage
            .run(&scalars, &mut p, &g, &mut [&mut m, &mut v])
            .unwrap();
    }
    dev.synchronize().unwrap();
    let s = t0.elapsed().as_secs_f64() / iters as f64;
    println!(
        "BENCH adamw f32 n={n}: {:.3} ms/step, {:.0} GB/s effective (28 B/element)",
        s * 1e3,
        28.0 * n as f64 / s / 1e9
    );
}

/// 100 tensors of 16 Ki `f32` elements: one launch each versus one multi-tensor launch.
#[test]
#[ignore = "benchmark; run by scripts/gpu-check.sh"]
fn gpu_bench_multi_tensor() {
    let dev = device();
    let (stage, scalars) = adamw_stage(&dev);
    let (count, n) = (100usize, 16_384usize);
    let mut ps: Vec<CudaSlice<f32>> = (0..count).map(|_| dev.alloc_zeros(n).unwrap()).collect();
    let gs: Vec<CudaSlice<f32>> = (0..count).map(|_| dev.alloc_zeros(n).unwrap()).collect();
    let mut ms: Vec<CudaSlice<f32>> = (0..count).map(|_| dev.alloc_zeros(n).unwrap()).collect();
    let mut vs: Vec<CudaSlice<f32>> = (0..count).map(|_| dev.alloc_zeros(n).unwrap()).collect();
    let mut single = || {
        for (((p, g), m), v) in ps.iter_mut().zip(&gs).zip(ms.iter_mut()).zip(vs.iter_mut()) {
            stage.run(&scalars, p, g, &mut [m, v]).unwrap();
        }
    };
    single();
    dev.synchronize().unwrap();
    let t0 = Instant::now();
    single();
    dev.synchronize().unwrap();
    let t_single = t0.elapsed().as_secs_f64();
    fn multi(
        stage: &CudaStage<f32>,
        scalars: &[f32],
        ps: &mut [CudaSlice<f32>],
        gs: &[CudaSlice<f32>],
        ms: &mut [CudaSlice<f32>],
        vs: &mut [CudaSlice<f32>],
    ) {
        let mut tensors: Vec<CudaTensor<'_, f32>> = ps
            .iter_mut()
            .zip(gs)
            .zip(ms.iter_mut().zip(vs.iter_mut()))
            .map(|((param, grad), (m, v))| CudaTensor {
                scalars,
                param,
                grad,
                bufs: vec![m, v],
            })
            .collect();
        stage.run_multi(&mut tensors).unwrap();
    }
    multi(&stage, &scalars, &mut ps, &gs, &mut ms, &mut vs);
    dev.synchronize().unwrap();
    let t0 = Instant::now();
    multi(&stage, &scalars, &mut ps, &gs, &mut ms, &mut vs);
    dev.synchronize().unwrap();
    let t_multi = t0.elapsed().as_secs_f64();
    println!(
        "BENCH adamw f32 {count} x {n}: {:.2} ms with one launch per tensor, {:.2} ms with one multi-tensor launch ({:.1}x)",
        t_single * 1e3,
        t_multi * 1e3,
        t_single / t_multi
    );
}

// ---- opt.update on dfdx `Cuda` models ----

type Net = (Linear<6, 10>, Linear<10, 3>);
type NetOn<D> = <Net as BuildOnDevice<D, f32>>::Built;

/// Deterministic values in [-1, 1) (xorshift64).
fn vals(seed: u64, n: usize) -> Vec<f32> {
    optim_tests::values::seeded(seed, n)
        .map(|x| x as f32)
        .collect()
}

fn net_values<D: dfdx::tensor_ops::Device<f32>>(m: &NetOn<D>) -> Vec<f32> {
    [
        m.0.weight.as_vec(),
        m.0.bias.as_vec(),
        m.1.weight.as_vec(),
        m.1.bias.as_vec(),
    ]
    .concat()
}

fn cpu_grads(m: &NetOn<Cpu>, step: u64) -> Gradients<f32, Cpu> {
    let mut g = m.alloc_grads();
    g.get_or_alloc_mut(&m.0.weight)
        .unwrap()
        .copy_from_slice(&vals(10 * step, 60));
    g.get_or_alloc_mut(&m.0.bias)
        .unwrap()
        .copy_from_slice(&vals(10 * step + 1, 10));
    g.get_or_alloc_mut(&m.1.weight)
        .unwrap()
        .copy_from_slice(&vals(10 * step + 2, 30));
    g.get_or_alloc_mut(&m.1.bias)
        .unwrap()
        .copy_from_slice(&vals(10 * step + 3, 3));
    g
}

fn cuda_grads(m: &NetOn<Cuda>, step: u64) -> Gradients<f32, Cuda> {
    let mut g = m.alloc_grads();
    let put = |slot: &mut CudaSlice<f32>, v: Vec<f32>| {
        slot.device().htod_sync_copy_into(&v, slot).unwrap();
    };
    put(
        g.get_or_alloc_mut(&m.0.weight).unwrap(),
        vals(10 * step, 60),
    );
    put(
        g.get_or_alloc_mut(&m.0.bias).unwrap(),
        vals(10 * step + 1, 10),
    );
    put(
        g.get_or_alloc_mut(&m.1.weight).unwrap(),
        vals(10 * step + 2, 30),
    );
    put(
        g.get_or_alloc_mut(&m.1.bias).unwrap(),
        vals(10 * step + 3, 3),
    );
    g
}

/// Three steps on `Cpu` and on `Cuda` from the same model: the largest difference relative to
/// `1 + |cpu|`, which must stay below `1e-4` (sign-based rules like Lion can flip an element
/// whose momentum is within rounding of zero; none of the zoo does on this model).
fn cuda_model_agrees<O: DslOptimizer<f32> + Default>(name: &str) -> f64 {
    let cpu_dev = Cpu::seed_from_u64(5);
    let cuda_dev = Cuda::seed_from_u64(5);
    let mut a: NetOn<Cpu> = cpu_dev.build_module::<Net, f32>();
    let mut b: NetOn<Cuda> = a.to_device(&cuda_dev);
    let (mut oa, mut ob) = (O::default(), O::default());
    let mut worst = 0.0f64;
    for t in 0..3u64 {
        let mut ga = cpu_grads(&a, t);
        let mut gb = cuda_grads(&b, t);
        oa.update(&mut a, &mut ga)
            .unwrap_or_else(|e| panic!("{name} cpu: {e}"));
        ob.update(&mut b, &mut gb)
            .unwrap_or_else(|e| panic!("{name} cuda: {e}"));
        for (x, y) in net_values::<Cpu>(&a).iter().zip(net_values::<Cuda>(&b)) {
            let d = if x.to_bits() == y.to_bits() {
                0.0
            } else {
                (*x as f64 - y as f64).abs() / (1.0 + (*x as f64).abs())
            };
            worst = worst.max(if d.is_nan() { f64::INFINITY } else { d });
        }
        assert_eq!(
            gb.get(&b.0.bias).as_vec(),
            vals(10 * t + 1, 10),
            "{name}: gradients are unchanged"
        );
    }
    assert!(worst < 1e-4, "{name}: Cuda differs from Cpu by {worst:e}");
    assert!(ob
        .opt_state()
        .device_name()
        .is_some_and(|d| d.starts_with("cuda")));
    worst
}

macro_rules! zoo_cuda_models {
    ($($t:ident),* $(,)?) => {
        #[test]
        fn every_zoo_optimizer_steps_a_cuda_model_as_on_the_cpu() {
            let mut worst = 0.0f64;
            $(worst = worst.max(cuda_model_agrees::<$t<f32>>(stringify!($t)));)*
            println!("zoo models on Cuda match the CPU driver (largest relative difference {worst:.2e})");
        }
    };
}

optim_tests::for_each_zoo!(zoo_cuda_models);

/// State saved from `Cuda` loads on `Cpu` with identical bytes, and the other way round; both
/// continue alike.
#[test]
fn checkpoints_cross_between_cuda_and_cpu() {
    let cpu_dev = Cpu::seed_from_u64(9);
    let cuda_dev = Cuda::seed_from_u64(9);
    let mut a: NetOn<Cpu> = cpu_dev.build_module::<Net, f32>();
    let mut b: NetOn<Cuda> = a.to_device(&cuda_dev);
    let mut on_gpu = AdamW::<f32>::default();
    let mut on_cpu = AdamW::<f32>::default();
    for t in 0..3u64 {
        let mut gb = cuda_grads(&b, t);
        on_gpu.update(&mut b, &mut gb).unwrap();
        let mut ga = cpu_grads(&a, t);
        on_cpu.update(&mut a, &mut ga).unwrap();
    }
    assert!(on_gpu.opt_state().on_device());
    // Cuda -> Cpu
    let from_gpu = on_gpu.to_checkpoint_bytes(None).unwrap();
    let mut loaded = AdamW::<f32>::default();
    loaded.load_checkpoint_bytes(&from_gpu, None).unwrap();
    assert!(
        loaded.to_checkpoint_bytes(None).unwrap() == from_gpu,
        "Cuda -> Cpu"
    );
    // Cpu -> Cuda: load the CPU's state, step it on the GPU once; the same step on the CPU
    let from_cpu = on_cpu.to_checkpoint_bytes(None).unwrap();
    let mut back = AdamW::<f32>::default();
    back.load_checkpoint_bytes(&from_cpu, None).unwrap();
    let mut b2: NetOn<Cuda> = a.to_device(&cuda_dev);
    let mut gb = cuda_grads(&b2, 3);
    back.update(&mut b2, &mut gb).unwrap();
    assert!(back.opt_state().on_device());
    let mut ga = cpu_grads(&a, 3);
    on_cpu.update(&mut a, &mut ga).unwrap();
    for (x, y) in net_values::<Cpu>(&a).iter().zip(net_values::<Cuda>(&b2)) {
        assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "{x} vs {y}");
    }
    // and the Cuda state saved again loads back on the GPU with identical bytes
    let again = back.to_checkpoint_bytes(None).unwrap();
    let mut again_opt = AdamW::<f32>::default();
    again_opt.load_checkpoint_bytes(&again, None).unwrap();
    assert!(again_opt.to_checkpoint_bytes(None).unwrap() == again);
    println!("checkpoints cross between Cuda and Cpu with identical bytes");
}

// ---- benchmarks (fixed iteration counts; one BENCH line each) ----

fn time(dev: &Arc<CudaDevice>, iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    dev.synchronize().unwrap();
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    dev.synchronize().unwrap();
    t0.elapsed().as_secs_f64() / iters as f64
}

fn bench_adamw_model<const N: usize>(iters: usize) {
    let cuda = Cuda::seed_from_u64(0);
    let mut p: Tensor<Rank1<N>, f32, Cuda> = cuda.zeros();
    let mut grads = p.alloc_grads();
    let dev = grads.get_or_alloc_mut(&p).unwrap().device();
    // device-to-device copy of the same bytes (read n + write n floats)
    let src: CudaSlice<f32> = dev.alloc_zeros(N).unwrap();
    let mut dst: CudaSlice<f32> = dev.alloc_zeros(N).unwrap();
    let t_copy = time(&dev, iters, || dev.dtod_copy(&src, &mut dst).unwrap());
    let copy_bw = 8.0 * N as f64 / t_copy;
    let mut opt = AdamW::<f32>::default();
    let t_dsl = time(&dev, iters, || opt.update(&mut p, &mut grads).unwrap());
    // bytes the design moves: 28 in the kernel, 24 to publish (copy 8, fill 4, axpy 12)
    let dsl_bw = 52.0 * N as f64 / t_dsl;
    let mut dfdx_opt = dfdx::optim::Adam::new(
        &p,
        dfdx::optim::AdamConfig {
            weight_decay: Some(dfdx::optim::WeightDecay::Decoupled(1e-2)),
            ..Default::default()
        },
    );
    let g = grads.clone();
    let t_dfdx = time(&dev, iters, || {
        dfdx::optim::Optimizer::update(&mut dfdx_opt, &mut p, &g).unwrap()
    });
    println!(
        "BENCH adamw n={N}: copy {:.0} GB/s; DSL update {:.3} ms = {:.0} GB/s of 52 B/param ({:.0}% of copy), {:.2}x the ideal 28 B/param kernel at copy speed; dfdx Adam {:.3} ms ({:.2}x DSL)",
        copy_bw / 1e9,
        t_dsl * 1e3,
        dsl_bw / 1e9,
        100.0 * dsl_bw / copy_bw,
        t_dsl / (28.0 * N as f64 / copy_bw),
        t_dfdx * 1e3,
        t_dfdx / t_dsl,
    );
}

/// DSL AdamW through `opt.update` on one `Cuda` tensor of 10 M and 100 M elements against a
/// device-to-device copy of the same bytes and against dfdx's own `Adam` (decoupled decay).
#[test]
#[ignore = "benchmark; run by scripts/gpu-check.sh"]
fn gpu_bench_adamw_model() {
    bench_adamw_model::<10_000_000>(20);
    bench_adamw_model::<100_000_000>(5);
}

/// One Muon step on a 4096 × 4096 `Cuda` tensor (`opt.update`) against the same 5
/// Newton–Schulz iterations written directly with cuBLAS (no normalisation, no momentum).
#[test]
#[ignore = "benchmark; run by scripts/gpu-check.sh"]
fn gpu_bench_muon_4096() {
    const D: usize = 4096;
    let cuda = Cuda::seed_from_u64(0);
    let mut p: Tensor<Rank2<D, D>, f32, Cuda> = cuda.zeros();
    let mut grads = p.alloc_grads();
    {
        let slot = grads.get_or_alloc_mut(&p).unwrap();
        let v = vals(1, D * D);
        slot.device().htod_sync_copy_into(&v, slot).unwrap();
    }
    let dev = grads.get_or_alloc_mut(&p).unwrap().device();
    let mut opt = Muon::<f32>::default();
    let t_dsl = time(&dev, 3, || opt.update(&mut p, &mut grads).unwrap());
    let blas = CudaBlas::new(dev.clone()).unwrap();
    let mut x: CudaSlice<f32> = dev.htod_sync_copy(&vals(2, D * D)).unwrap();
    let mut a: CudaSlice<f32> = dev.alloc_zeros(D * D).unwrap();
    let mut b: CudaSlice<f32> = dev.alloc_zeros(D * D).unwrap();
    let mut y: CudaSlice<f32> = dev.alloc_zeros(D * D).unwrap();
    let t_blas = time(&dev, 3, || {
        ns_direct(&dev, &blas, D, &mut x, &mut a, &mut b, &mut y)
    });
    println!(
        "BENCH muon {D}x{D}: DSL step {:.2} ms, direct cuBLAS Newton-Schulz (5 iterations) {:.2} ms ({:.2}x)",
        t_dsl * 1e3,
        t_blas * 1e3,
        t_dsl / t_blas
    );
}

/// 5 quintic Newton–Schulz iterations on a square `d × d` matrix `X`: `A = X Xᵀ`,
/// `B = b A + c A A`, `X ← a X + B X` (Keller Jordan's coefficients), cuBLAS and copies only.
fn ns_direct(
    dev: &Arc<CudaDevice>,
    blas: &CudaBlas,
    d: usize,
    x: &mut CudaSlice<f32>,
    a: &mut CudaSlice<f32>,
    b: &mut CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
) {
    use optim_dsl::cuda::device::{cublasOperation_t, Gemm, GemmConfig};
    let (ca, cb, cc) = (3.4445f32, -4.7750f32, 2.0315f32);
    let n = d as i32;
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let cfg = |tb: bool, alpha: f32, beta: f32| GemmConfig {
        transa: op(false),
        transb: op(tb),
        m: n,
        n,
        k: n,
        alpha,
        lda: n,
        ldb: n,
        beta,
        ldc: n,
    };
    for _ in 0..5 {
        // SAFETY: every buffer holds d × d elements, as each GEMM addresses.
        unsafe {
            blas.gemm(cfg(true, 1.0, 0.0), &*x, &*x, a).unwrap();
        }
        dev.dtod_copy(&*a, b).unwrap();
        // SAFETY: as above.
        unsafe {
            blas.gemm(cfg(false, cc, cb), &*a, &*a, b).unwrap();
        }
        dev.dtod_copy(&*x, y).unwrap();
        // SAFETY: as above.
        unsafe {
            blas.gemm(cfg(false, 1.0, ca), &*b, &*x, y).unwrap();
        }
        std::mem::swap(x, y);
    }
}
