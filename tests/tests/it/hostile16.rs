//! Hostile use of this session's new APIs: 16-bit parameters on the slice path
//! (`update_mixed_in_modules` with `MixedSlice`/`NarrowSlice`) and the dfdx CPU master copies
//! (`ParamSync::Master`). Every bad input must give a clear `OptimError` and leave the
//! parameters (bit for bit) and the optimizer state as they were; odd but valid sequences must
//! give the values the contract promises (hand-computed with SGD, or bit for bit the widened
//! `f32` path / the default `ParamSync::Read` mode).

use dfdx::prelude::*;
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamW8bit, AdamWBf16};
use optim_dsl::{Checkpoint, NonFinitePolicy, OptimError, ParamSync, ShapeChange};
use optim_runtime::{update_mixed_in_modules, MixedSlice, NarrowSlice, StateDtype};
use optim_tests::one::{filled, one, values, OneModel};
use optim_tests::params::slice;
use optim_tests::values::seeded;
use optim_tests::zoo::sgd;
use proptest::prelude::*;

// ------------------------------------------------------------------ 16-bit slices: helpers

/// `x` rounded to the nearest `bf16`, ties to even (finite `x`; written here independently of
/// the runtime's converters).
fn bf16_of(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The `f32` value of `bf16` bits (exact).
fn widen_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `n` varied `bf16` values in about [-1, 1).
fn bf16s(seed: u64, n: usize) -> Vec<u16> {
    seeded(seed, n).map(|x| bf16_of(x as f32)).collect()
}

/// `n` varied finite values of `dtype` (bits), small enough that one step keeps them finite.
fn halves(dtype: StateDtype, seed: u64, n: usize) -> Vec<u16> {
    match dtype {
        StateDtype::F16 => seeded(seed, n)
            // an f16 with exponent bits 0b01110 (0.5 .. 1) and a varied mantissa and sign
            .map(|x| {
                let m = ((x.abs() * 1023.0) as u16) & 0x3ff;
                let s = if x < 0.0 { 0x8000 } else { 0 };
                s | (0b01110 << 10) | m
            })
            .collect(),
        _ => bf16s(seed, n),
    }
}

/// A NaN and an infinity of `dtype`.
fn non_finite(dtype: StateDtype) -> [u16; 3] {
    match dtype {
        StateDtype::F16 => [0x7e00, 0x7c00, 0xfc00],
        _ => [0x7fc0, 0x7f80, 0xff80],
    }
}

/// AdamW with weight decay, so that the update reads the parameter.
fn adamw() -> AdamW<f32> {
    AdamW::<f32>::new(optim_dsl::zoo::AdamWConfig {
        lr: 0.05.into(),
        weight_decay: 0.1.into(),
        ..Default::default()
    })
    .unwrap()
}

/// The state as text: every field of every parameter, floats by their shortest exact decimal
/// (NaN-safe, unlike `==`).
fn state_text(o: &AdamW<f32>) -> String {
    format!("{:?}", o.opt_state())
}

/// One step of `opt` over a single 16-bit parameter.
fn narrow_step(
    opt: &mut AdamW<f32>,
    name: &str,
    shape: &[usize],
    dtype: StateDtype,
    param: &mut [u16],
    grad: &[u16],
) -> Result<(), OptimError> {
    update_mixed_in_modules::<f32, _>(
        opt,
        &mut [MixedSlice::Narrow(NarrowSlice {
            name,
            shape,
            dtype,
            param,
            grad,
        })],
        &[""],
    )
}

/// An optimizer that has taken one good step over `"w"` (`bf16`, 12 elements), with the
/// parameter after it.
fn warmed() -> (AdamW<f32>, Vec<u16>) {
    let mut opt = adamw();
    let mut p = bf16s(1, 12);
    narrow_step(
        &mut opt,
        "w",
        &[3, 4],
        StateDtype::Bf16,
        &mut p,
        &bf16s(2, 12),
    )
    .unwrap();
    (opt, p)
}

// ------------------------------------------------------------------ 16-bit slices: tests

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A 16-bit parameter whose shape, parameter length and gradient length disagree is
    /// refused with `ShapeMismatch` naming it, after a good step: nothing moves, neither it
    /// nor an `f32` parameter of the same step, nor the state or the step count.
    #[test]
    fn mismatched_lengths_are_refused_untouched(
        shape in proptest::collection::vec(0usize..5, 0..4),
        dp in -2i64..3,
        dg in -2i64..3,
        f16 in any::<bool>(),
    ) {
        let numel: usize = shape.iter().product();
        let plen = (numel as i64 + dp).max(0) as usize;
        let glen = (plen as i64 + dg).max(0) as usize;
        prop_assume!(plen != numel || glen != plen);
        let dtype = if f16 { StateDtype::F16 } else { StateDtype::Bf16 };
        let (mut opt, _) = warmed();
        let before = state_text(&opt);
        let mut p = halves(dtype, 3, plen);
        let g = halves(dtype, 4, glen);
        let p0 = p.clone();
        let mut other = vec![0.5f32; 4];
        let err = update_mixed_in_modules::<f32, _>(
            &mut opt,
            &mut [
                MixedSlice::Same(slice("same", &[4], &mut other, &[1.0; 4])),
                MixedSlice::Narrow(NarrowSlice {
                    name: "bad",
                    shape: &shape,
                    dtype,
                    param: &mut p,
                    grad: &g,
                }),
            ],
            &["", ""],
        )
        .unwrap_err();
        prop_assert!(
            matches!(&err, OptimError::ShapeMismatch { param, .. } if param == "bad"),
            "{err:?}"
        );
        prop_assert_eq!(p, p0);
        prop_assert_eq!(other, vec![0.5f32; 4]);
        prop_assert_eq!(state_text(&opt), before);
    }

    /// A NaN or an infinity anywhere in a 16-bit gradient (any length, either type), beside a
    /// good `f32` parameter: `Error` refuses the step naming the parameter, `SkipStep` skips it
    /// (counted), both leaving every parameter and the state as they were; `Propagate` steps
    /// (the step count advances).
    #[test]
    fn non_finite_16_bit_gradients_follow_the_policy(
        n in 1usize..5000,
        at in any::<proptest::sample::Index>(),
        which in 0usize..3,
        f16 in any::<bool>(),
        policy in 0usize..3,
    ) {
        let dtype = if f16 { StateDtype::F16 } else { StateDtype::Bf16 };
        let policy = [NonFinitePolicy::Propagate, NonFinitePolicy::SkipStep, NonFinitePolicy::Error][policy];
        let (mut opt, _) = warmed();
        opt.set_non_finite_policy(policy);
        let before = state_text(&opt);
        let mut p = halves(dtype, 5, n);
        let mut g = halves(dtype, 6, n);
        g[at.index(n)] = non_finite(dtype)[which];
        let p0 = p.clone();
        let mut other = vec![0.5f32; 4];
        let r = update_mixed_in_modules::<f32, _>(
            &mut opt,
            &mut [
                MixedSlice::Same(slice("same", &[4], &mut other, &[1.0; 4])),
                MixedSlice::Narrow(NarrowSlice {
                    name: "h",
                    shape: &[n],
                    dtype,
                    param: &mut p,
                    grad: &g,
                }),
            ],
            &["", ""],
        );
        match policy {
            NonFinitePolicy::Propagate => {
                prop_assert!(r.is_ok(), "{r:?}");
                prop_assert_eq!(opt.opt_state().step, 2);
                prop_assert_ne!(other, vec![0.5f32; 4]);
            }
            NonFinitePolicy::SkipStep => {
                prop_assert!(r.is_ok(), "{r:?}");
                prop_assert_eq!(&p, &p0);
                prop_assert_eq!(&other, &vec![0.5f32; 4]);
                prop_assert_eq!(opt.opt_state().skipped_steps, 1);
                opt.opt_state_mut().skipped_steps = 0;
                prop_assert_eq!(state_text(&opt), before);
            }
            NonFinitePolicy::Error => {
                let err = r.unwrap_err();
                prop_assert!(
                    matches!(&err, OptimError::NonFiniteGradient { param } if param == "h"),
                    "{err:?}"
                );
                prop_assert_eq!(&p, &p0);
                prop_assert_eq!(&other, &vec![0.5f32; 4]);
                prop_assert_eq!(state_text(&opt), before);
            }
        }
    }

    /// A `bf16` parameter of any length (0 and 1 included, lengths that are no multiple of the
    /// 256-element quantisation block or the 2048-element stage) steps bit for bit as its
    /// widened `f32` copy on the slice path, rounded to nearest even afterwards (rounded here
    /// independently), over two steps, with `f32`, stochastically rounded `bf16` and 8-bit
    /// state; the state agrees too.
    #[test]
    fn bf16_blocks_are_the_widened_step(n in 0usize..4200, seed in 1u64..1000, which in 0usize..3) {
        match which {
            0 => widened_matches(adamw, n, seed)?,
            1 => widened_matches(AdamWBf16::<f32>::default, n, seed)?,
            _ => widened_matches(AdamW8bit::<f32>::default, n, seed)?,
        }
    }
}

