// The classic mistake: the gradient is decayed into `g`, and then the update keeps using `grad`.
// With `unused_variables` denied, we want rustc's own lint on the user's `g` (never read) and
// on the header's `weight_decay` (read only by the dead `g`, so it never affects the update).
#![deny(unused_variables)]
use optim_dsl::prelude::*;

optimizer! {
    Forgetful<lr = 0.1, weight_decay = 0.01> {
        let g = grad + l2(weight_decay);
        param -= lr * grad;
    }
}

fn main() {}
