// A per-element value where a per-step scalar is required: `momentum(grad, grad)` uses the
// gradient as the EMA coefficient. We want one error on the second `grad` saying `beta` must
// be a per-step scalar.
use optim_dsl::prelude::*;

optimizer! {
    Heavy<lr = 0.1> {
        let m = momentum(grad, grad);
        param -= lr * m;
    }
}

fn main() {}
