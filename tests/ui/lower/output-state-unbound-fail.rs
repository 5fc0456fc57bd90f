// `output_state(init)` keeps a value the update does not read, so it must be bound with `let`
// and assigned; used inline it is an error on the call.
use optim_dsl::prelude::*;

optimizer! {
    Averaged<lr = 0.01> {
        param -= lr * grad + 0.0 * output_state(0.0);
    }
}

fn main() {}
