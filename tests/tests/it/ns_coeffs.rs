//! Newton–Schulz with per-iteration coefficients (`orthogonalize(x, coeffs = …)`): the presets
//! and raw lists against `tests/fixtures/newton_schulz_coeffs.json` (Keller's
//! `zeropower_via_newtonschulz5`, pytorch_optimizer 4.1's Polar Express schedule and the Polar
//! Express paper's Algorithm 1, each run in float32 on fixed tall, wide, ill-conditioned and tiny
//! matrices; generator `tests/refgen/gen_muon_family.py`), through the free function and through
//! the DSL word; the iteration-to-coefficient mapping against an `f64` scalar recursion on the
//! singular values; the primitive's checks of a bad schedule.

use optim_dsl::matrix::{
    orthogonalize, MatInOut, MatrixWord, Orthogonalize, OrthogonalizeConfig, NS_COEFFS, NS_CUBIC,
    NS_EPS_KELLER, NS_KELLER, NS_POLAR_EXPRESS,
};
use optim_dsl::prelude::*;
use optim_dsl::ParamInfo;
use optim_tests::fixtures::{self, floats, Tolerance};
use serde_json::Value;

fn case() -> Value {
    fixtures::raw("newton_schulz_coeffs")
}

fn triples(v: &Value) -> Vec<[f64; 3]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let t = floats(t);
            [t[0], t[1], t[2]]
        })
        .collect()
}

fn tol(case: &Value) -> Tolerance {
    Tolerance {
        rtol: case["tolerance"]["rtol"].as_f64().unwrap(),
        atol: case["tolerance"]["atol"].as_f64().unwrap(),
    }
}

/// Every matrix of the fixture: name, shape, float32 input.
fn matrices(case: &Value) -> Vec<(String, [usize; 2], Vec<f32>)> {
    let mats = case["matrices"].as_object().unwrap();
    assert_eq!(mats.len(), 6, "the fixture's six matrices");
    mats.iter()
        .map(|(name, m)| {
            let shape = floats(&m["input"]["shape"]);
            let data = floats(&m["input"]["data"])
                .iter()
                .map(|&x| x as f32)
                .collect();
            (name.clone(), [shape[0] as usize, shape[1] as usize], data)
        })
        .collect()
}

/// The paper's Algorithm 1 divides the input by `1.01 ‖X‖_F + 1e-7` and then runs its listed
/// polynomials. Dividing by `1.01` before `p(x) = a x + b x³ + c x⁵` is the polynomial
/// `(a / 1.01) x + (b / 1.01³) x³ + (c / 1.01⁵) x⁵` on `X / ‖X‖_F`, and
/// `1.01 ‖X‖_F + 1e-7 = 1.01 (‖X‖_F + 1e-7 / 1.01)`: so a raw list whose first triple absorbs the
/// `1.01`, with `eps = 1e-7 / 1.01`, is the same map.
fn paper_alg1_as_raw_list(case: &Value) -> Vec<[f64; 3]> {
    let mut list = triples(&case["hyperparameters"]["polar_express_paper_after_safety"]);
    let [a, b, c] = list[0];
    list[0] = [a / 1.01, b / 1.01f64.powi(3), c / 1.01f64.powi(5)];
    list
}

#[test]
fn presets_hold_the_reference_coefficients() {
    let case = case();
    let hp = &case["hyperparameters"];
    assert_eq!(NS_KELLER, &[NS_COEFFS]);
    let keller = floats(&hp["keller_triple"]);
    assert_eq!(NS_COEFFS, [keller[0], keller[1], keller[2]]);
    assert_eq!(NS_POLAR_EXPRESS, triples(&hp["polar_express_po_coeffs"]));
}

#[test]
fn free_function_matches_every_reference_variant() {
    let case = case();
    let tol = tol(&case);
    let paper = paper_alg1_as_raw_list(&case);
    let variants: [(&str, &[[f64; 3]], f64); 3] = [
        // Keller: X / (‖X‖_F + 1e-7)
        ("keller5", NS_KELLER, NS_EPS_KELLER),
        // pytorch_optimizer: X / max(‖X‖_F, 1e-7); every input norm here is above 1e-7 (the
        // tiny one is ~1e-5), where that is X / ‖X‖_F: eps = 0
        ("polar_express_po", NS_POLAR_EXPRESS, 0.0),
        ("polar_express_paper_alg1", &paper, 1e-7 / 1.01),
    ];
    for (name, [rows, cols], input) in matrices(&case) {
        for (key, coeffs, eps) in variants {
            let want = floats(&case["matrices"][&name][format!("{key}_f32")]);
            let mut out = vec![f32::NAN; input.len()];
            let io = MatInOut::new(&input, &mut out, rows, cols).unwrap();
            orthogonalize(io, 5, coeffs, eps);
            fixtures::assert_close(
                "newton_schulz_coeffs",
                &format!("{name} {key}"),
                &out,
                &want,
                &tol,
            );
        }
    }
}

