//! Checkpoints interoperate between the candle path, the slice path and the dfdx path: same
//! names, same file. A run is split at step `K` of the `adamw` reference case; the first half
//! runs on one path, the checkpoint written there is loaded into a fresh optimizer on another
//! path, and the second half (teacher-forced with the case's gradients) must still match the
//! torch reference at every step.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use dfdx::tensor::Cpu;
use optim_candle::{CandleConfig, CandleOptimizer};
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;
use optim_tests::fixtures::{self, Case};
use optim_tests::model::CaseModel;
use optim_tests::zoo::torch_adamw_config;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the first half stops.
const K: usize = 8;

/// torch AdamW with the hyperparameters of case `c` and its constant learning rate.
fn adamw(c: &Case) -> AdamW<f32> {
    AdamW::<f32>::new(torch_adamw_config(c, c.hyper_f64("lr").into())).unwrap()
}

/// The case's parameters with values `values[name]` as `Var`s of a `VarMap`, and [`adamw`]
/// over them as a candle optimizer that knows their names.
fn candle_adamw(
    case: &Case,
    values: &BTreeMap<String, Vec<f32>>,
) -> (VarMap, CandleOptimizer<AdamW<f32>>) {
    let map = varmap_with(case, values);
    let opt = CandleOptimizer::new(
        map.all_vars(),
        CandleConfig::new(adamw(case)).with_varmap(&map),
    )
    .unwrap();
    (map, opt)
}

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("optim-candle-{name}.safetensors"))
}

/// The case's parameters with values `values[name]` as `Var`s of a `VarMap`.
fn varmap_with(case: &Case, values: &BTreeMap<String, Vec<f32>>) -> VarMap {
    let map = VarMap::new();
    let mut data = map.data().lock().unwrap();
    for n in &case.param_order {
        let v = Var::from_slice(&values[n], case.shape(n), &Device::Cpu).unwrap();
        data.insert(n.clone(), v);
    }
    drop(data);
    map
}

fn initial(case: &Case) -> BTreeMap<String, Vec<f32>> {
    case.param_order
        .iter()
        .map(|n| (n.clone(), case.init_f32(n)))
        .collect()
}

/// Steps `range` of `case` on the candle path (`opt` over the `Var`s of `map`), checking each
/// step against the reference; returns the `Var`s' values.
fn candle_steps(
    case: &Case,
    map: &VarMap,
    opt: &mut CandleOptimizer<AdamW<f32>>,
    range: std::ops::Range<usize>,
) -> BTreeMap<String, Vec<f32>> {
    for t in range {
        let mut grads = GradStore::default();
        let data = map.data().lock().unwrap();
        for n in &case.param_order {
            let g = Tensor::from_slice(&case.grad_f32(t, n), case.shape(n), &Device::Cpu).unwrap();
            grads.insert(&data[n], g);
        }
        drop(data);
        opt.step(&grads).unwrap();
    }
    let data = map.data().lock().unwrap();
    case.param_order
        .iter()
        .map(|n| {
            let v = data[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (n.clone(), v)
        })
        .collect()
}

/// Steps `range` of `case` on the slice path, checking each step against the reference.
fn slice_steps(
    case: &Case,
    opt: &mut AdamW<f32>,
    params: &mut BTreeMap<String, Vec<f32>>,
    range: std::ops::Range<usize>,
) {
    for t in range {
        let grads: Vec<Vec<f32>> = params.keys().map(|n| case.grad_f32(t, n)).collect();
        let mut slices: Vec<ParamSlice<'_, f32>> = params
            .iter_mut()
            .zip(&grads)
            .map(|((n, p), g)| ParamSlice {
                name: n,
                shape: case.shape(n),
                param: p,
                grad: g,
            })
            .collect();
        opt.update_slices(&mut slices).unwrap();
        assert_at(case, "slice path after resuming", t, params);
    }
}

/// Asserts every parameter of `values` after step `t + 1` against the reference (`what` names
/// the path).
fn assert_at(case: &Case, what: &str, t: usize, values: &BTreeMap<String, Vec<f32>>) {
    for n in &case.param_order {
        case.assert_params_at(what, t, n, &values[n]);
    }
}

#[test]
fn a_candle_checkpoint_resumes_on_the_slice_and_dfdx_paths() {
    let case = fixtures::load("adamw");
    let (map, mut opt) = candle_adamw(&case, &initial(&case));
    let halfway = candle_steps(&case, &map, &mut opt, 0..K);
    assert_at(&case, "candle path", K - 1, &halfway);
    let path = file("candle-to-others");
    opt.save_checkpoint(&path).unwrap();

    // the slice path
    let mut slice_opt = adamw(&case);
    slice_opt.load_checkpoint(&path).unwrap();
    assert_eq!(slice_opt.opt_state().step, K as u64);
    let mut params = halfway.clone();
    slice_steps(&case, &mut slice_opt, &mut params, K..case.steps);

    // the dfdx path: CaseModel's tensors are walked under the same names
    let mut dfdx_opt = adamw(&case);
    dfdx_opt.load_checkpoint(&path).unwrap();
    let dev = Cpu::default();
    let mut model = CaseModel::<f32, Cpu>::zeros(&dev);
    for n in &case.param_order {
        model.set_from_flat(n, &halfway[n]);
    }
    for t in K..case.steps {
        let mut grads = model.grads_from(&case.grads[t]);
        dfdx_opt.update(&mut model, &mut grads).unwrap();
        for n in &case.param_order {
            case.assert_params_at("dfdx path after resuming", t, n, &model.params_flat(n));
        }
    }
}

#[test]
fn a_slice_checkpoint_resumes_on_the_candle_path() {
    let case = fixtures::load("adamw");
    let mut slice_opt = adamw(&case);
    let mut params = initial(&case);
    slice_steps(&case, &mut slice_opt, &mut params, 0..K);
    let path = file("slice-to-candle");
    slice_opt.save_checkpoint(&path).unwrap();

    let (map, mut opt) = candle_adamw(&case, &params);
    opt.load_checkpoint(&path).unwrap();
    for t in K..case.steps {
        let values = candle_steps(&case, &map, &mut opt, t..t + 1);
        assert_at(&case, "candle path after resuming", t, &values);
    }
}

/// The same steps on the candle path and the slice path write the same bytes.
#[test]
fn the_candle_path_and_the_slice_path_write_the_same_file() {
    let case = fixtures::load("adamw");
    let (map, mut opt) = candle_adamw(&case, &initial(&case));
    candle_steps(&case, &map, &mut opt, 0..K);
    let (a, b) = (file("same-candle"), file("same-slice"));
    opt.save_checkpoint(&a).unwrap();

    let mut slice_opt = adamw(&case);
    let mut params = initial(&case);
    slice_steps(&case, &mut slice_opt, &mut params, 0..K);
    slice_opt.save_checkpoint(&b).unwrap();
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(a.len() > 1000, "a checkpoint with state: {} bytes", a.len());
    assert!(a == b, "the two checkpoints differ");
}
