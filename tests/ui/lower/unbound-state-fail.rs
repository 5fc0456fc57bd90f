// `state(...)` used inside an expression instead of being bound with `let`: it could never be
// assigned. We want one error on `state` saying to bind it with `let name = state(init);`.
use optim_dsl::prelude::*;

optimizer! {
    Inline<lr = 0.1> {
        param -= lr * (grad + state(0.0));
    }
}

fn main() {}
