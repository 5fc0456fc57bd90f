// A reuse rule that binds a flag hyperparameter to a numeric field (`lr = fast`) and a number to
// a flag field (`amsgrad = lr`). rustc rejects the types; we want each error to underline the
// bound value in the rule (`fast`, then `lr`), not the header declaration or the whole macro.
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;

optimizer! {
    Mixed<lr = 0.1, fast = true> {
        matrix => {
            param -= lr * grad;
        }
        _ => AdamW<lr = fast, amsgrad = lr>,
    }
}

fn main() {}
