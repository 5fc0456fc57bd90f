//! `bf16`/`f16` `Var`s run block by block on their own 16-bit storage (`optim_runtime::narrow`):
//! bit for bit the whole-tensor staging they replaced (kept as `set_stage_whole`, the
//! reference here), over several steps, for an element-wise rule (AdamW, also with a schedule,
//! reciprocal arithmetic and 16-bit/8-bit state), multi-stage rules with per-tensor and global
//! reductions (Lamb's trust ratio, a global-norm clip) and Muon (a matrix primitive on the
//! momentum, AdamW for vectors); tensors from 12 elements to more than one parallel chunk, with
//! lengths that are no multiple of the block, and a strided gradient. A failing step changes
//! nothing; rules that read the raw parameter as a whole tensor (Adafactor) are staged whole.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use optim_candle::{CandleConfig, CandleOptimizer};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{Adafactor, AdamW, AdamW8bit, AdamWBf16, AdamWConfig, Lamb, Muon};
use optim_dsl::{Arithmetic, Float, NonFinitePolicy, ParamInfo, Schedule};
use optim_runtime::{update_mixed_in_modules, MixedSlice, NarrowSlice, OptimError, StateDtype};

optimizer! {
    /// AdamW on the globally clipped gradient, with a stochastically rounded `bf16` first
    /// moment and an `f16` second moment: a global reduction (its own loop), then the update,
    /// over every parameter of the step.
    pub ClipAdamW<lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, max_norm = 0.5> {
        let g = clip_global_norm(grad, max_norm);
        let m: bf16_sr = momentum(g, beta1);
        let v: f16 = second_moment(g, beta2);
        param -= lr / (1.0 - pow(beta1, step)) * m / (sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps);
    }
}

optimizer! {
    /// Momentum normalised by its per-tensor norm, with a state that records the normalised
    /// value: the norm of computed (inexact) values, which an `f64` optimizer carries into its
    /// state, so that the order of the norm's summation shows in the state's bits.
    pub NormScaled<lr = 1e-2, beta1 = 0.9> {
        let m = momentum(grad, beta1);
        let s = ema(m / (norm(m) + 1e-8), 0.5);
        param -= lr * s;
    }
}

/// The test's parameters: a small matrix, one of 5143 elements (no multiple of the 256- or
/// 2048-element blocks), one of 77 100 (several parallel chunks, a partial last one), a vector
/// and an embedding (Muon sends the last two to AdamW).
const SHAPES: [(&str, &[usize]); 5] = [
    ("a.weight", &[3, 4]),
    ("b.weight", &[37, 139]),
    ("c.weight", &[300, 257]),
    ("d.bias", &[257]),
    ("embed.weight", &[40, 6]),
];

/// Deterministic, varied values in about [-2, 2).
fn values(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = ((i as u64 + 1) * 2654435761 + seed * 40503) % 100_003;
            (x as f32 - 50_000.0) / 25_000.0
        })
        .collect()
}

/// Fresh `Var`s of `dtype` with the test's shapes and values.
fn vars(dtype: DType) -> Vec<Var> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, (_, s))| {
            let n = s.iter().product();
            let t = Tensor::from_vec(values(i as u64, n), *s, &Device::Cpu).unwrap();
            Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
        })
        .collect()
}

/// Step `step`'s gradients of `vars` (of their dtype); the first parameter's is strided (a
/// transposed tensor transposed back) when `strided`.
fn grads(vars: &[Var], step: u64, strided: bool) -> GradStore {
    let mut g = GradStore::default();
    for (i, (v, (_, s))) in vars.iter().zip(SHAPES).enumerate() {
        let n: usize = s.iter().product();
        let vals: Vec<f32> = values(100 * step + i as u64 + 7, n)
            .iter()
            .map(|x| x * 0.25)
            .collect();
        let t = if strided && s.len() == 2 {
            let (r, c) = (s[0], s[1]);
            let tr: Vec<f32> = (0..n).map(|k| vals[(k % r) * c + k / r]).collect();
            let t = Tensor::from_vec(tr, (c, r), &Device::Cpu)
                .unwrap()
                .t()
                .unwrap();
            assert!(!t.is_contiguous());
            t
        } else {
            Tensor::from_vec(vals, s.to_vec(), &Device::Cpu).unwrap()
        };
        g.insert(v, t.to_dtype(v.dtype()).unwrap());
    }
    g
}

/// The bits of every `Var`, widened exactly to `f32`.
fn bits(vars: &[Var]) -> Vec<Vec<u32>> {
    vars.iter()
        .map(|v| {
            let w = v.as_tensor().to_dtype(DType::F32).unwrap();
            let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            w.iter().map(|x| x.to_bits()).collect()
        })
        .collect()
}

