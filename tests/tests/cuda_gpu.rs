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
//! The ignored `gpu_bench_*` tests print bandwidth and launch-overhead numbers.

#![cfg(feature = "cuda")]

#[path = "it/cuda_common.rs"]
mod cuda_common;

use cuda_common::{
    assert_close, assert_red, cpu, inputs, rust_stage, uses_transcendental, zoo, Inputs, Rng,
};
use optim_dsl::cuda::device::{CudaDevice, CudaSlice, CudaStage, CudaTensor};
use optim_dsl::zoo::AdamW;
use optim_dsl::{DslOptimizer, Float};
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

/// AdamW's stage on 64 Mi `f32` elements: effective bandwidth (28 bytes per element).
#[test]
#[ignore = "benchmark; run by scripts/gpu-check.sh"]
fn gpu_bench_adamw_bandwidth() {
    let dev = device();
    let k = <AdamW<f32> as DslOptimizer<f32>>::cuda_sources()
        .iter()
        .find(|k| k.flags.iter().all(|(_, v)| !v))
        .unwrap();
    let (_, scalars) = rust_stage::<f32, AdamW<f32>>(k);
    let stage = CudaStage::<f32>::load(&dev, k).unwrap();
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

/// 2000 tensors of 4096 `f32` elements: one launch each versus one multi-tensor launch.
#[test]
#[ignore = "benchmark; run by scripts/gpu-check.sh"]
fn gpu_bench_multi_tensor() {
    let dev = device();
    let k = <AdamW<f32> as DslOptimizer<f32>>::cuda_sources()
        .iter()
        .find(|k| k.flags.iter().all(|(_, v)| !v))
        .unwrap();
    let (_, scalars) = rust_stage::<f32, AdamW<f32>>(k);
    let stage = CudaStage::<f32>::load(&dev, k).unwrap();
    let (count, n) = (2000usize, 4096usize);
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
