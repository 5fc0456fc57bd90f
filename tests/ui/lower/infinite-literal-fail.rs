// A number literal that overflows `f64` (`1e400`), in a rule body and in a guard. The macro must
// never panic: we want one error per literal, on the literal, saying it is not a finite number
// (as header defaults already get: "default of `lr` must be a finite value >= 0, found inf").
use optim_dsl::prelude::*;

optimizer! {
    Huge<lr = 0.1> {
        param -= lr * grad * 1e400;
    }
}

optimizer! {
    HugeGuard<lr = 0.1> {
        matrix if rows > 1e400 => {
            param -= lr * grad;
        }
        _ => {
            param -= lr * grad;
        }
    }
}

fn main() {}
