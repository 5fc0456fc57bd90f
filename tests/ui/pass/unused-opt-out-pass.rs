// What is not reported as unused, with `unused_variables` denied: a binding named `_...` (the
// opt-out, as in Rust), and a binding used under only one combination of the flags (`vmax`,
// only when `amsgrad` is on). The optimizer must compile and step.
#![deny(unused_variables)]
use optim_dsl::prelude::*;

optimizer! {
    Careful<lr = 0.1, beta2 = 0.999, amsgrad = false> {
        let _probe = grad * grad;
        let v = second_moment(grad, beta2);
        let vmax = running_max(v);
        param -= lr * grad / (sqrt(select(amsgrad, vmax, v)) + 1e-8);
    }
}

fn main() {
    let mut opt = Careful::<f64>::default();
    let mut p = [1.0];
    opt.update_slices(&mut [ParamSlice { name: "w", shape: &[1], param: &mut p, grad: &[0.5] }])
        .unwrap();
    assert!(p[0] < 1.0);
}