/// The property of `bf16_blocks_are_the_widened_step` for the optimizer `make()` builds.
fn widened_matches<O: DslOptimizer<f32>>(
    make: impl Fn() -> O,
    n: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let (mut narrow, mut wide) = (make(), make());
    let mut p = bf16s(seed, n);
    let mut w: Vec<f32> = p.iter().map(|&h| widen_bf16(h)).collect();
    for t in 0..2 {
        let g = bf16s(seed + 100 + t, n);
        let gw: Vec<f32> = g.iter().map(|&h| widen_bf16(h)).collect();
        update_mixed_in_modules::<f32, _>(
            &mut narrow,
            &mut [MixedSlice::Narrow(NarrowSlice {
                name: "x",
                shape: &[n],
                dtype: StateDtype::Bf16,
                param: &mut p,
                grad: &g,
            })],
            &[""],
        )
        .unwrap();
        wide.update_slices(&mut [slice("x", &[n], &mut w, &gw)])
            .unwrap();
        let want: Vec<u16> = w.iter().map(|&x| bf16_of(x)).collect();
        prop_assert_eq!(&p, &want, "step {}", t);
        // the f32 run goes on from the rounded values, as the 16-bit one does
        w = p.iter().map(|&h| widen_bf16(h)).collect();
    }
    prop_assert_eq!(
        format!("{:?}", narrow.opt_state()),
        format!("{:?}", wide.opt_state())
    );
    prop_assert_eq!(narrow.opt_state().step, 2);
    Ok(())
}

