// `momentum` called without its required `beta`. We want one error saying `momentum` takes 2
// positional arguments and found 1, showing its signature, on the call.
use optim_dsl::prelude::*;

optimizer! {
    Heavy<lr = 0.1> {
        let m = momentum(grad);
        param -= lr * m;
    }
}

fn main() {}
