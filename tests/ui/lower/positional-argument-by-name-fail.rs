// `beta` is a positional argument of `momentum`. Writing it by name gets one error that says
// so and shows the signature, not a second "takes 2 positional arguments" error.
use optim_dsl::prelude::*;

optimizer! {
    pub Named<lr = 0.1> {
        let m = momentum(grad, beta = 0.9);
        param -= lr * m;
    }
}

fn main() {}
