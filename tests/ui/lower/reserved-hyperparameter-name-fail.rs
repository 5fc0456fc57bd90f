// A hyperparameter named like a builtin (`step`), and a `let` that rebinds a builtin (`grad`).
// We want one error on each name: `step` is reserved and cannot be a hyperparameter, and
// `grad` is a builtin and cannot be rebound.
use optim_dsl::prelude::*;

optimizer! {
    Clash<lr = 0.1, step = 1.0> {
        let grad = grad * 2.0;
        param -= lr * grad;
    }
}

fn main() {}
