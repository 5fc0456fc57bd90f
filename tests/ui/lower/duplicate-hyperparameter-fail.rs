// The same hyperparameter declared twice in the header. We want one "duplicate hyperparameter
// `lr`" error on the second `lr`, and no further errors.
use optim_dsl::prelude::*;

optimizer! {
    Sgd<lr = 0.1, momentum = 0.9, lr = 0.01> {
        let m = momentum(grad, momentum);
        param -= lr * m;
    }
}

fn main() {}