#[test]
fn polar_express_orthogonalizes_better_than_keller_in_five_steps() {
    // The point of the schedule, on the fixture's own f64 outputs: after 5 iterations Polar
    // Express's singular values are closer to 1 than Keller's on the well-conditioned inputs.
    let case = case();
    for name in ["g_16x8", "g_8x16", "g_32x4_tall", "g_3x20_wide"] {
        let m = &case["matrices"][name];
        let dev = |k: &str| {
            floats(&m[format!("{k}_singular_values_out_f64")])
                .iter()
                .map(|s| (s - 1.0).abs())
                .fold(0.0f64, f64::max)
        };
        assert!(
            dev("polar_express_po") < dev("keller5"),
            "{name}: {} vs {}",
            dev("polar_express_po"),
            dev("keller5")
        );
    }
}

/// `diag(s)` as a `rows × cols` row-major matrix.
fn diag(s: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut m = vec![0.0; rows * cols];
    for (i, &v) in s.iter().enumerate() {
        m[i * cols + i] = v;
    }
    m
}

/// The singular values after `steps` iterations, by the scalar recursion
/// `s ← a_i s + b_i s³ + c_i s⁵` on `s / ‖s‖` with `(a_i, b_i, c_i) = coeffs[min(i, len - 1)]`.
fn recursion(s: &[f64], steps: usize, coeffs: &[[f64; 3]]) -> Vec<f64> {
    let norm = s.iter().map(|x| x * x).sum::<f64>().sqrt();
    s.iter()
        .map(|&x| {
            let mut x = x / norm;
            for i in 0..steps {
                let [a, b, c] = coeffs[i.min(coeffs.len() - 1)];
                x = a * x + b * x.powi(3) + c * x.powi(5);
            }
            x
        })
        .collect()
}

