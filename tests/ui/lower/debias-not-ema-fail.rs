// `debias` applied to a value that is not an EMA (a plain `accumulate` sum). We want one error
// on the argument `s` saying `debias` expects the result of `momentum`, `ema` or
// `second_moment`, and showing the explicit correction.
use optim_dsl::prelude::*;

optimizer! {
    Sum<lr = 0.1> {
        let s = accumulate(grad);
        param -= lr * debias(s);
    }
}

fn main() {}
