//! 16-bit parameters run through the 16-bit entry points of their rule's loops
//! (`optim_runtime::narrow`): each loop loads the `bf16`/`f16` parameter and gradient, widening
//! them exactly to `E`, and rounds the parameter to nearest, ties to even, as it stores it.
//! Checked here bit for bit against the step on widened copies (`update_slices` in `E`), with
//! the rounding and the widening written independently of the runtime, for lengths that are
//! no multiple of the 256-element quantisation block (0, 1, 255, 257, 2049, 4097) and one of
//! several parallel chunks (70 001), `bf16` and `f16` parameters, `E` = `f32` and `f64`, and
//! rules with per-tensor reductions over two loops (Lamb's trust ratio of the parameter; a
//! norm of computed values over an `f16` state, whose summation order shows in an `f64`
//! state's bits).

use optim_dsl::prelude::*;
use optim_dsl::zoo::Lamb;
use optim_dsl::{
    update_mixed_in_modules, Float, MixedSlice, NarrowSlice, OptState, OptimError, OptimizerConfig,
    ParamInfo, ParamState, StateDtype,
};
use optim_tests::values::seeded;

optimizer! {
    /// Momentum in `f16`, normalised by its per-tensor norm, into an `E` state: the norm of
    /// computed values, summed in the loop's order, reaches the state's bits.
    pub NormScaled16<lr = 1e-2, beta1 = 0.9> {
        let m: f16 = momentum(grad, beta1);
        let s = ema(m / (norm(m) + 1e-8), 0.5);
        param -= lr * s;
    }
}

const LENGTHS: [usize; 7] = [0, 1, 255, 257, 2049, 4097, 70_001];

/// The exact value of 16-bit `bits` of `dtype`.
fn widen(dtype: StateDtype, h: u16) -> f64 {
    match dtype {
        StateDtype::Bf16 => f64::from(f32::from_bits(u32::from(h) << 16)),
        StateDtype::F16 => {
            let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
            let (e, m) = (i32::from((h >> 10) & 0x1f), f64::from(h & 0x3ff));
            assert_ne!(e, 31, "a finite f16 expected");
            sign * if e == 0 {
                m * 2f64.powi(-24)
            } else {
                (1024.0 + m) * 2f64.powi(e - 25)
            }
        }
    }
}

/// Finite `x` rounded to the nearest value of `dtype`, ties to even (no overflow: the values
/// here stay far below either type's largest finite value).
fn round(dtype: StateDtype, x: f64) -> f64 {
    if x == 0.0 {
        return x;
    }
    let (mant, min_exp) = match dtype {
        StateDtype::Bf16 => (7, -126),
        StateDtype::F16 => (10, -14),
    };
    // the binary exponent of a normal f64, exactly
    let e = ((((x.abs().to_bits() >> 52) & 0x7ff) as i32) - 1023).max(min_exp);
    let q = 2f64.powi(e - mant);
    (x / q).round_ties_even() * q
}

/// The bits of `x`, a value of `dtype` (as [`round`] returns).
fn encode(dtype: StateDtype, x: f64) -> u16 {
    match dtype {
        StateDtype::Bf16 => ((x as f32).to_bits() >> 16) as u16,
        StateDtype::F16 => {
            let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
            let a = x.abs();
            if a < 2f64.powi(-14) {
                return sign | (a / 2f64.powi(-24)) as u16;
            }
            let e = (((a.to_bits() >> 52) & 0x7ff) as i32) - 1023;
            let m = (a / 2f64.powi(e - 10)) as u16 - 1024;
            sign | (((e + 15) as u16) << 10) | m
        }
    }
}

/// `n` values of `dtype` in about [-1, 1), as bits.
fn halves(dtype: StateDtype, seed: u64, n: usize) -> Vec<u16> {
    seeded(seed, n)
        .map(|x| encode(dtype, round(dtype, x)))
        .collect()
}

/// Two steps of a parameter of `n` elements stored as `dtype`, through
/// `update_mixed_in_modules`, against the same steps of its widened copy in `E`: after each
/// step the 16-bit parameter is the widened one rounded once (bit for bit); the state agrees.
fn matches_widened<E: Float, O: DslOptimizer<E>>(
    make: impl Fn() -> O,
    dtype: StateDtype,
    n: usize,
) {
    let (mut narrow, mut wide) = (make(), make());
    let mut p = halves(dtype, 7 + n as u64, n);
    let of = |h: &[u16]| -> Vec<E> { h.iter().map(|&b| E::of_f64(widen(dtype, b))).collect() };
    let mut w = of(&p);
    let what = format!(
        "{} {} over {}, n = {n}",
        O::Config::NAME,
        dtype.name(),
        E::NAME
    );
    for t in 0..2 {
        let g = halves(dtype, 1000 + 10 * n as u64 + t, n);
        let gw = of(&g);
        let mut params = [MixedSlice::Narrow(NarrowSlice {
            name: "x",
            shape: &[n],
            dtype,
            param: &mut p,
            grad: &g,
        })];
        update_mixed_in_modules::<E, _>(&mut narrow, &mut params, &[""]).expect(&what);
        wide.update_slices(&mut [ParamSlice {
            name: "x",
            shape: &[n],
            param: &mut w,
            grad: &gw,
        }])
        .expect(&what);
        let got: Vec<u64> = p.iter().map(|&h| widen(dtype, h).to_bits()).collect();
        let want: Vec<u64> = w
            .iter()
            .map(|x| round(dtype, x.as_f64()).to_bits())
            .collect();
        assert!(
            got == want,
            "{what}, step {t}: not the widened step rounded once"
        );
        // the wide run goes on from the rounded values, as the 16-bit one does
        w = of(&p);
    }
    assert_eq!(
        format!("{:?}", narrow.opt_state()),
        format!("{:?}", wide.opt_state()),
        "{what}: state"
    );
}

