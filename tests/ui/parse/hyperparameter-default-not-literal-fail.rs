// A hyperparameter default that is an expression, not a literal (`lr = 1.0 / 3.0` would need
// evaluation; `lr = base` names another value). We want one error on the first offending
// token saying that a literal number, `true` or `false` is expected.
use optim_dsl::prelude::*;

optimizer! {
    Sgd<lr = base> {
        param -= lr * grad;
    }
}

fn main() {}
