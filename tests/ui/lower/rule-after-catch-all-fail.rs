// A rule after the catch-all `_`: it can never match. We want one "unreachable rule" error on
// the late rule's pattern (`matrix`), not on the catch-all.
use optim_dsl::prelude::*;

optimizer! {
    Routed<lr = 0.1> {
        _ => {
            param -= lr * grad;
        }
        matrix => {
            param -= 0.5 * lr * grad;
        }
    }
}

fn main() {}
