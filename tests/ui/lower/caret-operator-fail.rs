// `^` used as a power operator (`grad ^ 2`), which in Rust is xor. We want one error on `^`
// saying it is unsupported and suggesting `pow(a, b)`.
use optim_dsl::prelude::*;

optimizer! {
    Squared<lr = 0.1> {
        let v = ema(grad ^ 2, 0.99);
        param -= lr * grad / (sqrt(v) + 1e-8);
    }
}

fn main() {}
