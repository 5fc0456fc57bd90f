//! A matrix primitive's pre-step check (`MatrixWord::check`) sees the configuration the step
//! will use, built from the user's hyperparameter values, not the config's defaults: a value
//! the primitive refuses is an error before anything is written.

use optim_dsl::prelude::*;
use optim_tests::params::slice;

optimizer! {
    /// Muon-like, with the Newton–Schulz `eps` from a hyperparameter whose domain (any finite
    /// number) is wider than `orthogonalize` accepts (`>= 0`).
    NsEps<lr = 0.1, ns_eps = 0.0, scale_eps = false> {
        matrix => {
            let e = select(scale_eps, ns_eps * cols, ns_eps);
            param -= lr * orthogonalize(grad, eps = e);
        }
        _ => {
            param -= lr * grad;
        }
    }
}

fn step(opt: &mut NsEps<f64>, p: &mut [f64]) -> Result<(), OptimError> {
    let g = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    opt.update_slices(&mut [slice("w", &[2, 3], p, &g)])
}

#[test]
fn a_user_value_the_primitive_refuses_is_an_error_before_the_step() {
    for scale in [false, true] {
        // the default (eps = 0) is valid: the step runs
        let mut opt = NsEps::<f64>::default().with_scale_eps(scale);
        let mut p = [0.0; 6];
        step(&mut opt, &mut p).unwrap();
        assert!(p.iter().all(|x| *x != 0.0));

        // eps = -1 (or -1 * cols) is in the hyperparameter's domain but not orthogonalize's
        let mut opt = NsEps::<f64>::default()
            .with_scale_eps(scale)
            .with_ns_eps(-1.0)
            .unwrap();
        let mut p = [0.5; 6];
        let err = step(&mut opt, &mut p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape mismatch for parameter `w`: `orthogonalize` on parameter `w` of shape [2, 3]: \
             eps must be finite and >= 0",
            "scale_eps = {scale}"
        );
        assert_eq!(p, [0.5; 6], "nothing written");
        assert!(opt.state().params.is_empty(), "no state created");
        assert_eq!(opt.state().step, 0, "the step did not advance");
    }
}