/// Every parameter's state, as comparable bits: step, element-wise buffers, 16-bit and 8-bit
/// state, scalars.
type StateBits = Vec<(String, u64, Vec<Vec<u64>>, Vec<Vec<u16>>)>;

fn state_bits<E: Float, O: DslOptimizer<E>>(opt: &O) -> StateBits {
    opt.opt_state()
        .params
        .iter()
        .map(|(name, ps)| {
            let mut bufs: Vec<Vec<u64>> = ps
                .buffers
                .iter()
                .map(|b| b.iter().map(|x| x.as_f64().to_bits()).collect())
                .collect();
            bufs.extend(ps.q8.iter().map(|q| {
                let codes = q.codes.iter().map(|&c| u64::from(c));
                codes
                    .chain(q.scales.iter().map(|s| u64::from(s.to_bits())))
                    .collect()
            }));
            bufs.push(ps.scalars.iter().map(|s| s.to_bits()).collect());
            let low = ps.low.iter().map(|l| l.bits.clone()).collect();
            (name.clone(), ps.step, bufs, low)
        })
        .collect()
}

/// `steps` steps of `make()` over fresh `dtype` `Var`s on the blocks and on the whole-tensor
/// staging: the same bits after every step, in the `Var`s and the state; the `Var`s change.
fn blocks_match_staging<E: Float, O: DslOptimizer<E>>(
    make: impl Fn() -> O,
    dtype: DType,
    steps: u64,
    strided: bool,
) {
    let names: Vec<&str> = SHAPES.iter().map(|(n, _)| *n).collect();
    let (va, vb) = (vars(dtype), vars(dtype));
    let start = bits(&va);
    let mut blocks: CandleOptimizer<O, E> = CandleOptimizer::new(
        va.clone(),
        CandleConfig::new(make()).with_names(names.clone()),
    )
    .unwrap();
    let mut staged: CandleOptimizer<O, E> =
        CandleOptimizer::new(vb.clone(), CandleConfig::new(make()).with_names(names)).unwrap();
    staged.set_stage_whole(true);
    for t in 0..steps {
        blocks.step(&grads(&va, t, strided)).unwrap();
        staged.step(&grads(&vb, t, strided)).unwrap();
        // (not `assert_eq!`: the values would fill the screen)
        assert!(
            bits(&va) == bits(&vb),
            "{dtype:?}: the Vars differ at step {t}"
        );
        let same = state_bits(blocks.inner()) == state_bits(staged.inner());
        assert!(same, "{dtype:?}: the state differs at step {t}");
    }
    for (i, (now, was)) in bits(&va).iter().zip(&start).enumerate() {
        assert_ne!(now, was, "{dtype:?}: `{}` did not change", SHAPES[i].0);
    }
}

