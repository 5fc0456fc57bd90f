// `row_mean` of a per-step value (a hyperparameter): an axis reduction needs a per-element
// value. And a per-row value where a per-step scalar is required (a beta). We want one error
// on each call.
use optim_dsl::prelude::*;

optimizer! {
    RowMisuse<lr = 0.1, beta = 0.9> {
        let r = row_mean(lr);
        let m = momentum(grad, row_mean(grad));
        param -= lr * (m + r);
    }
}

fn main() {}
