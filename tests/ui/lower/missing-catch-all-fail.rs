// Routing rules without a final `_ => ...` rule: a vector or scalar parameter would match
// nothing. We want one "missing catch-all rule" error that says to add `_ => { ... }`.
use optim_dsl::prelude::*;

optimizer! {
    MatrixOnly<lr = 0.1> {
        matrix => {
            param -= lr * grad;
        }
    }
}

fn main() {}
