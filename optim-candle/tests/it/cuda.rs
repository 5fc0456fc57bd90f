//! candle CUDA `Var`s (feature `candle-cuda`).
//!
//! Without a GPU (any build): [`cuda_device`] returns a clear error, never a panic. On a GPU
//! (`#[ignore]`d here; `scripts/candle-cuda-run-on-gpu.sh` runs them with `--ignored cuda::gpu`):
//! every shared reference case that the candle CPU path runs (AdamW, AdamW with a schedule,
//! SGD momentum/Nesterov, Lion, Muon, Shampoo) steps `Var`s on a candle CUDA device, is checked
//! against the reference trajectory after every step (the case's tolerance) and against the
//! candle CPU path at the end (within a few ulp: the CUDA twins round `+ - * / sqrt` exactly as
//! the Rust loops; `exp`/`ln`/`pow` and reduction sums may differ in the last bits), and its
//! final optimizer state (brought back from the device) against the reference's.

use optim_candle::{compile_cuda_kernels, cuda_device};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, Lion, Muon, Sgd};
use optim_dsl::Float;

/// Compiles the kernels of `O` (f32 or f64) with NVRTC (no GPU needed): all of them, each
/// with both entry points in its PTX; without the feature, an `InvalidUse` naming it.
fn compiles<E: Float, O: DslOptimizer<E>>() {
    let n = O::cuda_sources().len();
    assert!(n > 0, "{} has CUDA twins", std::any::type_name::<O>());
    match compile_cuda_kernels::<E, O>() {
        Ok(k) if cfg!(feature = "candle-cuda") => assert_eq!(k, n, "every kernel compiled"),
        Err(OptimError::InvalidUse(m)) if cfg!(not(feature = "candle-cuda")) => {
            assert!(m.contains("`candle-cuda`"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cuda_kernels_of_the_zoo_compile_with_nvrtc() {
    compiles::<f32, AdamW<f32>>();
    compiles::<f64, AdamW<f64>>();
    compiles::<f32, Sgd<f32>>();
    compiles::<f32, Lion<f32>>();
    compiles::<f32, Muon<f32>>();
}

/// Without feature `candle-cuda`, asking for a CUDA device is an `InvalidUse` naming the
/// feature; with it, a CUDA device (a GPU is there) or a `Device` error (without a GPU: the
/// driver's `CUDA_ERROR_NO_DEVICE`, or the stub driver's of `scripts/build-candle-cuda.sh`),
/// never a panic.
#[test]
fn cuda_device_is_a_device_or_a_clear_error() {
    let got = cuda_device(0);
    if cfg!(feature = "candle-cuda") {
        match got {
            Ok(dev) => assert!(dev.is_cuda(), "{dev:?}"),
            Err(OptimError::Device(m)) => assert!(m.contains("CUDA device 0"), "{m}"),
            Err(e) => panic!("expected a Device error, got {e:?}"),
        }
    } else {
        match got {
            Err(OptimError::InvalidUse(m)) => assert!(m.contains("`candle-cuda`"), "{m}"),
            other => panic!("expected InvalidUse naming the feature, got {other:?}"),
        }
    }
}

#[cfg(feature = "candle-cuda")]
mod gpu {
    use super::*;
    use crate::reference_cases::{check_state, run_on, torch_lion, torch_sgd, values};
    use candle_core::backprop::GradStore;
    use candle_core::{DType, Device, Tensor, Var};
    use optim_candle::{CandleOptimizer, CandleUpdate};
    use optim_tests::fixtures::{self, Case};
    use optim_tests::zoo::torch_adamw_config;

    fn gpu() -> Device {
        cuda_device(0).expect("these tests need a CUDA GPU (run them with --ignored on one)")
    }

    /// `a` and `b` agree within `ulps` units in the last place of the larger magnitude.
    fn assert_ulps(what: &str, a: &[f32], b: &[f32], ulps: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let tol = ulps * f32::EPSILON * x.abs().max(y.abs()).max(f32::MIN_POSITIVE);
            assert!((x - y).abs() <= tol, "{what}[{i}]: cuda {x} vs cpu {y}");
        }
    }

    /// Runs `case` on the CPU and on the GPU (each checked against the reference after every
    /// step), compares the final `Var`s of the two, and the GPU's final state with the
    /// reference's (`state`: (theirs, ours) names; empty to skip).
    fn both<O: DslOptimizer<f32>>(case: &Case, make: impl Fn() -> O, state: &[(&str, &str)]) {
        let dev = gpu();
        let (_, cpu) = run_on(&Device::Cpu, case, make(), |_, _| {});
        let (mut opt, cuda) = run_on(&dev, case, make(), |_, _| {});
        let (c, g) = (cpu.data().lock().unwrap(), cuda.data().lock().unwrap());
        for n in &case.param_order {
            let what = format!("{}: {n}", case.case);
            assert_ulps(&what, &values(&g[n]), &values(&c[n]), 16.0);
        }
        if !state.is_empty() {
            // element-wise moments: kept on the GPU between steps, brought back for the check
            let on_gpu = opt.inner().opt_state().on_device();
            assert!(on_gpu, "state stays on the GPU");
            opt.inner_mut().opt_state_mut().sync_to_host().unwrap();
            check_state(case, opt.inner(), state);
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_adamw_matches_torch_and_the_cpu_path() {
        let case = fixtures::load("adamw");
        let make = || AdamW::<f32>::new(torch_adamw_config(&case, case.hyper_f64("lr").into()));
        both(
            &case,
            || make().unwrap(),
            &[("exp_avg", "m"), ("exp_avg_sq", "v")],
        );
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_sgd_lion_match_torch_and_the_cpu_path() {
        for name in ["sgd_momentum", "sgd_nesterov"] {
            let case = fixtures::load(name);
            both(&case, || torch_sgd(&case), &[("momentum_buffer", "buf")]);
        }
        let case = fixtures::load("lion");
        both(&case, || torch_lion(&case), &[("exp_avg", "m")]);
    }

    /// Muon (Newton–Schulz on the host through the device link, AdamW fallback on the device)
    /// and Shampoo (matrix state).
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_muon_shampoo_match_the_references() {
        let case = fixtures::load("muon_keller_f32");
        both(&case, || optim_tests::zoo::keller_muon(&case), &[]);
        let case = fixtures::load("shampoo");
        both(
            &case,
            || optim_tests::zoo::pytorch_optimizer_shampoo(&case),
            &[],
        );
    }

    /// A bf16 `Var` on CUDA is refused with an error, and nothing changes.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_bf16_var_is_refused() {
        let dev = gpu();
        let p0 = [1.0f32, -2.0, 3.0];
        let var = Var::from_slice(&p0, 3, &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let var = Var::from_tensor(&var).unwrap();
        let mut grads = GradStore::default();
        let g = Tensor::from_slice(&[0.5f32; 3], 3, &dev).unwrap();
        grads.insert(&var, g.to_dtype(DType::BF16).unwrap());
        let mut opt = AdamW::<f32>::new(Default::default()).unwrap();
        let err = opt.update_vars([("w", &var)], &grads).unwrap_err();
        assert!(
            matches!(err, OptimError::InvalidUse(ref m) if m.contains("bf16")),
            "{err:?}"
        );
        let back = var.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(back, p0);
        assert_eq!(opt.opt_state().step, 0);
    }

    /// `CandleOptimizer` on a GPU `Var` through `backward_step`: a real loss, a real gradient.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn gpu_backward_step_descends() {
        use candle_nn::Optimizer;
        let dev = gpu();
        let w = Var::from_slice(&[3.0f32, -4.0], 2, &dev).unwrap();
        let sgd = optim_dsl::zoo::Sgd::<f32>::new(optim_dsl::zoo::SgdConfig {
            lr: 0.25.into(),
            ..Default::default()
        })
        .unwrap();
        let mut opt =
            CandleOptimizer::new(vec![w.clone()], optim_candle::CandleConfig::new(sgd)).unwrap();
        // loss = sum(w²): gradient 2w, so plain SGD with lr 1/4 halves w each step
        for _ in 0..3 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        assert_eq!(w.to_vec1::<f32>().unwrap(), [0.375, -0.5]);
    }
}
