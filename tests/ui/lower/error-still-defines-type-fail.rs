// A lowering error (`momentun`) in an optimizer that `main` goes on to use: `Name::default()`,
// `NameConfig { .. }`, `Name::new`, the `DslOptimizer` methods. The fallback defines stub items
// under the declared names, so the only error must be the real one, with no "cannot find type
// `Heavy`" or missing-method follow-ons.
use optim_dsl::prelude::*;

optimizer! {
    pub Heavy<lr = 0.1, beta = 0.9, nesterov = false> {
        let m = momentun(grad, beta, nesterov = nesterov);
        param -= lr * m;
    }
}

fn main() {
    let config = HeavyConfig { lr: 0.01.into(), nesterov: true, ..Default::default() };
    let mut opt = Heavy::<f32>::new(config).unwrap();
    let mut w = vec![1.0f32, 2.0];
    let g = [0.5f32, 0.5];
    opt.update_slices(&mut [ParamSlice { name: "w", shape: &[2], param: &mut w, grad: &g }]).unwrap();
    let _plan: Plan = opt.explain();
    let _ = Heavy::<f64>::default();
}
