//! Element-wise words added after the zoo, each against hand-computed values through a DSL
//! optimizer (the slice path).

use optim_dsl::prelude::*;
use optim_tests::params::slice;

optimizer! {
    /// Sign descent with a smooth sign.
    SoftSignSgd<lr = 0.5> {
        param -= lr * softsign(grad);
    }
}

#[test]
fn softsign_is_x_over_one_plus_abs_x() {
    let mut opt = SoftSignSgd::<f64>::default();
    let grad = [0.0, 1.0, -3.0, 0.25, -0.0, f64::INFINITY];
    let mut p = [1.0; 6];
    opt.update_slices(&mut [slice("w", &[6], &mut p, &grad)])
        .unwrap();
    // softsign: 0, 1/2, -3/4, 0.25/1.25 = 1/5, -0, inf/inf = NaN; p = 1 - 0.5 * softsign
    assert_eq!(&p[..5], &[1.0, 0.75, 1.375, 0.9, 1.0]);
    assert!(p[5].is_nan());
    let plan = opt.explain();
    assert_eq!(plan.kernel_count(), 1, "softsign fuses into the one loop");
}
