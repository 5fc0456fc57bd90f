// Nine per-tensor reductions of values computed in the same loop: one loop accumulates at most
// eight (the executor's fixed buffers), and a ninth would be dropped. We want one error, on the
// ninth reduction's call, saying the loop needs 9 reductions and at most 8 are supported.
use optim_dsl::prelude::*;

optimizer! {
    ManyNorms<lr = 0.1> {
        let s = norm(grad) + norm(2.0 * grad) + norm(3.0 * grad) + norm(4.0 * grad)
            + norm(5.0 * grad) + norm(6.0 * grad) + norm(7.0 * grad) + norm(8.0 * grad)
            + norm(9.0 * grad);
        param -= lr * s * grad;
    }
}

fn main() {}
