//! The device step driver (`optim_dsl::cuda::emulate`) on the emulated device, against the CPU
//! path, for every zoo optimizer. No GPU is involved: buffers are `Vec`s and each generated loop
//! runs its Rust twin, so what is checked is everything of a dfdx `Cuda` step except the CUDA
//! kernels themselves (those are checked by `cuda_source.rs` and, on a GPU, `cuda_gpu.rs`):
//! validation, state created on the device, one multi-tensor launch per loop with every
//! tensor's rows, per-step scalars, reduction totals, barriers (matrix primitives through the
//! device link), the state store kept between steps, checkpoints and moving between devices.
//!
//! Expected values are the CPU path's (`update_slices`), itself checked against the shared
//! reference trajectories by `conformance.rs`: with rows of `CHUNK` elements the emulated step
//! is bit for bit the CPU step, parameters, state and checkpoint bytes alike.

use optim_dsl::cuda::emulate::{update_emulated, EmulatedParam};
use optim_dsl::cuda::host::HostBackend;
use optim_dsl::zoo::*;
use optim_dsl::{Checkpoint, DslOptimizer, Float, OptimError, ParamSlice};

/// The model every test steps: a matrix, a 3-d "conv" kernel, a bias and a scalar, with
/// `module` names for routing guards left empty (as the slice path sees them).
const PARAMS: [(&str, &[usize]); 4] = [
    ("w", &[6, 10]),
    ("conv", &[3, 4, 5]),
    ("b", &[10]),
    ("s", &[]),
];

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Deterministic values in [-1, 1) (xorshift64).
fn values<E: Float>(seed: u64, n: usize) -> Vec<E> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            E::of_f64((s >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
        })
        .collect()
}

fn init<E: Float>() -> Vec<Vec<E>> {
    PARAMS
        .iter()
        .enumerate()
        .map(|(i, (_, s))| values(100 + i as u64, numel(s)))
        .collect()
}

fn grads<E: Float>(step: usize) -> Vec<Vec<E>> {
    PARAMS
        .iter()
        .enumerate()
        .map(|(i, (_, s))| values(1000 * step as u64 + i as u64, numel(s)))
        .collect()
}

fn cpu_step<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    params: &mut [Vec<E>],
    grads: &[Vec<E>],
) -> Result<(), OptimError> {
    let mut slices: Vec<ParamSlice<'_, E>> = PARAMS
        .iter()
        .zip(params.iter_mut())
        .zip(grads)
        .map(|(((name, shape), p), g)| ParamSlice {
            name,
            shape,
            param: p,
            grad: g,
        })
        .collect();
    opt.update_slices(&mut slices)
}

fn emulated_step<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    backend: HostBackend,
    params: &mut [Vec<E>],
    grads: &[Vec<E>],
) -> Result<(), OptimError> {
    let mut grads = grads.to_vec();
    let mut ps: Vec<EmulatedParam<'_, E>> = PARAMS
        .iter()
        .zip(params.iter_mut())
        .zip(grads.iter_mut())
        .map(|(((name, shape), p), g)| EmulatedParam {
            name,
            shape,
            module: "",
            param: p,
            grad: g,
        })
        .collect();
    update_emulated(opt, backend, &mut ps)
}

/// The state of `opt` with every buffer on the host, as checkpoint bytes.
fn checkpoint<E: Float, O: DslOptimizer<E> + Checkpoint<E>>(opt: &O) -> Vec<u8> {
    opt.to_checkpoint_bytes(None).expect("checkpoint")
}

/// `STEPS` steps on the CPU and on the emulated device from the same start; the parameters
/// after every step and the final checkpoints must be bit for bit equal (or both paths fail
/// with the same error). Then both continue from each other's checkpoint on the other device.
fn cpu_and_emulated_agree<E: Float, O>(name: &str)
where
    O: DslOptimizer<E> + Checkpoint<E> + Default,
{
    const STEPS: usize = 4;
    let mut cpu = O::default();
    let mut dev = O::default();
    let mut pc = init::<E>();
    let mut pd = init::<E>();
    for t in 0..STEPS {
        let g = grads::<E>(t);
        let rc = cpu_step(&mut cpu, &mut pc, &g);
        let rd = emulated_step(&mut dev, HostBackend::new(), &mut pd, &g);
        match (&rc, &rd) {
            (Ok(()), Ok(())) => {}
            (Err(a), Err(b)) => {
                // both refuse the same way (and change nothing); no zoo optimizer should refuse
                // this model, so this is a failure too, with the message of both paths
                assert_eq!(a.to_string(), b.to_string(), "{name}: errors differ");
                assert_eq!(pc, pd, "{name}: a failed step changed the parameters");
                panic!("{name} {}: both paths refuse step {t}: {a}", E::NAME);
            }
            _ => panic!("{name} {}: CPU {rc:?}, emulated device {rd:?}", E::NAME),
        }
        for (((p, _), c), d) in PARAMS.iter().zip(&pc).zip(&pd) {
            let same = c
                .iter()
                .zip(d)
                .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits());
            assert!(same, "{name} {} step {t} `{p}`: {c:?} vs {d:?}", E::NAME);
        }
    }
    assert_eq!(dev.opt_state().step, cpu.opt_state().step);
    let (bc, bd) = (checkpoint(&cpu), checkpoint(&dev));
    assert!(bc == bd, "{name} {}: checkpoints differ", E::NAME);

    // cross-device: the device state continues on the CPU, the CPU state on the device
    let mut on_cpu = O::default();
    on_cpu.load_checkpoint_bytes(&bd, None).unwrap();
    let mut on_dev = O::default();
    on_dev.load_checkpoint_bytes(&bc, None).unwrap();
    let (mut p1, mut p2) = (pd.clone(), pc.clone());
    for t in STEPS..STEPS + 2 {
        let g = grads::<E>(t);
        cpu_step(&mut on_cpu, &mut p1, &g).unwrap();
        emulated_step(&mut on_dev, HostBackend::new(), &mut p2, &g).unwrap();
        // and the original device optimizer goes on on the CPU (its state comes back first)
        cpu_step(&mut dev, &mut pd, &g).unwrap();
    }
    assert!(
        p1 == p2 && p1 == pd,
        "{name}: cross-device continuation differs"
    );
    assert!(
        !dev.opt_state().on_device(),
        "{name}: a CPU step brings state back"
    );
    assert!(
        checkpoint(&on_cpu) == checkpoint(&on_dev),
        "{name}: checkpoints differ"
    );
    assert!(
        checkpoint(&on_cpu) == checkpoint(&dev),
        "{name}: checkpoints differ"
    );
}