#[test]
fn iteration_i_uses_triple_min_i_len_minus_1() {
    // On a diagonal matrix every iteration acts on each singular value alone, so the output's
    // diagonal is the scalar recursion: this pins which triple each iteration uses when the
    // schedule is longer than, as long as, and shorter than `steps` (last triple repeated).
    let s = [0.9, 0.5, 0.2, 0.05];
    let list = [[3.0, -3.2, 1.2], [2.0, -1.5, 0.5], [1.5, -0.5, 0.0]];
    for (rows, cols) in [(4, 6), (6, 4)] {
        let x = diag(&s, rows, cols);
        for (coeffs, steps) in [
            (&list[..], 1),
            (&list[..], 2),
            (&list[..], 3),
            (&list[..], 7),
            (NS_POLAR_EXPRESS, 5),
            (NS_POLAR_EXPRESS, 10),
            (NS_CUBIC, 25),
        ] {
            let mut out = vec![f64::NAN; x.len()];
            let io = MatInOut::new(&x, &mut out, rows, cols).unwrap();
            orthogonalize(io, steps, coeffs, 0.0);
            let want = recursion(&s, steps, coeffs);
            for (i, w) in want.iter().enumerate() {
                let got = out[i * cols + i];
                assert!(
                    (got - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{rows}x{cols} steps {steps} len {}: s{i} {got} vs {w}",
                    coeffs.len()
                );
            }
            let off = out
                .iter()
                .enumerate()
                .filter(|(k, _)| k / cols != k % cols)
                .all(|(_, v)| *v == 0.0);
            assert!(off, "off-diagonal entries stay zero");
        }
    }
    // the cubic converges (slowly): 25 iterations take 0.05 / ‖s‖ to 1
    let cubic = recursion(&s, 25, NS_CUBIC);
    assert!(cubic.iter().all(|v| (v - 1.0).abs() < 1e-9), "{cubic:?}");
}

#[test]
fn empty_schedule_runs_no_iteration() {
    let x = [3.0f64, 0.0, 0.0, 4.0];
    let mut out = [f64::NAN; 4];
    orthogonalize(MatInOut::new(&x, &mut out, 2, 2).unwrap(), 5, &[], 0.0);
    assert_eq!(out, [0.6, 0.0, 0.0, 0.8]);
}

#[test]
fn primitive_rejects_an_empty_or_non_finite_schedule() {
    let shape = [4usize, 4];
    let info = ParamInfo::new("w", &shape);
    let ok = OrthogonalizeConfig {
        coeffs: Some(NS_POLAR_EXPRESS),
        ..Default::default()
    };
    assert!(Orthogonalize::check(&ok, info).is_ok());
    let empty = OrthogonalizeConfig {
        coeffs: Some(&[]),
        ..Default::default()
    };
    optim_tests::assert_err_has(
        Orthogonalize::check(&empty, info),
        &["`orthogonalize`", "at least one"],
    );
    let nan = OrthogonalizeConfig {
        coeffs: Some(&[[1.5, f64::NAN, 0.0]]),
        ..Default::default()
    };
    optim_tests::assert_err_has(Orthogonalize::check(&nan, info), &["finite"]);
}

optimizer! {
    /// `param ← -O(grad)` with the Polar Express preset.
    pub NsPolarExpress<> {
        matrix => { param = -orthogonalize(grad, coeffs = polar_express); }
        _ => { param -= grad; }
    }
}

optimizer! {
    /// `param ← -O(grad)` with Keller's preset and his `+ 1e-7`.
    pub NsKeller<> {
        matrix => { param = -orthogonalize(grad, coeffs = keller, eps = 1e-7); }
        _ => { param -= grad; }
    }
}

optimizer! {
    /// `param ← -O(grad)` with the paper's Algorithm 1 as a raw list (first triple / 1.01^k,
    /// see `paper_alg1_as_raw_list`), 5 of its 8 triples used.
    pub NsPaperAlg1<> {
        matrix => {
            param = -orthogonalize(grad, eps = 9.9009900990099e-8, steps = 5, coeffs = [
                (8.123921201985716, -22.228392466916024, 15.66181494517025),
                (4.066395159942775, -2.8611540867551426, 0.5183995226694741),
                (3.9095949044379155, -2.823351735039516, 0.5250369769390025),
                (3.2855640171986153, -2.415301959635945, 0.48529406552790866),
                (2.277873287083977, -1.619821765265441, 0.39848078704168355),
                (1.8725756512746514, -1.2307042574884297, 0.35851616209511666),
                (1.856437109755889, -1.2132392819185351, 0.35679978941375945),
                (1.875, -1.25, 0.375),
            ]);
        }
        _ => { param -= grad; }
    }
}

/// Runs `opt` once on each fixture matrix as the gradient and compares `-param` to `key`.
fn dsl_matches<O: DslOptimizer<f32>>(mut opt: O, key: &str) {
    let case = case();
    let tol = tol(&case);
    for (name, [rows, cols], input) in matrices(&case) {
        let shape = [rows, cols];
        let mut w = vec![0.0f32; input.len()];
        opt.update_slices(&mut [ParamSlice {
            name: &name,
            shape: &shape,
            param: &mut w,
            grad: &input,
        }])
        .unwrap();
        let got: Vec<f32> = w.iter().map(|x| -x).collect();
        let want = floats(&case["matrices"][&name][format!("{key}_f32")]);
        fixtures::assert_close(
            "newton_schulz_coeffs",
            &format!("{name} {key} (DSL)"),
            &got,
            &want,
            &tol,
        );
    }
}

#[test]
fn dsl_word_takes_presets_and_raw_lists() {
    let case = case();
    // the literal list above is the fixture's list with the 1.01 folded into its first triple
    let want = paper_alg1_as_raw_list(&case);
    let written = [8.123921201985716, -22.228392466916024, 15.66181494517025];
    for (w, x) in written.iter().zip(want[0]) {
        assert!((w - x).abs() <= 1e-15 * x.abs(), "{w} vs {x}");
    }
    dsl_matches(NsPolarExpress::<f32>::default(), "polar_express_po");
    dsl_matches(NsKeller::<f32>::default(), "keller5");
    dsl_matches(NsPaperAlg1::<f32>::default(), "polar_express_paper_alg1");
}
