// Flags (`bool` hyperparameters, specialised at compile time) passed to `momentum`'s
// `nesterov`, used in `select` and in the flag shorthand (`momentum(g, beta, nesterov)`), and a
// per-step `select` on a comparison. Must compile; flipping a flag at run time with
// `set_maximize` must change the direction of the step.
use optim_dsl::prelude::*;

optimizer! {
    /// Momentum SGD with the usual flags.
    pub Flagged<lr = 0.1, beta = 0.5, nesterov = false, maximize = false> {
        let g = select(maximize, -grad, grad);
        let m = momentum(g, beta, nesterov);
        param -= lr * select(step > 1.0, m, g);
    }
}

fn main() {
    let mut opt = Flagged::<f32>::default();
    let mut p = vec![1.0f32, 1.0];
    let g = [1.0f32, 1.0];
    opt.update_slices(&mut [ParamSlice { name: "p", shape: &[2], param: &mut p, grad: &g }]).unwrap();
    assert!((p[0] - 0.9).abs() < 1e-6, "p = {p:?}");

    opt.set_maximize(true);
    opt.update_slices(&mut [ParamSlice { name: "p", shape: &[2], param: &mut p, grad: &g }]).unwrap();
    assert!(p[0] > 0.9, "maximize must move p up, p = {p:?}");

    let nesterov = Flagged::<f32>::default().with_nesterov(true);
    assert!(nesterov.config().nesterov);
}
