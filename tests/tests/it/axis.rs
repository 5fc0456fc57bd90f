//! Axis reductions (`row_*`, `col_*`): one value per row or column of the parameter's
//! `rows × cols` view, broadcast back to the elements that use it, and per-row state. Checked
//! against hand-computed values on small matrices.

use optim_dsl::prelude::*;
use optim_tests::params::slice;

optimizer! {
    /// Each row of the gradient normalised to unit norm.
    RowNormalized<lr = 1.0> {
        param -= lr * grad / row_norm(grad);
    }
}

optimizer! {
    /// Means, RMS and maxima along both axes, in one update.
    Stats<lr = 1.0> {
        param = lr * (col_mean(grad) + 10.0 * row_max(grad) + 100.0 * col_rms(grad) + 1000.0 * row_sum(grad));
    }
}

optimizer! {
    /// Adam with one second moment per row (as Adam-mini's per-row blocks): the state `v` holds
    /// `rows` values.
    RowAdam<lr = 0.1, beta1 = 0.5, beta2 = 0.5, eps = 1e-8> {
        let m = momentum(grad, beta1);
        let v = second_moment(row_rms(grad), beta2);
        param -= lr * debias(m) / (sqrt(debias(v)) + eps);
    }
}

fn step<O: DslOptimizer<f64>>(opt: &mut O, shape: &[usize], p: &mut [f64], g: &[f64]) {
    opt.update_slices(&mut [slice("w", shape, p, g)]).unwrap();
}

#[test]
fn row_norm_normalises_each_row() {
    let mut opt = RowNormalized::<f64>::default();
    let g = [3.0, 4.0, 0.0, 1.0, 0.0, 0.0];
    let mut p = [0.0; 6];
    step(&mut opt, &[2, 3], &mut p, &g);
    // row norms 5 and 1
    assert_eq!(p, [-0.6, -0.8, -0.0, -1.0, -0.0, -0.0]);
}

#[test]
fn means_maxima_rms_and_sums_along_both_axes() {
    let mut opt = Stats::<f64>::default();
    // 2 x 3: rows [1, -2, 3], [4, 5, -6]
    let g = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];
    let mut p = [0.0; 6];
    step(&mut opt, &[2, 3], &mut p, &g);
    let col_mean = [2.5, 1.5, -1.5];
    let row_max = [3.0, 5.0];
    let col_rms = [
        (17.0f64 / 2.0).sqrt(),
        (29.0f64 / 2.0).sqrt(),
        (45.0f64 / 2.0).sqrt(),
    ];
    let row_sum = [2.0, 3.0];
    for r in 0..2 {
        for c in 0..3 {
            let want = col_mean[c] + 10.0 * row_max[r] + 100.0 * col_rms[c] + 1000.0 * row_sum[r];
            assert!(
                (p[r * 3 + c] - want).abs() < 1e-12,
                "({r}, {c}): {} vs {want}",
                p[r * 3 + c]
            );
        }
    }
    // a vector is n x 1: each row has one element
    let mut opt = Stats::<f64>::default();
    let mut p = [0.0; 2];
    step(&mut opt, &[2], &mut p, &[2.0, -3.0]);
    // col_mean = -0.5, row_max = x, col_rms = sqrt(13/2), row_sum = x
    let rms = (13.0f64 / 2.0).sqrt();
    assert!((p[0] - (-0.5 + 20.0 + 100.0 * rms + 2000.0)).abs() < 1e-9);
    assert!((p[1] - (-0.5 - 30.0 + 100.0 * rms - 3000.0)).abs() < 1e-9);
}

#[test]
fn a_moment_of_a_row_value_keeps_one_value_per_row() {
    let mut opt = RowAdam::<f64>::default();
    let mut p = [0.0; 6];
    let g1 = [1.0, 2.0, 2.0, 0.0, 3.0, 4.0]; // row rms: 1.7320508, sqrt(25/3)
    let g2 = [2.0, 2.0, 2.0, 1.0, 1.0, 1.0]; // row rms: 2, 1
    step(&mut opt, &[2, 3], &mut p, &g1);
    step(&mut opt, &[2, 3], &mut p, &g2);
    let v = opt.state_buffer("w", "v").unwrap();
    assert_eq!(v.len(), 2, "one second moment per row");
    // v = 0.5 v + 0.5 rms²: step 1: 0.5 rms1²; step 2: 0.25 rms1² + 0.5 rms2²
    let rms1 = [3.0f64.sqrt(), (25.0f64 / 3.0).sqrt()];
    let rms2 = [2.0, 1.0];
    for r in 0..2 {
        let want = 0.25 * rms1[r] * rms1[r] + 0.5 * rms2[r] * rms2[r];
        assert!((v[r] - want).abs() < 1e-12, "row {r}: {} vs {want}", v[r]);
    }
    // the update uses the row's v for every element of the row: at step 1 (bias corrections
    // 1 - 0.5 = 0.5) debias(m) = g and debias(v) = rms², so p = -0.1 * g / (rms + eps) per row
    let mut opt = RowAdam::<f64>::default();
    let mut p = [0.0; 6];
    step(&mut opt, &[2, 3], &mut p, &g1);
    for r in 0..2 {
        for c in 0..3 {
            let want = -0.1 * g1[r * 3 + c] / (rms1[r] + 1e-8);
            assert!((p[r * 3 + c] - want).abs() < 1e-12);
        }
    }
}

optimizer! {
    /// Adam-mini's per-row block written with an explicit per-row state.
    RowBlocks<lr = 0.1, beta2 = 0.5> {
        let v = row_state(0.0);
        v = beta2 * v + (1.0 - beta2) * row_mean(grad * grad);
        param -= lr * grad / sqrt(v);
    }
}

#[test]
fn an_explicit_row_state_has_one_value_per_row() {
    let mut opt = RowBlocks::<f64>::default();
    let mut p = [0.0; 4];
    let g = [1.0, 3.0, 2.0, 2.0]; // row means of squares: 5, 4
    step(&mut opt, &[2, 2], &mut p, &g);
    let v = opt.state_buffer("w", "v").unwrap();
    assert_eq!(v, [2.5, 2.0]);
    let want = [
        -0.1 / 2.5f64.sqrt(),
        -0.3 / 2.5f64.sqrt(),
        -0.2 / 2.0f64.sqrt(),
        -0.2 / 2.0f64.sqrt(),
    ];
    for (a, b) in p.iter().zip(want) {
        assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    }
}