/// Length 0 and length 1 (a scalar `[]` and `[1]`), by hand with SGD (lr 0.5): `bf16` 1.0 with
/// gradient 1.0 becomes 0.5, exactly; the empty parameter gets a state of length 0.
#[test]
fn empty_and_single_element_16_bit_parameters_step() {
    let mut opt = sgd(0.5);
    let one = bf16_of(1.0);
    let (mut a, mut b, mut e) = (vec![one], vec![one], Vec::<u16>::new());
    let mut f = vec![0x3c00u16]; // f16 1.0
    update_mixed_in_modules::<f32, _>(
        &mut opt,
        &mut [
            MixedSlice::Narrow(NarrowSlice {
                name: "scalar",
                shape: &[],
                dtype: StateDtype::Bf16,
                param: &mut a,
                grad: &[one],
            }),
            MixedSlice::Narrow(NarrowSlice {
                name: "one",
                shape: &[1],
                dtype: StateDtype::Bf16,
                param: &mut b,
                grad: &[one],
            }),
            MixedSlice::Narrow(NarrowSlice {
                name: "empty",
                shape: &[0, 3],
                dtype: StateDtype::Bf16,
                param: &mut e,
                grad: &[],
            }),
            MixedSlice::Narrow(NarrowSlice {
                name: "half",
                shape: &[1, 1],
                dtype: StateDtype::F16,
                param: &mut f,
                grad: &[0x3c00],
            }),
        ],
        &["", "", "", ""],
    )
    .unwrap();
    assert_eq!(a, [bf16_of(0.5)]);
    assert_eq!(b, [bf16_of(0.5)]);
    assert_eq!(f, [0x3800], "f16 0.5");
    assert_eq!(opt.opt_state().param("empty").unwrap().len, 0);
    assert_eq!(opt.opt_state().step, 1);
}

