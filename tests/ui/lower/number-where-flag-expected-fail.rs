// A numeric hyperparameter passed where a flag is expected, `nesterov = lr`. Flags choose code
// at compile time, so they must be `true`, `false` or a flag hyperparameter. We want one error
// on `lr` saying `nesterov` expects a flag and that `lr` has a numeric default.
use optim_dsl::prelude::*;

optimizer! {
    Heavy<lr = 0.1, beta = 0.9> {
        let m = momentum(grad, beta, nesterov = lr);
        param -= lr * m;
    }
}

fn main() {}
