// An optimizer reused inside another: matrices get a hand-written rule, every other parameter
// is routed to the zoo's `AdamW` with its `lr` bound to a hyperparameter of the outer optimizer
// (`_ => AdamW<lr = adam_lr>,`). Must compile; one step must route each parameter to its rule,
// `explain()` must show the reused plan, and changing `adam_lr` at run time must reach `AdamW`.
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;

optimizer! {
    /// Sign descent on matrices, AdamW elsewhere.
    pub SignOrAdam<lr = 0.02, adam_lr = 0.01> {
        matrix => {
            param -= lr * sign(grad);
        }
        _ => AdamW<lr = adam_lr, weight_decay = 0.0>,
    }
}

fn main() {
    let mut opt = SignOrAdam::<f32>::default();
    let mut w = vec![1.0f32; 6];
    let gw = vec![-3.0f32; 6];
    let mut b = vec![1.0f32; 3];
    let gb = vec![0.5f32; 3];
    opt.update_slices(&mut [
        ParamSlice { name: "w", shape: &[2, 3], param: &mut w, grad: &gw },
        ParamSlice { name: "b", shape: &[3], param: &mut b, grad: &gb },
    ])
    .unwrap();
    assert!((w[0] - 1.02).abs() < 1e-6, "w = {w:?}");
    // Adam's first step moves by about `lr` (m_hat / sqrt(v_hat) = sign(g))
    assert!((b[0] - 0.99).abs() < 1e-5, "b = {b:?}");

    let plan = opt.explain();
    assert_eq!(plan.rules.len(), 2);
    assert!(matches!(&plan.rules[1].body, optim_dsl::RuleBody::Reuse { plan } if plan.optimizer == "AdamW"));

    opt.set_adam_lr(0.0).unwrap();
    opt.update_slices(&mut [ParamSlice { name: "b", shape: &[3], param: &mut b, grad: &gb }]).unwrap();
    assert!((b[0] - 0.99).abs() < 1e-5, "adam_lr = 0 must freeze b, b = {b:?}");
}
