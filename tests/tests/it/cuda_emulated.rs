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
    optim_tests::values::seeded(seed, n)
        .map(E::of_f64)
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
        let (pc, pd) = against_cpu::<O>(|| HostBackend::new().with_chunk(7), |_, _, _| {});
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

/// Three steps of `O` on the CPU and on the emulated device with the host backend `backend`,
/// from the same start, calling `after(step, cpu, device)` after each; returns both final
/// parameter sets.
fn against_cpu<O: DslOptimizer<f64> + Default>(
    backend: fn() -> HostBackend,
    mut after: impl FnMut(usize, &[Vec<f64>], &[Vec<f64>]),
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut cpu = O::default();
    let mut dev = O::default();
    let mut pc = init::<f64>();
    let mut pd = init::<f64>();
    for t in 0..3 {
        let g = grads::<f64>(t);
        cpu_step(&mut cpu, &mut pc, &g).unwrap();
        emulated_step(&mut dev, backend(), &mut pd, &g).unwrap();
        after(t, &pc, &pd);
    }
    (pc, pd)
}

/// The emulated device with the GEMM family.
fn with_blas() -> HostBackend {
    HostBackend::new().with_blas()
}

/// With the GEMM family on the device, Muon's Newton–Schulz runs as device GEMMs (no copy to
/// the host); it equals the host iteration up to the GEMMs' summation order.
#[test]
fn muon_with_device_gemms_matches_the_cpu() {
    let (pc, pd) = against_cpu::<Muon<f64>>(with_blas, |_, _, _| {});
    let worst = optim_tests::trajectory::max_gap(&pc, &pd);
    assert!(
        worst <= 1e-12,
        "Muon on device GEMMs: worst difference {worst}"
    );
}

optim_dsl::optimizer! {
    /// Batch axes on the 3-d kernel `[3, 4, 5]`: Muon, Shampoo and a SOAP-style eigenbasis per
    /// `4 × 5` slice; the matrix gets the unbatched words.
    BatchedMix<lr = 0.01, beta = 0.9> {
        tensor => {
            let m = momentum(grad, beta);
            let q = kron_eigenbasis(grad, beta, update_freq = 2, batch = 1);
            let r = unrotate(rotate(m, q), q);
            param -= lr * (orthogonalize(m, batch = 1) + kron_precondition(grad, batch = 1) + r);
        }
        matrix => { param -= lr * orthogonalize(momentum(grad, beta)); }
        _ => { param -= lr * grad; }
    }
}