macro_rules! zoo_tests {
    ($($t:ident),* $(,)?) => {
        #[test]
        fn every_zoo_optimizer_steps_bit_for_bit_as_on_the_cpu_f32() {
            $(cpu_and_emulated_agree::<f32, $t<f32>>(stringify!($t));)*
        }
        #[test]
        fn every_zoo_optimizer_steps_bit_for_bit_as_on_the_cpu_f64() {
            $(cpu_and_emulated_agree::<f64, $t<f64>>(stringify!($t));)*
        }
    };
}

optim_tests::for_each_zoo!(zoo_tests);

/// Rows shorter than a tensor (several rows per tensor in one launch) only change the order in
/// which reduction totals are added: LAMB's trust ratio and Adafactor's RMS clip stay within a
/// few ulp of the CPU's (f64: relative 1e-12).
#[test]
fn short_rows_change_only_the_summation_order() {
    fn run<O: DslOptimizer<f64> + Default>(name: &str) {
        let mut cpu = O::default();
        let mut dev = O::default();
        let mut pc = init::<f64>();
        let mut pd = init::<f64>();
        for t in 0..3 {
            let g = grads::<f64>(t);
            cpu_step(&mut cpu, &mut pc, &g).unwrap();
            emulated_step(&mut dev, HostBackend::new().with_chunk(7), &mut pd, &g).unwrap();
        }
        for (c, d) in pc.iter().flatten().zip(pd.iter().flatten()) {
            assert!(
                (c - d).abs() <= 1e-12 * c.abs().max(1e-3),
                "{name}: {c} vs {d}"
            );
        }
    }
    run::<Lamb<f64>>("Lamb");
    run::<Adafactor<f64>>("Adafactor");
    run::<AdamW<f64>>("AdamW");
}

/// With the GEMM family on the device, Muon's Newton–Schulz runs as device GEMMs (no copy to
/// the host); it equals the host iteration up to the GEMMs' summation order.
#[test]
fn muon_with_device_gemms_matches_the_cpu() {
    let mut cpu = Muon::<f64>::default();
    let mut dev = Muon::<f64>::default();
    let mut pc = init::<f64>();
    let mut pd = init::<f64>();
    for t in 0..3 {
        let g = grads::<f64>(t);
        cpu_step(&mut cpu, &mut pc, &g).unwrap();
        emulated_step(&mut dev, HostBackend::new().with_blas(), &mut pd, &g).unwrap();
    }
    let worst = pc
        .iter()
        .flatten()
        .zip(pd.iter().flatten())
        .map(|(c, d)| (c - d).abs())
        .fold(0.0f64, f64::max);
    assert!(
        worst <= 1e-12,
        "Muon on device GEMMs: worst difference {worst}"
    );
}

/// A step that fails validation changes nothing, on the device as on the CPU: not the
/// parameters, not the state, not the step count; the buffers are handed back.
#[test]
fn a_failed_device_step_modifies_nothing() {
    let mut opt = AdamW::<f32>::default();
    let mut p = init::<f32>();
    emulated_step(&mut opt, HostBackend::new(), &mut p, &grads(0)).unwrap();
    assert!(
        opt.opt_state().on_device(),
        "the moments stay on the device"
    );
    assert!(opt.opt_state().param("w").unwrap().buffers[0].is_empty());
    let before = checkpoint(&opt);
    let p0 = p.clone();
    let mut g = grads::<f32>(1);
    g[1].pop(); // `conv`'s gradient one element short
    let err = emulated_step(&mut opt, HostBackend::new(), &mut p, &g).unwrap_err();
    assert!(
        matches!(err, OptimError::ShapeMismatch { ref param, .. } if param == "conv"),
        "{err:?}"
    );
    assert_eq!(p, p0);
    assert_eq!(opt.opt_state().step, 1);
    assert!(checkpoint(&opt) == before);
}
