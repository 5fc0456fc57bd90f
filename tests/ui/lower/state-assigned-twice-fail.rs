// A `state(...)` binding assigned twice in one rule; a state is written once per step. We want
// one error on the second assignment's target `s`.
use optim_dsl::prelude::*;

optimizer! {
    Twice<lr = 0.1> {
        let s = state(0.0);
        s = s + grad;
        s = s * 0.5;
        param -= lr * s;
    }
}

fn main() {}