#[test]
fn the_loops_on_16_bit_parameters_are_the_widened_step() {
    for n in LENGTHS {
        for dtype in [StateDtype::Bf16, StateDtype::F16] {
            matches_widened(Lamb::<f32>::default, dtype, n);
            matches_widened(Lamb::<f64>::default, dtype, n);
            matches_widened(NormScaled16::<f32>::default, dtype, n);
            matches_widened(NormScaled16::<f64>::default, dtype, n);
        }
    }
}

/// The independent converters agree with hand-computed values, so that the comparison above
/// cannot pass by sharing a mistake with the runtime.
#[test]
fn the_reference_rounding_is_right() {
    // bf16 has 8 significant bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (to even: 1)
    assert_eq!(round(StateDtype::Bf16, 1.0 + 2f64.powi(-8)), 1.0);
    assert_eq!(
        round(StateDtype::Bf16, 1.0 + 3.0 * 2f64.powi(-8)),
        1.0 + 2.0 * 2f64.powi(-7)
    );
    // f16: 11 significant bits; 2^-24 is the smallest subnormal, a tie at half of it
    assert_eq!(round(StateDtype::F16, 1.0 + 2f64.powi(-11)), 1.0);
    assert_eq!(round(StateDtype::F16, 3.0 * 2f64.powi(-25)), 2f64.powi(-23));
    assert_eq!(encode(StateDtype::F16, 1.0), 0x3c00);
    assert_eq!(encode(StateDtype::F16, -0.5), 0xb800);
    assert_eq!(encode(StateDtype::F16, 2f64.powi(-24)), 0x0001);
    assert_eq!(encode(StateDtype::Bf16, -2.0), 0xc000);
    assert_eq!(widen(StateDtype::F16, 0x3555), 1365.0 / 4096.0);
    assert_eq!(widen(StateDtype::Bf16, 0x3f81), 1.0 + 2f64.powi(-7));
}

/// A hand-written optimizer over `O`'s rules (its own `Job`s) that says its rules read the
/// parameter only inside their loops, and forwards `narrow_kernels` when `KERNELS`.
struct Forward<O: DslOptimizer<f32>, const KERNELS: bool>(O);

impl<O: DslOptimizer<f32>, const KERNELS: bool> DslOptimizer<f32> for Forward<O, KERNELS> {
    type Config = O::Config;
    fn config(&self) -> &O::Config {
        self.0.config()
    }
    fn opt_state(&self) -> &OptState<f32> {
        self.0.opt_state()
    }
    fn opt_state_mut(&mut self) -> &mut OptState<f32> {
        self.0.opt_state_mut()
    }
    fn route(info: &ParamInfo<'_>) -> usize {
        O::route(info)
    }
    fn rule_count() -> usize {
        O::rule_count()
    }
    type Job<'a>
        = O::Job<'a>
    where
        Self: 'a;
    fn prepare<'a>(
        values: &'a <O::Config as OptimizerConfig>::Values,
        rule: usize,
        ps: &'a mut ParamState<f32>,
        info: ParamInfo<'a>,
        param: &'a mut [f32],
        grad: &'a [f32],
    ) -> O::Job<'a> {
        O::prepare(values, rule, ps, info, param, grad)
    }
    fn param_in_loops_only(rule: usize, info: &ParamInfo<'_>) -> bool {
        O::param_in_loops_only(rule, info)
    }
    fn narrow_kernels(
        values: &<O::Config as OptimizerConfig>::Values,
        rule: usize,
        info: &ParamInfo<'_>,
    ) -> optim_dsl::__private::NarrowPick<f32> {
        if KERNELS {
            O::narrow_kernels(values, rule, info)
        } else {
            optim_dsl::__private::no_narrow::<f32>
        }
    }
}

/// One `bf16` step of `opt` over `x` (2049 elements).
fn bf16_step<O: DslOptimizer<f32>>(opt: &mut O, p: &mut [u16]) -> Result<(), OptimError> {
    let g = halves(StateDtype::Bf16, 5, p.len());
    let mut params = [MixedSlice::Narrow(NarrowSlice {
        name: "x",
        shape: &[2049],
        dtype: StateDtype::Bf16,
        param: p,
        grad: &g,
    })];
    update_mixed_in_modules::<f32, _>(opt, &mut params, &[""])
}

/// A hand-written optimizer whose rules claim to read the parameter only in their loops but
/// that names no 16-bit entry points is refused before anything is written (its loops could
/// not run on the bits); forwarding `narrow_kernels` makes it step as the generated one.
#[test]
fn a_rule_without_16_bit_entry_points_is_refused_untouched() {
    let start = halves(StateDtype::Bf16, 3, 2049);
    let mut none = Forward::<Lamb<f32>, false>(Lamb::default());
    let mut p = start.clone();
    match bf16_step(&mut none, &mut p) {
        Err(OptimError::InvalidUse(m)) => {
            assert!(
                m.contains("`x`") && m.contains("no 16-bit entry points"),
                "{m}"
            )
        }
        other => panic!("expected InvalidUse, got {other:?}"),
    }
    assert_eq!(p, start);
    assert_eq!(none.opt_state().step, 0);
    assert!(none.opt_state().params.is_empty());

    let (mut fwd, mut own) = (
        Forward::<Lamb<f32>, true>(Lamb::default()),
        Lamb::<f32>::default(),
    );
    let (mut a, mut b) = (start.clone(), start.clone());
    bf16_step(&mut fwd, &mut a).unwrap();
    bf16_step(&mut own, &mut b).unwrap();
    assert_ne!(a, start);
    assert_eq!(a, b);
}