/// Bad steps with 16-bit parameters: each error, and nothing moved.
#[test]
fn bad_16_bit_steps_change_nothing() {
    let check = |what: &str,
                 opt: &AdamW<f32>,
                 before: &str,
                 p: &[u16],
                 p0: &[u16],
                 err: OptimError,
                 ok: fn(&OptimError) -> bool| {
        assert!(ok(&err), "{what}: {err:?}");
        assert_eq!(p, p0, "{what}: parameter");
        assert_eq!(state_text(opt), before, "{what}: state");
    };
    let g = bf16s(9, 12);

    // modules and parameters of different lengths
    let (mut opt, mut p) = warmed();
    let (before, p0) = (state_text(&opt), p.clone());
    let err = update_mixed_in_modules::<f32, _>(
        &mut opt,
        &mut [MixedSlice::Narrow(NarrowSlice {
            name: "w",
            shape: &[3, 4],
            dtype: StateDtype::Bf16,
            param: &mut p,
            grad: &g,
        })],
        &["", "extra"],
    )
    .unwrap_err();
    check(
        "modules",
        &opt,
        &before,
        &p,
        &p0,
        err,
        |e| matches!(e, OptimError::InvalidUse(m) if m.contains("2 modules for 1 parameters")),
    );

    // one name twice, as a 16-bit and as an f32 parameter
    let mut w = vec![0.0f32; 12];
    let err = update_mixed_in_modules::<f32, _>(
        &mut opt,
        &mut [
            MixedSlice::Same(slice("w", &[3, 4], &mut w, &[1.0; 12])),
            MixedSlice::Narrow(NarrowSlice {
                name: "w",
                shape: &[3, 4],
                dtype: StateDtype::Bf16,
                param: &mut p,
                grad: &g,
            }),
        ],
        &["", ""],
    )
    .unwrap_err();
    check(
        "duplicate",
        &opt,
        &before,
        &p,
        &p0,
        err,
        |e| matches!(e, OptimError::DuplicateParam(n) if n == "w"),
    );
    assert_eq!(w, [0.0; 12]);

    // a shape whose element count overflows
    let err = narrow_step(
        &mut opt,
        "w",
        &[usize::MAX, 3],
        StateDtype::Bf16,
        &mut p,
        &g,
    )
    .unwrap_err();
    check(
        "overflow",
        &opt,
        &before,
        &p,
        &p0,
        err,
        |e| matches!(e, OptimError::ShapeMismatch { param, detail } if param == "w" && detail.contains("overflows")),
    );

    // the same elements in another shape, under the default ShapeChange::Error
    let err = narrow_step(&mut opt, "w", &[4, 3], StateDtype::Bf16, &mut p, &g).unwrap_err();
    check(
        "reshaped",
        &opt,
        &before,
        &p,
        &p0,
        err,
        |e| matches!(e, OptimError::ShapeMismatch { param, detail } if param == "w" && detail.contains("ShapeChange::Reset")),
    );

    // metrics on: 16-bit parameters are refused (they would copy them in f32)
    opt.set_metrics(true);
    let before_m = state_text(&opt);
    let err = narrow_step(&mut opt, "w", &[3, 4], StateDtype::Bf16, &mut p, &g).unwrap_err();
    check(
        "metrics",
        &opt,
        &before_m,
        &p,
        &p0,
        err,
        |e| matches!(e, OptimError::InvalidUse(m) if m.contains("metrics")),
    );
    opt.set_metrics(false);
}

