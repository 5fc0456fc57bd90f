//! No optimizer of the zoo panics or leaves half-written state (issue 10, item 7, whole-step
//! part). Random cases drive one zoo optimizer (`f32`) through one to three `update_slices`
//! calls:
//!
//! - shapes of rank 0 to 4 with sides of 0 and 1, declared shapes that do not match the data,
//!   shape products that overflow `usize`, gradients of the wrong length, duplicate names, a
//!   known name coming back with another shape;
//! - parameter and gradient elements that are moderate, 0, ±inf, NaN, huge (`1e30`, `f32::MAX`)
//!   or subnormal;
//! - up to three config fields set to random values, invalid ones included (NaN, ±inf, negative,
//!   0, `1e30`, betas ≥ 1, fractional counts), and random flags;
//! - random non-finite policy, shape-change policy, scalar precision and metrics switch.
//!
//! Every call must return `Ok` or an error of a kind that names what is wrong, and an `Err` must
//! leave every parameter (bit for bit) and the whole optimizer state as they were. A fixed case
//! count (1,000 cases) keeps it to a few seconds.

use optim_dsl::prelude::*;
use optim_dsl::zoo::*;
use optim_dsl::{Field, NonFinitePolicy, OptimError, ScalarPrecision, ShapeChange};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Hostile element values.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -3.0f32..3.0,
        1 => Just(0.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(1e30f32),
        1 => Just(-f32::MAX),
        1 => Just(1e-40f32),  // subnormal
        1 => Just(-1e-45f32), // smallest subnormal
    ]
}

/// A shape: rank 0 to 4, sides 0 to 6 (smaller for higher ranks).
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(0usize..7, 1),
        proptest::collection::vec(0usize..7, 2),
        proptest::collection::vec(0usize..5, 3),
        proptest::collection::vec(0usize..4, 4),
    ]
}

/// How a parameter lies about itself, if it does.
#[derive(Debug, Clone, Copy)]
enum Lie {
    None,
    /// The gradient has one element more.
    LongGrad,
    /// The declared shape is another one with the same data.
    Shape,
    /// The declared shape's product overflows `usize`.
    Overflow,
}

#[derive(Debug, Clone)]
struct Param {
    /// Takes the first parameter's name instead of its own (a duplicate, unless it is first).
    dup: bool,
    shape: Vec<usize>,
    param: Vec<f32>,
    grad: Vec<f32>,
    lie: Lie,
}

fn param() -> impl Strategy<Value = Param> {
    let lie = prop_oneof![
        12 => Just(Lie::None),
        1 => Just(Lie::LongGrad),
        1 => Just(Lie::Shape),
        1 => Just(Lie::Overflow),
    ];
    (proptest::bool::weighted(0.1), shape(), lie).prop_flat_map(|(dup, shape, lie)| {
        let n: usize = shape.iter().product();
        (
            Just(dup),
            Just(shape),
            proptest::collection::vec(value(), n),
            proptest::collection::vec(value(), n),
            Just(lie),
        )
            .prop_map(|(dup, shape, param, grad, lie)| Param {
                dup,
                shape,
                param,
                grad,
                lie,
            })
    })
}

/// Values a hyperparameter may be set to, invalid ones included.
const POOL: [f64; 15] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -1.0,
    0.0,
    1e-30,
    0.5,
    0.9,
    0.999,
    1.0,
    1.5,
    2.0,
    3.0,
    1e6,
    1e30,
];

/// Iteration counts get no huge whole number (a valid `ns_steps = 1e30` would never end).
const SMALL_POOL: [f64; 7] = [f64::NAN, -1.0, 0.0, 1.0, 1.5, 2.0, 3.0];

#[derive(Debug, Clone)]
struct Case {
    optimizer: usize,
    /// (field index, pool index, flag value)
    fields: Vec<(usize, usize, bool)>,
    policy: NonFinitePolicy,
    reset: bool,
    param_precision: bool,
    metrics: bool,
    steps: Vec<Vec<Param>>,
}

