// A rule that reuses the optimizer being declared would recurse forever. We want one error
// on the reused name, not rustc's recursion-limit error without a location.
use optim_dsl::prelude::*;

optimizer! {
    pub Loop<lr = 0.1> {
        matrix => { param -= lr * grad; }
        _ => Loop<lr = lr>,
    }
}

fn main() {}
