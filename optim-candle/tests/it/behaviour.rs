//! What the candle path promises beyond the reference trajectories: updates in the `Var`'s own
//! storage, the same numbers as the slice path for every supported dtype, the strided-gradient
//! fallback, `Var`s without a gradient left alone, routing by `VarMap` name and module path, the
//! learning-rate contract of `candle_nn::Optimizer`, and errors that change nothing.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use half::{bf16, f16};
use optim_candle::{CandleConfig, CandleOptimizer, CandleUpdate, VarNames};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig, Muon};
use optim_dsl::NonFinitePolicy;

const SHAPE: [usize; 2] = [3, 4];

/// Deterministic, varied values (no two equal, mixed signs).
fn data(seed: u64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let x = ((i as u64 + 1) * 2654435761 + seed * 40503) % 1000;
            (x as f64 - 500.0) / 250.0
        })
        .collect()
}

fn adamw<E: optim_dsl::Float>() -> AdamW<E> {
    AdamW::<E>::new(AdamWConfig {
        lr: 0.05.into(),
        weight_decay: 0.1.into(),
        ..Default::default()
    })
    .unwrap()
}

/// Three AdamW steps of the slice path over `f64` copies of `p0` (`E` arithmetic), the
/// reference for the candle path.
fn slice_reference<E: optim_dsl::Float>(p0: &[E], grads: &[Vec<E>]) -> Vec<E> {
    let mut opt = adamw::<E>();
    let mut p = p0.to_vec();
    for g in grads {
        opt.update_slices(&mut [ParamSlice {
            name: "w",
            shape: &SHAPE,
            param: &mut p,
            grad: g,
        }])
        .unwrap();
    }
    p
}

fn store(var: &Var, grad: Tensor) -> GradStore {
    let mut g = GradStore::default();
    g.insert(var, grad);
    g
}

/// One `opt.step` on `var` per gradient of `grads` (of shape [`SHAPE`]).
fn step_each<O: DslOptimizer<f32>, T: candle_core::WithDType>(
    opt: &mut CandleOptimizer<O>,
    var: &Var,
    grads: &[Vec<T>],
) {
    for g in grads {
        let g = Tensor::from_slice(g, &SHAPE, &Device::Cpu).unwrap();
        opt.step(&store(var, g)).unwrap();
    }
}

#[test]
fn f32_vars_are_updated_in_their_own_storage_bitwise_as_the_slice_path() {
    let p0: Vec<f32> = data(1, 12).iter().map(|&x| x as f32).collect();
    let grads: Vec<Vec<f32>> = (2..5)
        .map(|s| data(s, 12).iter().map(|&x| x as f32).collect())
        .collect();
    let want = slice_reference(&p0, &grads);

    let var = Var::from_slice(&p0, &SHAPE, &Device::Cpu).unwrap();
    // a second handle on the same storage: it sees the update only if the step wrote there
    let alias: Tensor = var.as_tensor().clone();
    let mut opt =
        CandleOptimizer::new(vec![var.clone()], CandleConfig::new(adamw::<f32>())).unwrap();
    step_each(&mut opt, &var, &grads);
    let got = alias.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got, want);
    assert_ne!(got, p0);
}

#[test]
fn f64_vars_under_an_f64_optimizer_match_the_f64_slice_path_bitwise() {
    let p0 = data(7, 12);
    let grads: Vec<Vec<f64>> = (8..11).map(|s| data(s, 12)).collect();
    let want = slice_reference(&p0, &grads);
    let var = Var::from_slice(&p0, &SHAPE, &Device::Cpu).unwrap();
    let mut opt = adamw::<f64>();
    for g in &grads {
        let g = Tensor::from_slice(g, &SHAPE, &Device::Cpu).unwrap();
        opt.update_vars([("w", &var)], &store(&var, g)).unwrap();
    }
    let got = var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(got, want);
}

