//! Matrix primitives against reference outputs: Newton–Schulz (Keller Jordan's
//! `zeropower_via_newtonschulz5` in float32, including the rank-1, all-zero and 1e-20 inputs)
//! and Muon trajectories, plus properties of the orthogonalization.

use optim_dsl::matrix::{orthogonalize, MatInOut, NS_COEFFS, NS_EPS, NS_EPS_KELLER, NS_STEPS};
use optim_dsl::prelude::*;
use optim_dsl::zoo::Muon;
use optim_dsl::RuleBody;
use optim_tests::fixtures::{self, Tolerance};
use optim_tests::params::slice;
use optim_tests::torch_config;
use optim_tests::trajectory::resume_bits;
use optim_tests::zoo::pytorch_optimizer_shampoo;
use serde_json::Value;

fn tensor(v: &Value) -> (Vec<usize>, Vec<f32>) {
    let shape = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    (shape, fixtures::to_f32(&fixtures::floats(&v["data"])))
}

#[test]
fn newton_schulz_matches_keller_f32_on_every_matrix() {
    let text = std::fs::read_to_string(fixtures::path("newton_schulz")).unwrap();
    let case: Value = serde_json::from_str(&text).unwrap();
    let tol = Tolerance {
        rtol: case["tolerance"]["rtol"].as_f64().unwrap(),
        atol: case["tolerance"]["atol"].as_f64().unwrap(),
    };
    let mats = case["matrices"].as_object().unwrap();
    assert!(
        mats.contains_key("zero_4x4")
            && mats.contains_key("tiny_8x4")
            && mats.contains_key("rank1_12x6")
    );
    for (name, m) in mats {
        let (shape, input) = tensor(&m["input"]);
        let (_, want) = tensor(&m["keller_f32"]);
        let mut out = vec![f32::NAN; input.len()];
        // Keller's `+ 1e-7` on the norm (not the default): it maps the 1e-20 input to ~0
        let io = MatInOut::new(&input, &mut out, shape[0], shape[1]).unwrap();
        orthogonalize(io, NS_STEPS, &[NS_COEFFS], NS_EPS_KELLER);
        assert!(
            out.iter().all(|x| x.is_finite()),
            "{name}: non-finite output"
        );
        let want64: Vec<f64> = want.iter().map(|&x| f64::from(x)).collect();
        fixtures::assert_close("newton_schulz", name, &out, &want64, &tol);
        if name == "zero_4x4" {
            assert!(out.iter().all(|&x| x == 0.0), "a zero matrix maps to zero");
        }
    }
}

#[test]
fn muon_matches_keller_single_device_muon_f32() {
    let case = fixtures::load("muon_keller_f32");
    let mut opt = optim_tests::zoo::keller_muon(&case);
    run_case(&case, &mut opt, "muon slices");
    // both matrices went through the orthogonalized rule, not the AdamW fallback
    let plan = opt.explain();
    assert_eq!(plan.rules.len(), 2);
    assert_eq!(opt.state().param("w_16x8").unwrap().rule, 0);
    assert_eq!(opt.state().param("w_8x16").unwrap().rule, 0);
}

/// NorMuon against the authors' `SingleDeviceNorMuon` (float32 Newton–Schulz): every step, and
/// the final state — `buf` per element and the row-wise second moment `v` (one value per row).
#[test]
fn normuon_matches_the_authors_single_device_normuon() {
    use optim_dsl::zoo::{NorMuon, NorMuonConfig};
    let case = fixtures::load("normuon");
    let lr = case.hyper_f64("lr").into();
    let mut opt = NorMuon::<f32>::new(torch_config! {
        case.hyper_f64, lr, NorMuonConfig { weight_decay, momentum, beta2 }
    })
    .unwrap();
    run_case(&case, &mut opt, "normuon slices");
    for name in ["w_16x8", "w_8x16"] {
        assert_eq!(
            opt.state().param(name).unwrap().rule,
            0,
            "{name} is orthogonalized"
        );
        for (ours, theirs) in [("buf", "momentum_buffer"), ("v", "second_momentum_buffer")] {
            let want = case.final_state_tensor(name, theirs).unwrap().data;
            let got = opt.state_buffer(name, ours).unwrap();
            assert_eq!(
                got.len(),
                want.len(),
                "{name}.{ours}: one value per row for v"
            );
            let what = format!("final {name}.{ours}");
            fixtures::assert_close(&case.case, &what, got, &want, &case.tolerance);
        }
    }
}

