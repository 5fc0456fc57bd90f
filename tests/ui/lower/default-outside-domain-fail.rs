// Header defaults outside their hyperparameter's domain: `beta1 = 1.2` (an EMA coefficient,
// [0, 1)), `eps = 0.0` (must be > 0) and `lr = -1.0` (must be >= 0). We want three errors,
// one per default, each naming the hyperparameter and its domain, on the literal.
use optim_dsl::prelude::*;

optimizer! {
    BadDefaults<lr = -1.0, beta1 = 1.2, eps = 0.0> {
        let m = momentum(grad, beta1);
        param -= lr * m / (abs(m) + eps);
    }
}

fn main() {}
