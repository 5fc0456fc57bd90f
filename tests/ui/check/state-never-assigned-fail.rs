// A `state(...)` binding that is read but never assigned would keep its initial value forever.
// We want one error at the `state(...)` call saying state `buf` is never assigned, suggesting
// `buf = ...;` or a plain `let`.
use optim_dsl::prelude::*;

optimizer! {
    Frozen<lr = 0.1> {
        let buf = state(0.0);
        param -= lr * (grad + buf);
    }
}

fn main() {}
