// Explicit `state(...)` bindings updated with `=` and `+=`, a per-element initial value,
// `accumulate`, and the per-parameter scalar state `cumprod`. Must compile; two steps must give
// the values computed by hand.
use optim_dsl::prelude::*;

optimizer! {
    /// Accumulated gradient, scaled by a decaying product.
    pub Stateful<lr = 1.0, decay = 0.5> {
        let total = state(0.0);
        total += grad;
        let last = state(grad);
        let prev = last;
        last = grad;
        let sq = accumulate(grad * grad, init = 1.0);
        let c = cumprod(decay);
        param -= lr * c * total + 0.0 * prev * sq;
    }
}

fn main() {
    let mut opt = Stateful::<f64>::default();
    let mut p = vec![0.0f64];
    let g = [1.0f64];
    opt.update_slices(&mut [ParamSlice { name: "p", shape: &[], param: &mut p, grad: &g }]).unwrap();
    // step 1: total = 1, c = 0.5
    assert!((p[0] + 0.5).abs() < 1e-12, "p = {p:?}");
    opt.update_slices(&mut [ParamSlice { name: "p", shape: &[], param: &mut p, grad: &g }]).unwrap();
    // step 2: total = 2, c = 0.25
    assert!((p[0] + 1.0).abs() < 1e-12, "p = {p:?}");
    assert_eq!(opt.explain().kernel_count(), 1);
}