/// Batched matrix words (`batch = 1`) step bit for bit as on the CPU, with and without device
/// GEMMs (a batched `orthogonalize` runs per slice on the host copies either way).
#[test]
fn batched_matrix_words_step_bit_for_bit_as_on_the_cpu() {
    cpu_and_emulated_agree::<f32, BatchedMix<f32>>("BatchedMix");
    cpu_and_emulated_agree::<f64, BatchedMix<f64>>("BatchedMix");
    // the batched kernel ("conv") never touches the device GEMMs: bit for bit
    against_cpu::<BatchedMix<f64>>(with_blas, |t, pc, pd| assert_eq!(pc[1], pd[1], "step {t}"));
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

// ---- the dfdx model path of a `Cuda` step (master copies, publish), on `Cpu` ----

use dfdx::prelude::{BuildOnDevice, Cpu, DeviceBuildExt, Linear, ZeroGrads};
use dfdx::tensor::{Gradients, TensorFrom};
use optim_dsl::cuda::emulate::update_emulated_model;
use optim_dsl::DfdxUpdate;
use optim_tests::zoo::sgd;

type Net = (Linear<6, 10>, Linear<10, 3>);
type NetOn = <Net as BuildOnDevice<Cpu, f32>>::Built;

fn fill_grads(model: &NetOn, grads: &mut Gradients<f32, Cpu>, step: usize) {
    let mut k = 0u64;
    let mut put = |g: &mut Vec<f32>| {
        let v = values::<f32>(7000 * step as u64 + k, g.len());
        g.copy_from_slice(&v);
        k += 1;
    };
    put(grads.get_or_alloc_mut(&model.0.weight).unwrap());
    put(grads.get_or_alloc_mut(&model.0.bias).unwrap());
    put(grads.get_or_alloc_mut(&model.1.weight).unwrap());
    put(grads.get_or_alloc_mut(&model.1.bias).unwrap());
}

fn weights(m: &NetOn) -> Vec<u32> {
    [
        m.0.weight.as_vec(),
        m.0.bias.as_vec(),
        m.1.weight.as_vec(),
        m.1.bias.as_vec(),
    ]
    .concat()
    .iter()
    .map(|x| x.to_bits())
    .collect()
}

/// Three steps of `opt.update` (the CPU driver) and of the master-copy driver a `Cuda` model
/// takes (emulated device): the models must stay bit for bit equal, and the gradients intact.
fn model_paths_agree<O: DslOptimizer<f32> + Default>(name: &str) {
    let dev: Cpu = dfdx::tensor::Cpu::seed_from_u64(3);
    let mut a = dev.build_module::<Net, f32>();
    let mut b = a.clone(); // shares buffers until written (dfdx copies on write)
    let (mut oa, mut ob) = (O::default(), O::default());
    let (mut ga, mut gb) = (a.alloc_grads(), b.alloc_grads());
    for t in 0..3 {
        fill_grads(&a, &mut ga, t);
        fill_grads(&b, &mut gb, t);
        let before = b.1.weight.as_vec().len();
        let ra = oa.update(&mut a, &mut ga);
        let rb = update_emulated_model(&mut ob, &mut b, &mut gb);
        match (&ra, &rb) {
            (Ok(()), Ok(())) => {}
            _ => panic!("{name}: CPU {ra:?}, model path {rb:?}"),
        }
        assert_eq!(weights(&a), weights(&b), "{name} step {t}");
        assert_eq!(gb.get(&b.1.weight).as_vec().len(), before);
        assert_eq!(
            gb.get(&b.0.bias).as_vec(),
            values::<f32>(7000 * t as u64 + 1, 10),
            "{name}: gradients are unchanged"
        );
    }
    assert!(ob.opt_state().on_device() || ob.opt_state().device_name().is_some());
}

macro_rules! zoo_model_tests {
    ($($t:ident),* $(,)?) => {
        #[test]
        fn every_zoo_optimizer_steps_a_model_as_the_cpu_driver() {
            $(model_paths_agree::<$t<f32>>(stringify!($t));)*
        }
    };
}

optim_tests::for_each_zoo!(zoo_model_tests);

/// The device copy of a parameter is the truth between steps: an in-place write of the model
/// is seen after `resync_params`, a replaced tensor (new id) at once. SGD, lr = 0.5, gradient 1:
/// each step subtracts 0.5.
#[test]
fn master_copies_are_kept_resynced_and_follow_replaced_tensors() {
    let dev: Cpu = Default::default();
    let mut m = dev.build_module::<Linear<2, 1>, f32>();
    m.weight.copy_from(&[1.0, 2.0]);
    m.bias.copy_from(&[0.5]);
    let mut opt = sgd(0.5);
    let ones = |m: &<Linear<2, 1> as BuildOnDevice<Cpu, f32>>::Built| {
        let mut g = m.alloc_grads();
        g.get_or_alloc_mut(&m.weight).unwrap().fill(1.0);
        g.get_or_alloc_mut(&m.bias).unwrap().fill(1.0);
        g
    };
    let mut g = ones(&m);
    update_emulated_model(&mut opt, &mut m, &mut g).unwrap();
    assert_eq!(m.weight.as_vec(), [0.5, 1.5]);
    assert_eq!(m.bias.as_vec(), [0.0]);
    assert_eq!(g.get(&m.weight).as_vec(), [1.0, 1.0], "gradients untouched");

    // an in-place write without resync: the device copy wins (and is published over it)
    m.weight.copy_from(&[10.0, 20.0]);
    update_emulated_model(&mut opt, &mut m, &mut g).unwrap();
    assert_eq!(m.weight.as_vec(), [0.0, 1.0]);

    // with resync the step starts from the written values
    m.weight.copy_from(&[10.0, 20.0]);
    opt.opt_state_mut().resync_params();
    update_emulated_model(&mut opt, &mut m, &mut g).unwrap();
    assert_eq!(m.weight.as_vec(), [9.5, 19.5]);
    assert_eq!(
        m.bias.as_vec(),
        [-1.0],
        "the bias was read again too (unchanged)"
    );

    // a replaced tensor has a new id: read again without resync
    m.weight = dev.tensor([[4.0f32, 8.0]]);
    let mut g = ones(&m);
    update_emulated_model(&mut opt, &mut m, &mut g).unwrap();
    assert_eq!(m.weight.as_vec(), [3.5, 7.5]);
    assert_eq!(m.bias.as_vec(), [-1.5]);
}

/// A step that fails validation publishes nothing and hands every gradient back.
#[test]
fn a_refused_model_step_changes_nothing() {
    let dev: Cpu = Default::default();
    let mut m = dev.build_module::<Linear<2, 1>, f32>();
    let w0 = m.weight.as_vec();
    let mut opt = sgd(0.5);
    opt.opt_state_mut().non_finite = optim_dsl::NonFinitePolicy::Error;
    let mut g = m.alloc_grads();
    g.get_or_alloc_mut(&m.weight)
        .unwrap()
        .copy_from_slice(&[1.0, f32::NAN]);
    let err = update_emulated_model(&mut opt, &mut m, &mut g).unwrap_err();
    assert!(
        matches!(err, OptimError::NonFiniteGradient { .. }),
        "{err:?}"
    );
    assert_eq!(m.weight.as_vec(), w0);
    let back = g.get(&m.weight).as_vec();
    assert_eq!(back[0], 1.0);
    assert!(back[1].is_nan());
}
