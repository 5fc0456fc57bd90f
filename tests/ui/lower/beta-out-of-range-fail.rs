// A literal EMA coefficient outside [0, 1), `momentum(grad, 1.5)`. We want "`beta` of
// `momentum` must be in [0, 1), found 1.5" on the literal `1.5`.
use optim_dsl::prelude::*;

optimizer! {
    Heavy<lr = 0.1> {
        let m = momentum(grad, 1.5);
        param -= lr * m;
    }
}

fn main() {}
