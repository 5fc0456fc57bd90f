//! Running an optimizer over a reference case on the slice path.

use crate::fixtures::Case;
use optim_dsl::DslOptimizer;

/// Runs `opt` over `case` teacher-forced (feeding `grads[t]`), asserting the parameters
/// after every step against `params[t]` within the case's tolerance, and calling
/// `after(t, opt)` after each step for extra checks. Returns the largest absolute deviation
/// from the reference parameters ([`max_abs_diff`]) over all steps.
pub fn run_slices<O: DslOptimizer<f32>>(
    case: &Case,
    opt: &mut O,
    what: &str,
    mut after: impl FnMut(usize, &O),
) -> f64 {
    let names = &case.param_order;
    let shapes: Vec<&[usize]> = names.iter().map(|n| case.shape(n)).collect();
    let mut params: Vec<Vec<f32>> = names.iter().map(|n| case.init_f32(n)).collect();
    let mut worst = 0.0f64;
    for t in 0..case.steps {
        let grads: Vec<Vec<f32>> = names.iter().map(|n| case.grad_f32(t, n)).collect();
        let mut slices = crate::params::slices(names, &shapes, &mut params, &grads);
        opt.update_slices(&mut slices).unwrap();
        for (n, p) in names.iter().zip(&params) {
            case.assert_params_at(what, t, n, p);
            worst = worst.max(max_abs_diff(p, &case.params[t][n]));
        }
        after(t, opt);
    }
    worst
}

/// Steps a `[rows, cols]` weight `"w"` (initially 0.1) and a `[cols]` bias `"b"` (initially
/// 0) `steps` times on fixed gradients (`w`: `((7i + 3t) mod 13 - 6) / 5`, `b`:
/// `(i + t) mod 4 - 1.5` at step `t`), with the optimizer from `make`. With `split = Some(s)`
/// the optimizer is saved to checkpoint bytes before step `s` and replaced by a fresh one
/// loaded from them. Returns the bits of the final `w` then `b`, for bit-identity checks of
/// checkpoint resume and determinism.
pub fn resume_bits<O: DslOptimizer<f32> + optim_dsl::Checkpoint<f32>>(
    mut make: impl FnMut() -> O,
    (rows, cols): (usize, usize),
    steps: usize,
    split: Option<usize>,
) -> Vec<u32> {
    let grads = |t: usize| -> (Vec<f32>, Vec<f32>) {
        let w = (0..rows * cols)
            .map(|i| (((i * 7 + t * 3) % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b = (0..cols).map(|i| ((i + t) % 4) as f32 - 1.5).collect();
        (w, b)
    };
    let mut opt = make();
    let (mut w, mut b) = (vec![0.1f32; rows * cols], vec![0.0f32; cols]);
    for t in 0..steps {
        if Some(t) == split {
            let bytes = opt.to_checkpoint_bytes(None).unwrap();
            opt = make();
            opt.load_checkpoint_bytes(&bytes, None).unwrap();
        }
        let (gw, gb) = grads(t);
        opt.update_slices(&mut [
            crate::params::slice("w", &[rows, cols], &mut w, &gw),
            crate::params::slice("b", &[cols], &mut b, &gb),
        ])
        .unwrap();
    }
    w.iter().chain(&b).map(|x| x.to_bits()).collect()
}

/// The largest `|a - b|` over the elements of two parameter sets (tensor by tensor,
/// element by element), in `f64` (0 for empty sets).
pub fn max_gap<E: Copy + Into<f64>>(a: &[Vec<E>], b: &[Vec<E>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(&x, &y)| (x.into() - y.into()).abs())
        .fold(0.0, f64::max)
}

/// The largest `|got[i] - want[i]|`, in `f64` (0 for empty slices).
pub fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max)
}
