// `param` written by two statements (decay, then step). A rule updates `param` exactly once;
// we want one error on the second `param`, saying to combine the updates.
use optim_dsl::prelude::*;

optimizer! {
    Twice<lr = 0.1, weight_decay = 0.01> {
        param *= 1.0 - lr * weight_decay;
        param -= lr * grad;
    }
}

fn main() {}