/// A parameter's storage type may change between steps under one name (`bf16`, then `f16`,
/// then `f32`): its state is in `f32` and carries on; and a reshaped 16-bit parameter starts
/// afresh under `ShapeChange::Reset`.
#[test]
fn a_parameter_may_change_storage_type_and_reset_its_shape() {
    let mut opt = sgd(0.5);
    let mut b = vec![bf16_of(2.0)];
    let one_b = [bf16_of(1.0)];
    let mut s = sgd(0.5);
    narrow_step_sgd(&mut s, &mut b, &one_b, StateDtype::Bf16, &[1]);
    assert_eq!(b, [bf16_of(1.5)]);
    let mut h = vec![0x4000u16]; // f16 2.0
    narrow_step_sgd(&mut s, &mut h, &[0x3c00], StateDtype::F16, &[1]);
    assert_eq!(h, [0x3e00], "f16 1.5");
    let mut w = [2.0f32];
    s.update_slices(&mut [slice("p", &[1], &mut w, &[1.0])])
        .unwrap();
    assert_eq!(w, [1.5]);
    assert_eq!(s.opt_state().param("p").unwrap().step, 3);

    opt.set_shape_change(ShapeChange::Reset);
    let mut p = vec![bf16_of(1.0); 4];
    narrow_step_sgd(&mut opt, &mut p, &[bf16_of(1.0); 4], StateDtype::Bf16, &[4]);
    let mut p = vec![bf16_of(1.0); 6];
    narrow_step_sgd(
        &mut opt,
        &mut p,
        &[bf16_of(1.0); 6],
        StateDtype::Bf16,
        &[2, 3],
    );
    assert_eq!(p, [bf16_of(0.5); 6]);
    let ps = opt.opt_state().param("p").unwrap();
    assert_eq!((ps.len, ps.step, ps.shape.as_slice()), (6, 1, &[2, 3][..]));
}

/// One SGD step over the 16-bit parameter `"p"`.
fn narrow_step_sgd(
    opt: &mut optim_dsl::zoo::Sgd<f32>,
    param: &mut [u16],
    grad: &[u16],
    dtype: StateDtype,
    shape: &[usize],
) {
    update_mixed_in_modules::<f32, _>(
        opt,
        &mut [MixedSlice::Narrow(NarrowSlice {
            name: "p",
            shape,
            dtype,
            param,
            grad,
        })],
        &[""],
    )
    .unwrap();
}

// ------------------------------------------------------------------ dfdx master copies

type Wide = Linear<3, 1>;
type WideModel = <Wide as BuildOnDevice<Cpu, f32>>::Built;

/// SGD (lr 0.5) in `Master` mode; each step with gradient 1 subtracts 0.5.
fn master_sgd() -> optim_dsl::zoo::Sgd<f32> {
    let mut o = sgd(0.5);
    o.set_param_sync(ParamSync::Master);
    o
}

/// Master → Read → Master: a write made while in `Read` is read there; a write made after a
/// `Read` step and before switching back is read by the first `Master` step (a `Read` step
/// leaves no copy trusted).
#[test]
fn switching_param_sync_back_and_forth_reads_every_write() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.0);
    let mut opt = master_sgd();
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![0.5, 1.5], vec![-0.5]));
    opt.set_param_sync(ParamSync::Read);
    m.weight.copy_from(&[10.0, 20.0]);
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![9.5, 19.5], vec![-1.0]));
    m.weight.copy_from(&[4.0, 8.0]);
    opt.set_param_sync(ParamSync::Master);
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![3.5, 7.5], vec![-1.5]));
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(
        values(&m),
        (vec![3.0, 7.0], vec![-2.0]),
        "the copy is trusted again"
    );
}

/// `resync_params`, then a failed step (a NaN under `Error`), then a good step: the failure
/// writes nothing and the good step starts from the values written before the resync.
#[test]
fn resync_then_a_failed_step_then_a_good_one() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.0);
    let mut opt = master_sgd();
    opt.set_non_finite_policy(NonFinitePolicy::Error);
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    m.weight.copy_from(&[10.0, 20.0]);
    opt.opt_state_mut().resync_params();
    let before = format!("{:?}", opt.opt_state());
    let err = {
        let mut gr = filled(&m, f32::NAN);
        opt.update(&mut m, &mut gr)
    }
    .unwrap_err();
    assert!(
        matches!(&err, OptimError::NonFiniteGradient { param } if param == "weight"),
        "{err:?}"
    );
    assert_eq!(
        values(&m),
        (vec![10.0, 20.0], vec![-0.5]),
        "nothing written"
    );
    assert_eq!(format!("{:?}", opt.opt_state()), before, "state untouched");
    // a second failure in a row (SkipStep this time) writes nothing either
    opt.set_non_finite_policy(NonFinitePolicy::SkipStep);
    {
        let mut gr = filled(&m, f32::INFINITY);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![10.0, 20.0], vec![-0.5]));
    assert_eq!(opt.opt_state().skipped_steps, 1);
    assert_eq!(opt.opt_state().step, 1);
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![9.5, 19.5], vec![-1.0]));
}