#[test]
fn muon_routes_vectors_embeddings_and_heads_to_adamw() {
    let mut opt = Muon::<f32>::default();
    let mut w = vec![0.1f32; 12];
    let mut e = vec![0.1f32; 12];
    let mut b = vec![0.1f32; 3];
    let g12 = vec![0.5f32; 12];
    let g3 = vec![0.5f32; 3];
    opt.update_slices(&mut [
        slice("layer.weight", &[3, 4], &mut w, &g12),
        slice("embed.weight", &[3, 4], &mut e, &g12),
        slice("layer.bias", &[3], &mut b, &g3),
    ])
    .unwrap();
    assert_eq!(opt.state().param("layer.weight").unwrap().rule, 0);
    assert_eq!(opt.state().param("embed.weight").unwrap().rule, 1);
    assert_eq!(opt.state().param("layer.bias").unwrap().rule, 1);
    // AdamW's first step moves every element by adam_lr (= 3e-4) against the gradient sign
    assert!((b[0] - (0.1 - 3e-4)).abs() < 1e-7, "{b:?}");
    assert!((e[0] - (0.1 - 3e-4)).abs() < 1e-7, "{e:?}");
}

/// Singular values of a small matrix via the eigenvalues of `XᵀX` (Jacobi sweeps), in f64.
fn singular_values(x: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let mut a = vec![0.0f64; cols * cols];
    for i in 0..cols {
        for j in 0..cols {
            a[i * cols + j] = (0..rows)
                .map(|r| f64::from(x[r * cols + i]) * f64::from(x[r * cols + j]))
                .sum();
        }
    }
    for _ in 0..100 {
        for p in 0..cols {
            for q in p + 1..cols {
                let apq = a[p * cols + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * cols + q] - a[p * cols + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..cols {
                    let (akp, akq) = (a[k * cols + p], a[k * cols + q]);
                    a[k * cols + p] = c * akp - s * akq;
                    a[k * cols + q] = s * akp + c * akq;
                }
                for k in 0..cols {
                    let (apk, aqk) = (a[p * cols + k], a[q * cols + k]);
                    a[p * cols + k] = c * apk - s * aqk;
                    a[q * cols + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..cols).map(|i| a[i * cols + i].max(0.0).sqrt()).collect()
}

#[test]
fn orthogonalize_puts_singular_values_in_the_quintic_band() {
    // deterministic pseudo-random well-conditioned matrices of several shapes
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    // well-conditioned inputs (identity-like plus noise): the quintic's band holds for singular
    // values not far below the largest; random square matrices have tiny ones that 5 steps
    // cannot lift (see the rank-1 case of the reference file)
    for (rows, cols) in [(12, 8), (8, 12), (16, 16), (32, 20), (1, 6), (6, 1)] {
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| (if i / cols == i % cols { 1.0 } else { 0.0 }) + 0.2 * rnd() as f32)
            .collect();
        let mut out = vec![0.0f32; rows * cols];
        let io = MatInOut::new(&x, &mut out, rows, cols).unwrap();
        orthogonalize(io, NS_STEPS, &[NS_COEFFS], NS_EPS);
        let k = rows.min(cols);
        let sv = if rows >= cols {
            singular_values(&out, rows, cols)
        } else {
            let t: Vec<f32> = (0..rows * cols)
                .map(|i| out[(i % rows) * cols + i / rows])
                .collect();
            singular_values(&t, cols, rows)
        };
        assert_eq!(sv.len(), k);
        for s in sv {
            // Keller's coefficients give singular values in roughly [0.68, 1.13] (shared refs)
            assert!((0.6..1.2).contains(&s), "{rows}x{cols}: singular value {s}");
        }
    }
}

/// Runs `opt` over a case's trajectory on the slice path, teacher-forced, comparing every step.
fn run_case<O: DslOptimizer<f32>>(case: &fixtures::Case, opt: &mut O, what: &str) {
    optim_tests::trajectory::run_slices(case, opt, what, |_, _| {});
}

#[test]
fn adafactor_matches_torch() {
    use optim_tests::zoo::torch_adafactor;
    let case = fixtures::load("adafactor");
    assert!(
        case.hyperparameters["eps"][0].is_null(),
        "eps1 = None means finfo(float32).eps"
    );
    let mut opt = torch_adafactor(&case);
    run_case(&case, &mut opt, "adafactor slices");
    // the factored state of a matrix is rows + cols numbers: row_var then col_var
    let st = opt.state().param("w_16x8").unwrap();
    let factored = st
        .buffers
        .iter()
        .find(|b| b.len() == 16 + 8)
        .expect("row/col statistics");
    let row = case.final_state_tensor("w_16x8", "row_var").unwrap();
    let col = case.final_state_tensor("w_16x8", "col_var").unwrap();
    let want: Vec<f64> = row.data.iter().chain(&col.data).copied().collect();
    fixtures::assert_close(
        "adafactor",
        "w_16x8 row_var|col_var",
        factored,
        &want,
        &case.tolerance,
    );
}

#[test]
fn shampoo_without_grafting_matches_pytorch_optimizer() {
    let case = fixtures::load("shampoo");
    let mut opt = pytorch_optimizer_shampoo(&case);
    run_case(&case, &mut opt, "shampoo slices");
    // grafting off keeps no Adam state: the plan names only the Kronecker buffers
    let plan = opt.explain();
    let RuleBody::Fused { state, .. } = &plan.rules[0].body else {
        panic!()
    };
    assert!(!state.contains(&"m") && !state.contains(&"v"), "{state:?}");
}

#[test]
fn shampoo_with_zero_gradients_gives_a_zero_update() {
    use optim_dsl::zoo::{Shampoo, ShampooConfig};
    for graft in [false, true] {
        let mut opt = Shampoo::<f32>::new(ShampooConfig {
            lr: 0.1.into(),
            graft,
            ..Default::default()
        })
        .unwrap();
        let mut w = vec![0.5f32; 6];
        let mut v = vec![0.25f32; 1];
        let g6 = [0.0f32; 6];
        let g1 = [0.0f32; 1];
        for _ in 0..3 {
            opt.update_slices(&mut [
                slice("w", &[2, 3], &mut w, &g6),
                slice("one", &[1], &mut v, &g1),
            ])
            .unwrap();
        }
        assert!(w.iter().all(|&x| x == 0.5), "graft={graft}: {w:?}");
        assert_eq!(v, [0.25]);
    }
}

#[test]
fn shampoo_handles_a_row_matrix_and_a_length_one_vector() {
    use optim_dsl::zoo::{Shampoo, ShampooConfig};
    let mut opt = Shampoo::<f32>::new(ShampooConfig {
        lr: 0.1.into(),
        graft: false,
        matrix_eps: 1e-3.into(),
        ..Default::default()
    })
    .unwrap();
    let mut row = vec![0.0f32; 4];
    let mut one = vec![0.0f32; 1];
    let g = [1.0f32, -2.0, 0.5, 0.0];
    opt.update_slices(&mut [
        slice("row", &[1, 4], &mut row, &g),
        slice("one", &[1], &mut one, &[2.0]),
    ])
    .unwrap();
    // length-1 vector: H = eps + g^2, u = g / sqrt(H)
    let want = -0.1 * 2.0 / (1e-3f64 + 4.0).sqrt();
    assert!((f64::from(one[0]) - want).abs() < 1e-6, "{one:?}");
    // (1, 4) matrix = the vector g (unit axes squeezed): H = eps I + g g^T, and g is an
    // eigenvector of H with eigenvalue eps + |g|^2, so u = H^{-1/2} g = g / sqrt(eps + |g|^2)
    let norm2 = 1.0 + 4.0 + 0.25;
    for (p, gi) in row.iter().zip(g) {
        let want = -0.1 * f64::from(gi) / (1e-3f64 + norm2).sqrt();
        assert!((f64::from(*p) - want).abs() < 1e-6, "{row:?}");
    }
}

#[test]
fn soap_matches_pytorch_optimizer() {
    use optim_dsl::zoo::{Soap, SoapConfig};
    let case = fixtures::load("soap");
    assert!(
        case.hyperparameters["shampoo_beta"].is_null(),
        "None means beta2"
    );
    let beta2 = case.hyperparameters["betas"][1].as_f64().unwrap();
    let mut opt = Soap::<f32>::new(SoapConfig {
        lr: case.hyper_f64("lr").into(),
        beta1: case.hyperparameters["betas"][0].as_f64().unwrap().into(),
        beta2: beta2.into(),
        shampoo_beta: beta2.into(),
        eps: case.hyper_f64("eps").into(),
        weight_decay: case.hyper_f64("weight_decay").into(),
        precondition_frequency: case.hyper_f64("precondition_frequency").into(),
        max_precondition_dim: case.hyper_f64("max_precondition_dim").into(),
    })
    .unwrap();
    run_case(&case, &mut opt, "soap slices");
}

/// SOAP's update does not depend on the sign or order of the eigenvectors: flipping a column
/// of Q (with the matching state) or permuting columns leaves the trajectory unchanged.
#[test]
fn soap_update_is_invariant_to_eigenvector_sign_and_order() {
    use optim_dsl::matrix::{eigenbasis_init, rotate, EigenbasisConfig, MatIn, MatInOut};
    let (rows, cols) = (4usize, 3usize);
    let g: Vec<f32> = (0..12).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
    let cfg = EigenbasisConfig {
        beta: 0.9,
        update_freq: 10,
        max_dim: 100,
    };
    let (mut gg, mut q) = (Vec::new(), Vec::new());
    let gm = MatIn::new(&g, rows, cols).unwrap();
    assert!(eigenbasis_init(gm, &mut gg, &mut q, cfg));
    let m: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
    // u = Q_L ((Q_L^T M Q_R) / (sqrt(v) + eps)) Q_R^T with v = (Q_L^T G Q_R)^2
    let rot = |x: &[f32], q: &[f32], inverse: bool| {
        let mut out = vec![0.0f32; 12];
        let io = MatInOut::new(x, &mut out, rows, cols).unwrap();
        rotate(io, q, 100, inverse);
        out
    };
    let update = |q: &[f32]| {
        let gr = rot(&g, q, false);
        let mr = rot(&m, q, false);
        let w: Vec<f32> = mr
            .iter()
            .zip(&gr)
            .map(|(a, b)| a / (b.abs() + 1e-8))
            .collect();
        rot(&w, q, true)
    };
    let base = update(&q);
    // flip the sign of every other column of both factors
    let mut flipped = q.clone();
    let (ql, qr) = flipped.split_at_mut(rows * rows);
    for (k, x) in ql.iter_mut().enumerate() {
        if (k % rows) % 2 == 1 {
            *x = -*x;
        }
    }
    for (k, x) in qr.iter_mut().enumerate() {
        if (k % cols) % 2 == 0 {
            *x = -*x;
        }
    }
    // reverse the column order of the left factor
    let mut permuted = flipped.clone();
    for i in 0..rows {
        for j in 0..rows {
            permuted[i * rows + j] = flipped[i * rows + (rows - 1 - j)];
        }
    }
    for other in [update(&flipped), update(&permuted)] {
        for (a, b) in base.iter().zip(&other) {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-4 * a.abs(),
                "{base:?} vs {other:?}"
            );
        }
    }
}

/// K-FAC-style preconditioning by the input covariance solves a least-squares layer in one
/// step, whatever the conditioning: for `L(W) = ½ tr((W - W*) Σ (W - W*)^T)` the gradient is
/// `(W - W*) Σ`, and `G Σ^{-1} = W - W*` (Martens & Grosse 2015; the thesis's layer-wise
/// preconditioner). Plain gradient descent needs many steps on the same problem.
#[test]
fn kfac_with_input_covariance_solves_least_squares_in_one_step() {
    use optim_dsl::zoo::{KFac, KFacConfig};
    let (rows, cols) = (2usize, 3usize);
    // Σ = Q diag(1, 10, 100) Q^T for a rotation Q (condition number 100)
    let (c, s) = (0.6f64, 0.8f64);
    let q = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    let lam = [1.0, 10.0, 100.0];
    let mut sigma = [[0.0f64; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            sigma[i][j] = (0..3).map(|k| q[i][k] * lam[k] * q[j][k]).sum();
        }
    }
    let w_star = [[1.0f64, -2.0, 0.5], [0.25, 3.0, -1.0]];
    let grad_at = |w: &[f64]| -> Vec<f64> {
        let mut g = vec![0.0; rows * cols];
        for r in 0..rows {
            for j in 0..cols {
                g[r * cols + j] = (0..cols)
                    .map(|k| (w[r * cols + k] - w_star[r][k]) * sigma[k][j])
                    .sum();
            }
        }
        g
    };
    let sigma_flat: Vec<f64> = sigma.iter().flatten().copied().collect();
    let mut opt = KFac::<f64>::new(KFacConfig {
        lr: 1.0.into(),
        damping: 1e-12.into(),
        ..Default::default()
    })
    .unwrap();
    opt.set_kron_factors("w", &[rows, cols], None, Some(sigma_flat.clone()))
        .unwrap();
    let mut w = vec![0.0f64; rows * cols];
    let g = grad_at(&w);
    opt.update_slices(&mut [slice("w", &[rows, cols], &mut w, &g)])
        .unwrap();
    for r in 0..rows {
        for j in 0..cols {
            assert!((w[r * cols + j] - w_star[r][j]).abs() < 1e-8, "{w:?}");
        }
    }
    // gradient descent at its best fixed step (2 / (λmin + λmax)) is still far after one step
    let mut gd = vec![0.0f64; rows * cols];
    let g = grad_at(&gd);
    for (p, g) in gd.iter_mut().zip(&g) {
        *p -= 2.0 / 101.0 * g;
    }
    let err: f64 = gd
        .iter()
        .zip(w_star.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err > 0.5, "{err}");
    // a factor of the wrong size is refused and changes nothing
    let before = opt.state().clone();
    let err = opt
        .set_kron_factors("w", &[rows, cols], Some(vec![1.0; 9]), None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("left factor has 9 elements, expected 2 x 2"),
        "{err}"
    );
    assert_eq!(opt.state(), &before);
}

/// Checkpoint round trip for matrix optimizers: 10 steps, save, load into a fresh optimizer,
/// 10 more steps = bit-identical to 20 uninterrupted steps (Kronecker statistics, inverse
/// roots, eigenbases and their refresh schedule all survive).
#[test]
fn matrix_optimizers_resume_bit_identically_from_a_checkpoint() {
    use optim_dsl::zoo::{Shampoo, ShampooConfig, Soap, SoapConfig};
    fn run<O: DslOptimizer<f32>>(make: impl FnMut() -> O, split: Option<usize>) -> Vec<u32> {
        resume_bits(make, (4, 3), 20, split)
    }
    let shampoo = ShampooConfig {
        lr: 0.01.into(),
        update_freq: 3.0.into(),
        ..Default::default()
    };
    let soap = SoapConfig {
        precondition_frequency: 4.0.into(),
        ..Default::default()
    };
    let shampoo = || Shampoo::<f32>::new(shampoo.clone()).unwrap();
    let soap = || Soap::<f32>::new(soap.clone()).unwrap();
    assert_eq!(run(shampoo, None), run(shampoo, Some(10)));
    assert_eq!(run(soap, None), run(soap, Some(10)));
}

/// Bad input never corrupts a Kronecker preconditioner: a gradient with a NaN is kept out of
/// the statistics (the documented skip), and the next finite gradient is preconditioned as if
/// the bad one had never arrived.
#[test]
fn non_finite_gradients_do_not_enter_kronecker_statistics() {
    use optim_dsl::matrix::{kron_precondition, KronConfig, MatInOut, KRON_DEFAULT};
    let cfg = KronConfig {
        eps: 1e-3,
        ..KRON_DEFAULT
    };
    let g1: Vec<f64> = (0..6).map(|i| i as f64 - 2.5).collect();
    let g2: Vec<f64> = (0..6).map(|i| (i as f64 * 0.7).sin()).collect();
    let mut bad = g1.clone();
    bad[3] = f64::NAN;
    let run = |with_bad: bool| {
        let (mut stats, mut roots, mut out) = (Vec::new(), Vec::new(), vec![0.0; 6]);
        let mut step = |g: &[f64], t: u64| {
            let io = MatInOut::new(g, &mut out, 2, 3).unwrap();
            let r = kron_precondition(io, &mut stats, &mut roots, t, cfg);
            r.skipped_inputs + r.failed_refreshes
        };
        let mut skips = step(&g1, 1);
        if with_bad {
            skips += step(&bad, 2);
        }
        step(&g2, 3);
        (out, stats, skips)
    };
    let (clean_out, clean_stats, _) = run(false);
    let (out, stats, skips) = run(true);
    assert_eq!(skips, 2, "one skip per preconditioned side");
    assert!(stats.iter().all(|v| v.is_finite()));
    assert_eq!(stats, clean_stats);
    assert_eq!(out, clean_out);
}
