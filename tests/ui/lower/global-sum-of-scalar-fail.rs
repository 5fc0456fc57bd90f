// `global_sum` of a per-step value (a hyperparameter) and of its own result: a global reduction
// sums a per-element value over every parameter. We want one error on each call.
use optim_dsl::prelude::*;

optimizer! {
    GlobalSumMisuse<lr = 0.1> {
        let a = global_sum(lr);
        let b = global_sum(global_sum(grad));
        param -= lr * (grad + a + b);
    }
}

fn main() {}