/// A skipped step (`SkipStep`) in `Master` mode leaves the model bit for bit, and an in-place
/// write made before it is still seen after `resync_params`.
#[test]
fn a_skipped_step_keeps_the_model_and_honours_resync() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.0);
    let mut opt = master_sgd();
    opt.set_non_finite_policy(NonFinitePolicy::SkipStep);
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    {
        let mut gr = filled(&m, f32::NAN);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![0.5, 1.5], vec![-0.5]));
    m.weight.copy_from(&[6.0, 6.0]);
    opt.opt_state_mut().resync_params();
    {
        let mut gr = filled(&m, f32::NAN);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(
        values(&m),
        (vec![6.0, 6.0], vec![-0.5]),
        "skipped: the write stays"
    );
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![5.5, 5.5], vec![-1.0]));
    assert_eq!(opt.opt_state().skipped_steps, 2);
}

/// Two optimizers stepping one model in `Master` mode, with `resync_params` between them as
/// documented: each step starts from the other's result.
#[test]
fn two_master_optimizers_over_one_model_with_resync() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.0);
    let (mut a, mut b) = (master_sgd(), master_sgd());
    for k in 1..=3 {
        a.opt_state_mut().resync_params();
        {
            let mut gr = filled(&m, 1.0);
            a.update(&mut m, &mut gr)
        }
        .unwrap();
        b.opt_state_mut().resync_params();
        {
            let mut gr = filled(&m, 1.0);
            b.update(&mut m, &mut gr)
        }
        .unwrap();
        let d = k as f32;
        assert_eq!(
            values(&m),
            (vec![1.0 - d, 2.0 - d], vec![-d]),
            "after round {k}"
        );
    }
}

/// A model whose tensors change shape under the same names (another model type): refused with
/// `ShapeMismatch` under `ShapeChange::Error`, nothing written; stepped afresh under `Reset`;
/// and the first model, stepped again, is read (the kept copy has another length), not
/// overwritten with the other model's values.
#[test]
fn a_model_whose_tensor_changes_shape() {
    let dev: Cpu = Default::default();
    let mut a = one(&dev, [1.0, 2.0], 0.0);
    let mut opt = master_sgd();
    {
        let mut gr = filled(&a, 1.0);
        opt.update(&mut a, &mut gr)
    }
    .unwrap();
    let mut w: WideModel = dev.build_module::<Wide, f32>();
    w.weight.copy_from(&[3.0, 3.0, 3.0]);
    w.bias.copy_from(&[3.0]);
    let mut gw = w.alloc_grads();
    gw.get_or_alloc_mut(&w.weight).unwrap().fill(1.0);
    gw.get_or_alloc_mut(&w.bias).unwrap().fill(1.0);
    let before = format!("{:?}", opt.opt_state());
    let err = opt.update(&mut w, &mut gw).unwrap_err();
    assert!(
        matches!(&err, OptimError::ShapeMismatch { param, .. } if param == "weight"),
        "{err:?}"
    );
    assert_eq!(w.weight.as_vec(), [3.0; 3], "nothing written");
    assert_eq!(format!("{:?}", opt.opt_state()), before);
    opt.set_shape_change(ShapeChange::Reset);
    opt.update(&mut w, &mut gw).unwrap();
    assert_eq!(
        (w.weight.as_vec(), w.bias.as_vec()),
        (vec![2.5; 3], vec![2.5])
    );
    // back to the first model, written in place meanwhile (no resync): read again, since
    // the kept copy of `weight` is the other model's
    a.weight.copy_from(&[7.0, 7.0]);
    {
        let mut gr = filled(&a, 1.0);
        opt.update(&mut a, &mut gr)
    }
    .unwrap();
    assert_eq!(a.weight.as_vec(), [6.5, 6.5]);
}