/// A parameter of a narrower type is computed in the optimizer's type: the update is the slice
/// path's on the widened values, rounded to nearest once per step.
fn narrow_case<T: candle_core::WithDType + std::fmt::Debug>(to: fn(f32) -> T, from: fn(T) -> f32) {
    let p0: Vec<T> = data(3, 12).iter().map(|&x| to(x as f32)).collect();
    let grads: Vec<Vec<T>> = (4..7)
        .map(|s| data(s, 12).iter().map(|&x| to(x as f32)).collect())
        .collect();
    // reference: one slice-path step at a time on f32, rounded back after each
    let mut reference = adamw::<f32>();
    let mut want: Vec<T> = p0.clone();
    for g in &grads {
        let mut p: Vec<f32> = want.iter().map(|&x| from(x)).collect();
        let g: Vec<f32> = g.iter().map(|&x| from(x)).collect();
        reference
            .update_slices(&mut [ParamSlice {
                name: "w",
                shape: &SHAPE,
                param: &mut p,
                grad: &g,
            }])
            .unwrap();
        want = p.iter().map(|&x| to(x)).collect();
    }

    let var = Var::from_slice(&p0, &SHAPE, &Device::Cpu).unwrap();
    let mut opt = CandleOptimizer::new(
        vec![var.clone()],
        CandleConfig::new(adamw::<f32>()).with_names(["w"]),
    )
    .unwrap();
    step_each(&mut opt, &var, &grads);
    let got = var.flatten_all().unwrap().to_vec1::<T>().unwrap();
    assert_eq!(got, want);
    assert_ne!(got, p0);
    // the moments are f32, in the optimizer
    assert_eq!(
        opt.inner().state_buffer("w", "m"),
        reference.state_buffer("w", "m")
    );
}

#[test]
fn bf16_vars_compute_in_f32() {
    narrow_case::<bf16>(bf16::from_f32, bf16::to_f32);
}

#[test]
fn f16_vars_compute_in_f32() {
    narrow_case::<f16>(f16::from_f32, f16::to_f32);
}

