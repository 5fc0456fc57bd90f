// A misspelt builtin name, `gard` for `grad`. We want "cannot find `gard` in this optimizer"
// with "did you mean `grad`?", underlining `gard`, and nothing else.
use optim_dsl::prelude::*;

optimizer! {
    Sgd<lr = 0.1> {
        param -= lr * gard;
    }
}

fn main() {}