fn adamw() -> AdamW<f32> {
    AdamW::<f32>::new(AdamWConfig {
        lr: 0.05.into(),
        weight_decay: 0.1.into(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn adamw_on_blocks_is_bitwise_the_staged_step() {
    for dtype in [DType::BF16, DType::F16] {
        blocks_match_staging(adamw, dtype, 4, false);
    }
}

#[test]
fn a_strided_gradient_on_blocks_is_bitwise_the_staged_step() {
    for dtype in [DType::BF16, DType::F16] {
        blocks_match_staging(adamw, dtype, 2, true);
    }
}

#[test]
fn a_schedule_and_reciprocal_arithmetic_on_blocks_are_bitwise_the_staged_step() {
    let make = || {
        let mut o = adamw();
        o.set_lr(Schedule::warmup_cosine(0.0, 0.05, 2, 6, 0.001).unwrap())
            .unwrap();
        o.set_arithmetic(Arithmetic::Reciprocal);
        o
    };
    for dtype in [DType::BF16, DType::F16] {
        blocks_match_staging(make, dtype, 4, false);
    }
}

#[test]
fn low_precision_state_on_blocks_is_bitwise_the_staged_step() {
    for dtype in [DType::BF16, DType::F16] {
        blocks_match_staging(AdamWBf16::<f32>::default, dtype, 3, false);
        blocks_match_staging(AdamW8bit::<f32>::default, dtype, 3, false);
    }
}

#[test]
fn reductions_on_blocks_are_bitwise_the_staged_step() {
    for dtype in [DType::BF16, DType::F16] {
        // a per-tensor trust ratio: two loops, the first reading the parameter only
        blocks_match_staging(Lamb::<f32>::default, dtype, 3, false);
        // a global norm over every parameter, then the update, with f16 state
        blocks_match_staging(ClipAdamW::<f32>::default, dtype, 3, false);
        // the norm of inexact values, computed in f64 and kept in f64 state: the blocks'
        // partial sums continue one running sum, in the staged path's order
        blocks_match_staging(NormScaled::<f64>::default, dtype, 3, false);
        blocks_match_staging(ClipAdamW::<f64>::default, dtype, 2, false);
    }
}

#[test]
fn muon_on_blocks_is_bitwise_the_staged_step() {
    for dtype in [DType::BF16, DType::F16] {
        blocks_match_staging(Muon::<f32>::default, dtype, 3, false);
    }
}

#[test]
fn rules_say_whether_they_run_on_blocks() {
    let info = ParamInfo::new("w", &[37, 139]);
    let embed = ParamInfo::new("embed.weight", &[40, 6]);
    assert!(<AdamW<f32> as DslOptimizer<f32>>::param_in_loops_only(
        0, &info
    ));
    assert!(<Lamb<f32> as DslOptimizer<f32>>::param_in_loops_only(
        0, &info
    ));
    assert!(<Muon<f32> as DslOptimizer<f32>>::param_in_loops_only(
        0, &info
    ));
    // Muon's reuse rule asks AdamW
    let r = <Muon<f32> as DslOptimizer<f32>>::route(&embed);
    assert_eq!(r, 1);
    assert!(<Muon<f32> as DslOptimizer<f32>>::param_in_loops_only(
        r, &embed
    ));
    // Adafactor's factored second moment reads the raw gradient whole
    assert!(!<Adafactor<f32> as DslOptimizer<f32>>::param_in_loops_only(
        0, &info
    ));
}

/// Adafactor (whole-tensor statistics of the raw gradient) is staged whole by the candle path,
/// and refused, changing nothing, when handed 16-bit storage directly.
#[test]
fn a_whole_tensor_rule_is_staged_and_refused_on_blocks() {
    blocks_match_staging(Adafactor::<f32>::default, DType::BF16, 2, false);

    let mut opt = Adafactor::<f32>::default();
    let mut p: Vec<u16> = values(1, 12)
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_bits())
        .collect();
    let g: Vec<u16> = values(2, 12)
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_bits())
        .collect();
    let p0 = p.clone();
    let err = update_mixed_in_modules::<f32, _>(
        &mut opt,
        &mut [MixedSlice::Narrow(NarrowSlice {
            name: "w",
            shape: &[3, 4],
            dtype: StateDtype::Bf16,
            param: &mut p,
            grad: &g,
        })],
        &[""],
    )
    .unwrap_err();
    assert!(
        matches!(&err, OptimError::InvalidUse(m) if m.contains("whole tensor")),
        "{err}"
    );
    assert_eq!(p, p0);
    assert!(opt.opt_state().params.is_empty());
    assert_eq!(opt.opt_state().step, 0);
}

/// A step that fails (a NaN gradient under `NonFinitePolicy::Error`; a hyperparameter outside
/// its domain) leaves the 16-bit `Var`s and the state as they were.
#[test]
fn a_failing_step_on_blocks_changes_nothing() {
    for dtype in [DType::BF16, DType::F16] {
        let names: Vec<&str> = SHAPES.iter().map(|(n, _)| *n).collect();
        let va = vars(dtype);
        let mut opt =
            CandleOptimizer::new(va.clone(), CandleConfig::new(adamw()).with_names(names)).unwrap();
        opt.inner_mut()
            .set_non_finite_policy(NonFinitePolicy::Error);
        opt.step(&grads(&va, 0, false)).unwrap();
        let (before, state) = (bits(&va), state_bits(opt.inner()));

        // a NaN in the last parameter's gradient
        let mut g = grads(&va, 1, false);
        let last = va.last().unwrap();
        let n = last.elem_count();
        let mut vals = vec![0.5f32; n];
        vals[n - 1] = f32::NAN;
        let bad = Tensor::from_vec(vals, last.shape(), &Device::Cpu).unwrap();
        g.insert(last, bad.to_dtype(dtype).unwrap());
        let err = opt.update(&g).unwrap_err();
        assert!(matches!(err, OptimError::NonFiniteGradient { .. }), "{err}");
        assert_eq!(bits(&va), before);
        assert_eq!(state_bits(opt.inner()), state);

        // a learning rate outside its domain
        opt.set_hyper("lr", -1.0).unwrap();
        assert!(opt.update(&grads(&va, 1, false)).is_err());
        assert_eq!(bits(&va), before);
        assert_eq!(state_bits(opt.inner()), state);
    }
}