#[test]
fn f32_vars_under_an_f64_optimizer_compute_in_f64() {
    let p0: Vec<f32> = data(5, 12).iter().map(|&x| x as f32).collect();
    let g32: Vec<f32> = data(6, 12).iter().map(|&x| x as f32).collect();
    let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let want: Vec<f32> = slice_reference(&wide(&p0), &[wide(&g32)])
        .iter()
        .map(|&x| x as f32)
        .collect();
    let var = Var::from_slice(&p0, &SHAPE, &Device::Cpu).unwrap();
    let mut opt = adamw::<f64>();
    let g = Tensor::from_slice(&g32, &SHAPE, &Device::Cpu).unwrap();
    opt.update_vars([("w", &var)], &store(&var, g)).unwrap();
    assert_eq!(var.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
}

/// A transposed gradient (strided layout) is made contiguous: the same step as with the
/// contiguous gradient of the same values.
#[test]
fn a_strided_gradient_takes_the_contiguous_fallback() {
    let p0: Vec<f32> = data(11, 12).iter().map(|&x| x as f32).collect();
    let g: Vec<f32> = data(12, 12).iter().map(|&x| x as f32).collect();
    let want = slice_reference(&p0, std::slice::from_ref(&g));
    // `g` as a [4, 3] tensor holding the transpose, transposed back: a [3, 4] strided view
    let gt: Vec<f32> = (0..12).map(|k| g[(k % 3) * 4 + k / 3]).collect();
    let strided = Tensor::from_slice(&gt, (4, 3), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    assert!(!strided.is_contiguous());
    assert_eq!(strided.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g);
    let var = Var::from_slice(&p0, &SHAPE, &Device::Cpu).unwrap();
    let mut opt = adamw::<f32>();
    opt.update_vars([("w", &var)], &store(&var, strided))
        .unwrap();
    assert_eq!(var.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
}

#[test]
fn a_var_without_a_gradient_is_left_alone() {
    let a = Var::from_slice(&[1.0f32, 2.0], 2, &Device::Cpu).unwrap();
    let b = Var::from_slice(&[3.0f32, 4.0], 2, &Device::Cpu).unwrap();
    let mut opt = CandleOptimizer::new(
        vec![a.clone(), b.clone()],
        CandleConfig::new(adamw::<f32>()).with_names(["a", "b"]),
    )
    .unwrap();
    let g = Tensor::from_slice(&[0.5f32, -0.5], 2, &Device::Cpu).unwrap();
    opt.step(&store(&a, g)).unwrap();
    assert_eq!(b.to_vec1::<f32>().unwrap(), [3.0, 4.0]);
    assert!(opt.inner().opt_state().param("b").is_none());
    // AdamW's first step moves each element by lr against the gradient's sign (after decay)
    let got = a.to_vec1::<f32>().unwrap();
    let want = [
        1.0 * (1.0 - 0.05 * 0.1) - 0.05,
        2.0 * (1.0 - 0.05 * 0.1) + 0.05,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

/// Routing sees the `VarMap` keys: Muon orthogonalizes hidden matrices and sends matrices
/// named `…embed…` to its AdamW rule.
#[test]
fn routing_rules_see_the_varmap_names() {
    let map = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let hidden = vb.get((4, 4), "layer.weight").unwrap();
    let embed = vb.get((4, 4), "embed.weight").unwrap();
    let mut opt = CandleOptimizer::new(
        map.all_vars(),
        CandleConfig::new(Muon::<f32>::default()).with_varmap(&map),
    )
    .unwrap();
    let mut grads = GradStore::default();
    grads.insert(
        &hidden,
        Tensor::ones((4, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    grads.insert(
        &embed,
        Tensor::ones((4, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    opt.step(&grads).unwrap();
    let state = opt.inner().opt_state();
    assert_eq!(state.param("layer.weight").unwrap().rule, 0);
    assert_eq!(state.param("embed.weight").unwrap().rule, 1);
}

optimizer! {
    /// Routes by module path: sign steps for attention queries, plain SGD for the rest of the
    /// blocks, nothing elsewhere.
    pub ByModulePath<lr = 0.5> {
        matrix if module.ends_with("attn.q") => { param -= lr * sign(grad); }
        _ if module.starts_with("blocks.") => { param -= lr * grad; }
        _ if module == "" => { param -= 2.0 * lr * grad; }
        _ => { param -= 0.0 * grad; }
    }
}

/// A guard on `module` sees the `Var`'s name up to its last `.` (the `VarBuilder::pp` path of
/// the module that made it), for `VarMap` names and named lists alike.
#[test]
fn routing_rules_see_the_module_path() {
    assert_eq!(
        optim_candle::module_of("blocks.0.attn.q.weight"),
        "blocks.0.attn.q"
    );
    assert_eq!(optim_candle::module_of("fc.bias"), "fc");
    assert_eq!(optim_candle::module_of("var0"), "");

    let map = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let init = candle_nn::Init::Const(1.0);
    let q = vb
        .pp("blocks.0.attn.q")
        .get_with_hints((2, 2), "weight", init)
        .unwrap();
    let k = vb
        .pp("blocks.0.attn.k")
        .get_with_hints((2, 2), "weight", init)
        .unwrap();
    let kb = vb
        .pp("blocks.0.attn.k")
        .get_with_hints(2, "bias", init)
        .unwrap();
    let head = vb
        .pp("head")
        .get_with_hints((2, 2), "weight", init)
        .unwrap();
    let lone = vb.get_with_hints(2, "scale", init).unwrap();
    let mut opt = CandleOptimizer::new(
        map.all_vars(),
        CandleConfig::new(ByModulePath::<f32>::default()).with_varmap(&map),
    )
    .unwrap();
    let mut grads = GradStore::default();
    for t in [&q, &k, &kb, &head, &lone] {
        let g = Tensor::full(0.25f32, t.dims(), &Device::Cpu).unwrap();
        grads.insert(t, g);
    }
    opt.step(&grads).unwrap();

    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(values(&q), vec![0.5; 4], "1 - 0.5·sign(0.25)");
    assert_eq!(values(&k), vec![0.875; 4], "1 - 0.5·0.25");
    assert_eq!(
        values(&kb),
        vec![0.875; 2],
        "1 - 0.5·0.25 (vector in blocks.)"
    );
    assert_eq!(values(&head), vec![1.0; 4], "the catch-all: no step");
    assert_eq!(values(&lone), vec![0.75; 2], "no module: 1 - 1.0·0.25");
    let state = opt.inner().opt_state();
    let rule = |n: &str| state.param(n).unwrap().rule;
    assert_eq!(rule("blocks.0.attn.q.weight"), 0);
    assert_eq!(rule("blocks.0.attn.k.weight"), 1);
    assert_eq!(rule("blocks.0.attn.k.bias"), 1);
    assert_eq!(rule("scale"), 2);
    assert_eq!(rule("head.weight"), 3);

    // named lists are split the same way; positional names (`var0`) have no module
    let w = Var::ones((2, 2), DType::F32, &Device::Cpu).unwrap();
    let mut grads = GradStore::default();
    grads.insert(&w, Tensor::full(0.25f32, (2, 2), &Device::Cpu).unwrap());
    let mut named = CandleOptimizer::new(
        vec![w.clone()],
        CandleConfig::new(ByModulePath::<f32>::default()).with_names(["blocks.3.attn.q.weight"]),
    )
    .unwrap();
    named.step(&grads).unwrap();
    assert_eq!(
        named
            .inner()
            .opt_state()
            .param("blocks.3.attn.q.weight")
            .unwrap()
            .rule,
        0
    );
    let mut positional = CandleOptimizer::new(
        vec![w.clone()],
        CandleConfig::new(ByModulePath::<f32>::default()),
    )
    .unwrap();
    positional.step(&grads).unwrap();
    assert_eq!(
        positional.inner().opt_state().param("var0").unwrap().rule,
        2
    );
}

#[test]
fn learning_rate_and_set_learning_rate() {
    let var = Var::from_slice(&[1.0f32], 1, &Device::Cpu).unwrap();
    let sched = Schedule::linear(0.0, 1.0, 10).unwrap();
    let opt = AdamW::<f32>::new(AdamWConfig {
        lr: sched.into(),
        ..Default::default()
    })
    .unwrap();
    let mut opt = CandleOptimizer::new(vec![var.clone()], CandleConfig::new(opt)).unwrap();
    assert_eq!(opt.learning_rate(), 0.0, "the schedule at step 0");
    let g = || {
        store(
            &var,
            Tensor::from_slice(&[1.0f32], 1, &Device::Cpu).unwrap(),
        )
    };
    opt.step(&g()).unwrap();
    assert!(
        (opt.learning_rate() - 0.1).abs() < 1e-12,
        "{}",
        opt.learning_rate()
    );
    // a constant replaces the schedule
    opt.set_learning_rate(0.25);
    opt.step(&g()).unwrap();
    assert_eq!(opt.learning_rate(), 0.25);
    // an invalid value makes the next step fail, changing nothing, once
    opt.set_learning_rate(-1.0);
    let before = var.to_vec1::<f32>().unwrap();
    assert!(opt.step(&g()).is_err());
    assert_eq!(var.to_vec1::<f32>().unwrap(), before);
    assert_eq!(opt.inner().opt_state().step, 2);
    opt.set_learning_rate(0.25);
    opt.step(&g()).unwrap();
    assert_eq!(opt.inner().opt_state().step, 3);
}

#[test]
fn errors_change_nothing() {
    let a = Var::from_slice(&[1.0f32, 2.0], 2, &Device::Cpu).unwrap();
    let b = Var::from_slice(&[3.0f32, 4.0], 2, &Device::Cpu).unwrap();
    let mut opt = adamw::<f32>();
    opt.set_non_finite_policy(NonFinitePolicy::Error);
    let ga = Tensor::from_slice(&[0.5f32, 0.5], 2, &Device::Cpu).unwrap();
    let gb = Tensor::from_slice(&[0.5f32, f32::NAN], 2, &Device::Cpu).unwrap();
    let mut grads = GradStore::default();
    grads.insert(&a, ga.clone());
    grads.insert(&b, gb);
    let e = opt.update_vars([("a", &a), ("b", &b)], &grads).unwrap_err();
    assert!(matches!(e, OptimError::NonFiniteGradient { .. }), "{e}");
    assert_eq!(a.to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(b.to_vec1::<f32>().unwrap(), [3.0, 4.0]);
    assert_eq!(opt.opt_state().step, 0);

    // a gradient of another shape
    let mut grads = GradStore::default();
    grads.insert(&a, Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    let e = opt.update_vars([("a", &a)], &grads).unwrap_err();
    assert!(matches!(e, OptimError::ShapeMismatch { .. }), "{e}");

    // an f64 Var under an f32 optimizer
    let c = Var::from_slice(&[1.0f64, 2.0], 2, &Device::Cpu).unwrap();
    let mut grads = GradStore::default();
    grads.insert(&a, ga.clone());
    grads.insert(&c, Tensor::zeros(2, DType::F64, &Device::Cpu).unwrap());
    let e = opt.update_vars([("a", &a), ("c", &c)], &grads).unwrap_err();
    assert!(e.to_string().contains("f64"), "{e}");
    assert_eq!(a.to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(opt.opt_state().step, 0);

    // one Var twice, under two names
    let mut grads = GradStore::default();
    grads.insert(&a, ga);
    let e = opt
        .update_vars([("a", &a), ("a2", &a)], &grads)
        .unwrap_err();
    assert!(e.to_string().contains("share one storage"), "{e}");
    assert_eq!(a.to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(opt.opt_state().step, 0);
}

#[test]
fn names_are_checked_when_the_optimizer_is_built() {
    let a = Var::from_slice(&[1.0f32], 1, &Device::Cpu).unwrap();
    let b = Var::from_slice(&[1.0f32], 1, &Device::Cpu).unwrap();
    let cfg = || CandleConfig::new(adamw::<f32>());
    // a Var missing from the VarMap
    let map = VarMap::new();
    map.data().lock().unwrap().insert("a".into(), a.clone());
    assert!(CandleOptimizer::new(vec![a.clone(), b.clone()], cfg().with_varmap(&map)).is_err());
    // a name list of the wrong length, a name twice, a Var twice
    assert!(CandleOptimizer::new(vec![a.clone(), b.clone()], cfg().with_names(["a"])).is_err());
    assert!(
        CandleOptimizer::new(vec![a.clone(), b.clone()], cfg().with_names(["x", "x"])).is_err()
    );
    assert!(
        CandleOptimizer::new(vec![a.clone(), a.clone()], cfg().with_names(["x", "y"])).is_err()
    );
    // positional names
    let opt =
        CandleOptimizer::with_names(adamw::<f32>(), vec![a, b], &VarNames::Positional).unwrap();
    let names: Vec<&str> = opt.vars().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["var0", "var1"]);
}

/// The DSL's AdamW and candle-nn's `AdamW` (both torch's AdamW rule) agree on the same `Var`
/// values and gradients, to f32 rounding.
#[test]
fn agrees_with_candle_nn_adamw() {
    let p0: Vec<f32> = data(21, 12).iter().map(|&x| x as f32).collect();
    let theirs = Var::from_slice(&p0, &SHAPE, &Device::Cpu).unwrap();
    let ours = Var::from_slice(&p0, &SHAPE, &Device::Cpu).unwrap();
    let params = candle_nn::ParamsAdamW {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut reference = candle_nn::AdamW::new(vec![theirs.clone()], params).unwrap();
    let dsl = AdamW::<f32>::new(AdamWConfig {
        lr: 0.01.into(),
        beta1: 0.9.into(),
        beta2: 0.999.into(),
        eps: 1e-8.into(),
        weight_decay: 0.1.into(),
        ..Default::default()
    })
    .unwrap();
    let mut opt = CandleOptimizer::new(vec![ours.clone()], CandleConfig::new(dsl)).unwrap();
    for s in 0..10 {
        let g: Vec<f32> = data(30 + s, 12).iter().map(|&x| x as f32).collect();
        let g = Tensor::from_slice(&g, &SHAPE, &Device::Cpu).unwrap();
        reference.step(&store(&theirs, g.clone())).unwrap();
        opt.step(&store(&ours, g)).unwrap();
    }
    let a = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(a, p0);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 + 1e-5 * x.abs(), "{a:?}\n{b:?}");
    }
}

/// One nesting level per `Var`: 20 000 `Var`s need more stack than a test thread's 2 MiB,
/// which the step grows on the heap. Plain SGD moves each by `-lr * g`.
#[test]
fn tens_of_thousands_of_vars_in_one_step() {
    use optim_dsl::zoo::{Sgd, SgdConfig};
    let n = 20_000;
    let vars: Vec<Var> = (0..n)
        .map(|i| Var::from_slice(&[i as f32], 1, &Device::Cpu).unwrap())
        .collect();
    let mut grads = GradStore::default();
    for v in &vars {
        grads.insert(v, Tensor::from_slice(&[2.0f32], 1, &Device::Cpu).unwrap());
    }
    let sgd = Sgd::<f32>::new(SgdConfig {
        lr: 0.5.into(),
        ..Default::default()
    })
    .unwrap();
    let mut opt = CandleOptimizer::new(vars.clone(), CandleConfig::new(sgd)).unwrap();
    opt.step(&grads).unwrap();
    for (i, v) in vars.iter().enumerate() {
        assert_eq!(v.to_vec1::<f32>().unwrap(), [i as f32 - 1.0]);
    }
}
