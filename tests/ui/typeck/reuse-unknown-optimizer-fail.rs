// A reuse rule that names an optimizer that does not exist (`AdamX`). We want rustc's
// "cannot find type" error underlining `AdamX` in the rule (for `AdamXConfig`/`AdamX`), with as
// few follow-on errors as possible.
use optim_dsl::prelude::*;

optimizer! {
    Mixed<lr = 0.1> {
        matrix => {
            param -= lr * grad;
        }
        _ => AdamX<lr = lr>,
    }
}

fn main() {}
