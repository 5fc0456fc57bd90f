// `update` of `psgd_precondition` decides once per step whether the preconditioner is fitted.
// A per-element condition cannot do that: we want one error on the condition, naming `update`
// and saying it must be a flag or a per-step condition.
use optim_dsl::prelude::*;

optimizer! {
    Psgd<lr = 0.01> {
        let p = psgd_precondition(grad, update = grad > 0.0);
        param -= lr * p;
    }
}

fn main() {}
