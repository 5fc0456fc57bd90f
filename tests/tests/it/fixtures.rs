//! Self-checks of the test harness: the fixture files, their loader, the tolerance check and
//! the dfdx [`CaseModel`]. These do not involve any optimizer.

use dfdx::tensor::Cpu;
use optim_tests::fixtures::{self, assert_close, is_close, Case, Tolerance, OPTIMIZER_CASES};
use optim_tests::model::{walked_tensors, CaseModel, PARAM_NAMES};
use std::collections::BTreeMap;

const TOL: Tolerance = Tolerance {
    rtol: 1e-5,
    atol: 1e-6,
};

#[test]
fn every_case_loads_with_the_case_model_layout() {
    for name in OPTIMIZER_CASES {
        let case = fixtures::load(name);
        assert_eq!(case.case, name);
        assert_eq!(case.steps, 20, "{name}: steps");
        assert_eq!(case.param_order, PARAM_NAMES, "{name}: param_order");
        for p in PARAM_NAMES {
            assert_eq!(
                case.shape(p),
                CaseModel::<f32, Cpu>::shape_of(p),
                "{name}: shape of {p}"
            );
        }
        assert_eq!(case.tolerance, TOL, "{name}: tolerance");
        // every value is a float32 value written exactly: the f32 round trip is lossless
        for step in case.grads.iter().chain(&case.params) {
            for (p, xs) in step {
                for &x in xs {
                    assert!(x.is_finite(), "{name}: non-finite value in {p}");
                    assert_eq!(f64::from(x as f32), x, "{name}: {x} in {p} is not an f32");
                }
            }
        }
    }
}

#[test]
fn final_state_tensors_have_parameter_shapes() {
    for name in OPTIMIZER_CASES {
        let case = fixtures::load(name);
        let state = case
            .final_state
            .as_object()
            .unwrap_or_else(|| panic!("{name}: final_state is not an object"));
        for (p, keys) in state {
            let keys = keys.as_object().expect("state keyed by state name");
            for key in keys.keys() {
                let t = case.final_state_tensor(p, key).expect("present");
                assert_eq!(t.data.len(), t.numel(), "{name}: {p}.{key}");
                // scalars (`step`, `mu_product`) or tensors shaped like the parameter
                assert!(
                    t.shape.is_empty() || t.shape == case.shape(p),
                    "{name}: {p}.{key} has shape {:?}",
                    t.shape
                );
            }
        }
    }
    let adam = fixtures::load("adam");
    let step = adam.final_state_tensor("w_16x8", "step").expect("step");
    assert_eq!(step.data, vec![20.0]);
    assert!(adam
        .final_state_tensor("w_16x8", "momentum_buffer")
        .is_none());
}

#[test]
fn hyperparameter_lookup() {
    let adam = fixtures::load("adam");
    assert_eq!(adam.hyper_f64("lr"), 0.01);
    assert_eq!(adam.hyper_f64("betas.1"), 0.999);
    assert_eq!(adam.hyper_opt_f64("weight_decay"), None);
    assert_eq!(adam.group_f64("weight_decay"), 0.0);
    assert!(!adam.group_bool("amsgrad"));
    assert_eq!(adam.lr_at(19), 0.01);

    let sched = fixtures::load("adamw_warmup_cosine");
    assert_eq!(sched.hyper_f64("adamw.weight_decay"), 0.1);
    assert_eq!(sched.lr_at(0), 0.001);
    assert_eq!(sched.lr_at(5), 0.01);

    let ademamix = fixtures::load("ademamix");
    assert_eq!(ademamix.hyper_f64("betas.2"), 0.9999);
    assert_eq!(ademamix.hyper_opt_f64("t_alpha_beta3"), None);
}

/// A minimal case in the file format, with non-finite strings and an optax-style scalar lr.
const TINY: &str = r#"{
    "case": "tiny", "hyperparameters": {"lr": 0.5}, "steps": 1,
    "param_order": ["a"],
    "params_init": {"a": {"shape": [3], "data": [1.0, "nan", "-inf"], "dtype": "float32"}},
    "grads": [{"a": ["inf", 0.0, -0.0]}],
    "lr": [0.25],
    "params": [{"a": [0.5, "nan", "-inf"]}],
    "final_state": {"a": {"mu": {"shape": [3], "data": ["nan", 1, 2]}}},
    "tolerance": {"rtol": 1e-5, "atol": 1e-6, "rule": "ignored"}
}"#;

