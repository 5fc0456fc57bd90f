// A `select` whose second branch is a condition (`grad > 1.0`) while the first is a number.
// We want one error, on `grad > 1.0`, saying `b` of `select` expects a number, and not a second
// error about the branches on `select` itself.
use optim_dsl::prelude::*;

optimizer! {
    Clip<lr = 0.1> {
        param -= lr * select(grad > 0.0, grad, grad > 1.0);
    }
}

fn main() {}