/// A checkpoint saved in `Master` mode, a corrupt load refused (nothing changes: the copies
/// stay trusted and correct), a good load into a fresh optimizer, then steps: the same as the
/// run that never saved.
#[test]
fn checkpoint_round_trip_in_master_mode_then_step() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.0);
    let mut opt = adamw();
    opt.set_param_sync(ParamSync::Master);
    let g = |m: &OneModel, t: u64| {
        let mut gr = m.alloc_grads();
        let v: Vec<f32> = seeded(t, 3).map(|x| x as f32).collect();
        gr.get_or_alloc_mut(&m.weight)
            .unwrap()
            .copy_from_slice(&v[..2]);
        gr.get_or_alloc_mut(&m.bias)
            .unwrap()
            .copy_from_slice(&v[2..]);
        gr
    };
    {
        let mut gr = g(&m, 1);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    let bytes = opt.to_checkpoint_bytes(None).unwrap();
    let mut reference = (one(&dev, [1.0, 2.0], 0.0), adamw());
    {
        let mut gr = g(&reference.0, 1);
        reference.1.update(&mut reference.0, &mut gr)
    }
    .unwrap();

    // a truncated checkpoint: refused, nothing changes
    let before = format!("{:?}", opt.opt_state());
    assert!(opt
        .load_checkpoint_bytes(&bytes[..bytes.len() / 2], None)
        .is_err());
    assert_eq!(format!("{:?}", opt.opt_state()), before);
    assert_eq!(opt.opt_state().param_sync, ParamSync::Master);

    // loaded into a fresh optimizer in Master mode, which steps the same model
    let mut fresh = adamw();
    fresh.set_param_sync(ParamSync::Master);
    fresh.load_checkpoint_bytes(&bytes, None).unwrap();
    for t in 2..=3 {
        {
            let mut gr = g(&m, t);
            fresh.update(&mut m, &mut gr)
        }
        .unwrap();
        {
            let mut gr = g(&reference.0, t);
            reference.1.update(&mut reference.0, &mut gr)
        }
        .unwrap();
        let bits = |m: &OneModel| -> Vec<u32> {
            let (w, b) = values(m);
            w.iter().chain(&b).map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&m), bits(&reference.0), "step {t}");
    }
}

/// `update_where` that accepts no tensor: no step (the count stays), nothing written, and the
/// kept copies stay trusted (the next step is the same as without it).
#[test]
fn an_update_that_steps_nothing_in_master_mode() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.0);
    let mut opt = master_sgd();
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    let mut gr = filled(&m, 1.0);
    opt.update_where(&mut m, &mut gr, |_| false).unwrap();
    assert_eq!(opt.opt_state().step, 1);
    assert_eq!(values(&m), (vec![0.5, 1.5], vec![-0.5]));
    {
        let mut gr = filled(&m, 1.0);
        opt.update(&mut m, &mut gr)
    }
    .unwrap();
    assert_eq!(values(&m), (vec![0.0, 1.0], vec![-1.0]));
}

/// A NaN gradient under `Propagate` in `Master` mode: the NaN reaches the parameter, the kept
/// copy carries it on, and the run is bit for bit the default mode's (by hand: the finite
/// element moves by 0.5 a step, the other stays NaN).
#[test]
fn a_propagated_nan_in_master_mode_is_the_default_modes() {
    let dev: Cpu = Default::default();
    let run = |sync: ParamSync| {
        let mut m = one(&dev, [1.0, 2.0], 0.0);
        let mut opt = sgd(0.5);
        opt.set_param_sync(sync);
        let mut gr = filled(&m, 1.0);
        gr.get_or_alloc_mut(&m.weight)
            .unwrap()
            .copy_from_slice(&[1.0, f32::NAN]);
        opt.update(&mut m, &mut gr).unwrap();
        for _ in 0..2 {
            let mut gr = filled(&m, 1.0);
            opt.update(&mut m, &mut gr).unwrap();
        }
        let (w, b) = values(&m);
        assert_eq!((w[0], b[0]), (-0.5, -1.5), "{sync:?}");
        assert!(w[1].is_nan(), "{sync:?}");
        w.iter()
            .chain(&b)
            .map(|x| x.to_bits())
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(ParamSync::Master), run(ParamSync::Read));
}
