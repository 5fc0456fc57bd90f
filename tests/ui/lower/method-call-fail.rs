// Method-call syntax, `grad.sqrt()`. The DSL has function-call primitives only; we want one
// error on `sqrt` saying method calls are not supported and suggesting `sqrt(x)`.
use optim_dsl::prelude::*;

optimizer! {
    Root<lr = 0.1> {
        param -= lr * grad.sqrt();
    }
}

fn main() {}
