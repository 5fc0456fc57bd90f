// Assigning to the builtin `grad` (`grad += weight_decay * param;`). We want one error on
// `grad` saying it cannot be assigned, suggesting a new binding such as `let g = ...;`.
use optim_dsl::prelude::*;

optimizer! {
    Sgd<lr = 0.1, weight_decay = 0.01> {
        grad += weight_decay * param;
        param -= lr * grad;
    }
}

fn main() {}
