//! The executor's contracts that the generated code relies on: per-tensor reductions summed in
//! fixed chunks in a fixed order (so a tensor's norm does not depend on the step's other
//! parameters or on the thread count — what data-parallel training needs for bit-identical
//! results), and the matrix primitives' diagnostics reaching the parameter's state through the
//! one generic barrier path.

use optim_dsl::zoo::{Lamb, Shampoo};
use optim_dsl::DslOptimizer;
use optim_tests::params::slice;

use crate::common::on_threads;

/// 50,000 elements: more than one 32 Ki chunk, fewer than the 64 Ki elements above which a
/// step runs on the thread pool.
const N: usize = 50_000;

fn data(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 * 0.618_033_988_7 + seed).sin() * 1.7 + 0.3) * (1.0 + (i % 7) as f64))
        .collect()
}

/// LAMB's trust ratio needs two norms of the parameter's update; run three steps on `w` alone
/// or together with another large tensor, on a pool of `threads` threads.
fn lamb_w(with_other: bool, threads: usize) -> Vec<f64> {
    on_threads(threads, || {
        let mut opt = Lamb::<f64>::default();
        let mut w = data(N, 0.1);
        let mut other = data(N, 2.0);
        for step in 0..3 {
            let gw = data(N, 1.0 + step as f64);
            let go = data(N, 5.0 + step as f64);
            let mut params = vec![slice("w", &[N], &mut w, &gw)];
            if with_other {
                params.push(slice("other", &[N], &mut other, &go));
            }
            opt.update_slices(&mut params).unwrap();
        }
        w
    })
}

#[test]
fn per_tensor_reductions_do_not_depend_on_other_parameters_or_threads() {
    // alone: 50,000 elements run on the calling thread; with the other tensor the step has
    // 100,000 elements and runs chunked on the pool; with one thread, everything is inline
    let alone = lamb_w(false, 2);
    let with_other = lamb_w(true, 2);
    let one_thread = lamb_w(true, 1);
    assert!(alone.iter().all(|v| v.is_finite()));
    for (what, got) in [
        ("with another tensor", &with_other),
        ("on one thread", &one_thread),
    ] {
        let differ = alone
            .iter()
            .zip(got.iter())
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{what}: {differ} elements differ from the tensor alone"
        );
    }
}

#[test]
fn kronecker_diagnostics_reach_the_parameter_state() {
    // Shampoo without grafting on a 3 x 2 matrix, roots refreshed every step: three steps, the
    // last with a NaN gradient. Documented behaviour of `kron_precondition`: a non-finite
    // gradient is kept out of both sides' statistics (2 skipped inputs) and each step refreshes
    // both inverse roots (2 x 3 = 6 refreshes), none refused.
    let mut opt = Shampoo::<f64>::default().with_graft(false);
    let mut w = vec![0.5, -0.25, 1.0, 0.75, -1.5, 0.125];
    for step in 0..3 {
        let mut g: Vec<f64> = (0..6)
            .map(|i| (i as f64 - 2.5) * (step + 1) as f64)
            .collect();
        if step == 2 {
            g[3] = f64::NAN;
        }
        opt.update_slices(&mut [slice("w", &[3, 2], &mut w, &g)])
            .unwrap();
    }
    let stats = opt.state().param("w").unwrap().matrix;
    assert_eq!(stats.skipped_inputs, 2);
    assert_eq!(stats.refreshes, 6);
    assert_eq!(stats.failed_refreshes, 0);
}