#[test]
fn non_finite_strings_and_scalar_lr() {
    let case: Case = serde_json::from_str(TINY).expect("parse");
    let init = &case.params_init["a"].data;
    assert_eq!(init[0], 1.0);
    assert!(init[1].is_nan());
    assert_eq!(init[2], f64::NEG_INFINITY);
    assert_eq!(case.grads[0]["a"][0], f64::INFINITY);
    assert_eq!(case.lr_at(0), 0.25);
    let mu = case.final_state_tensor("a", "mu").expect("mu");
    assert!(mu.data[0].is_nan());
    assert_eq!(mu.data[1..], [1.0, 2.0]);
    case.assert_params_at("tiny", 0, "a", &[0.5, f32::NAN, f32::NEG_INFINITY]);
}

#[test]
fn tolerance_rule() {
    assert!(is_close(1.0 + 1.1e-5, 1.0, &TOL));
    assert!(!is_close(1.0 + 1.2e-5, 1.0, &TOL));
    assert!(is_close(0.0, 9e-7, &TOL));
    assert!(!is_close(0.0, 2e-6, &TOL));
    assert!(is_close(f64::NAN, f64::NAN, &TOL));
    assert!(!is_close(0.0, f64::NAN, &TOL));
    assert!(!is_close(f64::NAN, 0.0, &TOL));
    assert!(is_close(f64::INFINITY, f64::INFINITY, &TOL));
    assert!(!is_close(f64::NEG_INFINITY, f64::INFINITY, &TOL));
    assert!(!is_close(f64::MAX, f64::INFINITY, &TOL));
    assert_close("c", "w", &[1.0, f32::NAN], &[1.0, f64::NAN], &TOL);
}

#[test]
#[should_panic(expected = "element 1 of 3: got 2.09999990463")]
fn assert_close_reports_first_offender() {
    assert_close("c", "w", &[1.0, 2.1, 3.5], &[1.0, 2.0, 3.0], &TOL);
}

#[test]
#[should_panic(expected = "length mismatch")]
fn assert_close_checks_lengths() {
    assert_close("c", "w", &[1.0], &[1.0, 2.0], &TOL);
}

#[test]
fn case_model_walks_with_reference_names() {
    let dev = Cpu::default();
    let model = CaseModel::<f32, Cpu>::zeros(&dev);
    let walked = walked_tensors(&model);
    let want: Vec<(String, Vec<usize>)> = PARAM_NAMES
        .iter()
        .map(|&n| (n.to_string(), CaseModel::<f32, Cpu>::shape_of(n).to_vec()))
        .collect();
    assert_eq!(walked, want);
}

#[test]
fn case_model_round_trips_params_and_grads() {
    let dev = Cpu::default();
    let case = fixtures::load("adam");
    let mut model = CaseModel::<f32, Cpu>::from_case(&dev, &case);
    for name in PARAM_NAMES {
        assert_eq!(model.params_flat(name), case.init_f32(name), "{name}");
    }
    let flat = model.to_flat();
    assert_eq!(flat.len(), 4);
    assert_eq!(flat["w_8x16"], case.init_f32("w_8x16"));

    let new_w: Vec<f32> = (0..128).map(|i| i as f32).collect();
    model.set_from_flat("w_16x8", &new_w);
    assert_eq!(model.params_flat("w_16x8"), new_w);
    // row-major: element [1, 0] of a [16, 8] matrix is flat index 8
    assert_eq!(model.w_16x8.as_vec()[8], 8.0);

    let mut grads = model.grads_from(&case.grads[3]);
    for name in PARAM_NAMES {
        assert_eq!(model.grad_flat(&mut grads, name), case.grad_f32(3, name));
    }
    let only_b: BTreeMap<String, Vec<f64>> = [("b_8".to_string(), vec![0.5; 8])].into();
    model.write_grads(&mut grads, &only_b);
    assert_eq!(model.grad_flat(&mut grads, "b_8"), vec![0.5f32; 8]);
    assert_eq!(model.grad_flat(&mut grads, "s_1"), case.grad_f32(3, "s_1"));
    let fresh = model.grads_from(&only_b);
    let mut fresh = fresh;
    assert_eq!(model.grad_flat(&mut fresh, "s_1"), vec![0.0f32]);

    let f64_model = CaseModel::<f64, Cpu>::from_case(&dev, &case);
    assert_eq!(f64_model.params_flat("s_1"), case.params_init["s_1"].data);
}