fn case() -> impl Strategy<Value = Case> {
    let policy = prop_oneof![
        Just(NonFinitePolicy::Propagate),
        Just(NonFinitePolicy::SkipStep),
        Just(NonFinitePolicy::Error),
    ];
    (
        0usize..ZOO,
        prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec((0usize..64, 0usize..POOL.len(), any::<bool>()), 1..4),
        ],
        policy,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(proptest::collection::vec(param(), 0..4), 1..4),
    )
        .prop_map(
            |(optimizer, fields, policy, reset, param_precision, metrics, steps)| Case {
                optimizer,
                fields,
                policy,
                reset,
                param_precision,
                metrics,
                steps,
            },
        )
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

/// Whether `e` is one of the errors a step may give for bad input, naming what is wrong.
fn clear(e: &OptimError) -> bool {
    match e {
        OptimError::InvalidHyperparameter { name, .. } => !name.is_empty(),
        OptimError::ShapeMismatch { param, detail } => {
            NAMES.contains(&param.as_str()) && !detail.is_empty()
        }
        OptimError::DuplicateParam(p) | OptimError::NonFiniteGradient { param: p } => {
            NAMES.contains(&p.as_str())
        }
        _ => false,
    }
}

fn run<O: DslOptimizer<f32> + Default>(case: &Case) -> Result<(), TestCaseError> {
    let mut opt = O::default();
    let fields = opt.config().fields();
    for &(fi, vi, flag) in &case.fields {
        let (name, old) = &fields[fi % fields.len()];
        let new = match old {
            Field::Flag(_) => Field::Flag(flag),
            Field::Hyper(_) if name.contains("steps") => {
                Field::Hyper(SMALL_POOL[vi % SMALL_POOL.len()].into())
            }
            Field::Hyper(_) => Field::Hyper(POOL[vi].into()),
        };
        let cfg = opt
            .config_mut()
            .expect("generated optimizers lend their config");
        prop_assert!(cfg.set_field(name, new).is_ok());
    }
    opt.set_non_finite_policy(case.policy);
    if case.reset {
        opt.set_shape_change(ShapeChange::Reset);
    }
    if case.param_precision {
        opt.set_scalar_precision(ScalarPrecision::Param);
    }
    opt.set_metrics(case.metrics);
    let overflow = [usize::MAX / 2, 3];
    for step in &case.steps {
        let mut data: Vec<(Vec<f32>, Vec<f32>)> = step
            .iter()
            .map(|p| {
                let mut g = p.grad.clone();
                if let Lie::LongGrad = p.lie {
                    g.push(1.0);
                }
                (p.param.clone(), g)
            })
            .collect();
        let shapes: Vec<Vec<usize>> = step
            .iter()
            .map(|p| match p.lie {
                Lie::Shape => {
                    let mut s = p.shape.clone();
                    s.push(2);
                    s
                }
                Lie::Overflow => overflow.to_vec(),
                _ => p.shape.clone(),
            })
            .collect();
        let state_before = format!("{:?}", opt.opt_state());
        let params_before: Vec<Vec<u32>> = data.iter().map(|(p, _)| bits(p)).collect();
        let mut slices: Vec<ParamSlice<'_, f32>> = data
            .iter_mut()
            .zip(step)
            .zip(&shapes)
            .enumerate()
            .map(|(i, (((p, g), s), shape))| ParamSlice {
                name: NAMES[if s.dup { 0 } else { i }],
                shape,
                param: p,
                grad: g,
            })
            .collect();
        let result = opt.update_slices(&mut slices);
        drop(slices);
        if let Err(e) = result {
            prop_assert!(clear(&e), "unexpected error: {e:?}");
            prop_assert!(!e.to_string().is_empty());
            let params_after: Vec<Vec<u32>> = data.iter().map(|(p, _)| bits(p)).collect();
            prop_assert_eq!(params_after, params_before, "parameters written on {:?}", e);
            prop_assert_eq!(
                format!("{:?}", opt.opt_state()),
                state_before,
                "state written on {:?}",
                e
            );
        }
    }
    Ok(())
}

macro_rules! zoo {
    ($($t:ident),* $(,)?) => {
        const ZOO: usize = [$(stringify!($t)),*].len();
        fn run_zoo(case: &Case) -> Result<(), TestCaseError> {
            let runs: [fn(&Case) -> Result<(), TestCaseError>; ZOO] = [$(run::<$t<f32>>),*];
            runs[case.optimizer % ZOO](case)
        }
    };
}

optim_tests::for_each_zoo!(zoo);

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn no_zoo_optimizer_panics_or_half_writes(case in case()) {
        run_zoo(&case)?;
    }
}
