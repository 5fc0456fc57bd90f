// `low_rank_orthonormalize` (Dion) works on the parameter as a matrix. In a plain body, which
// also receives vectors and scalars, it is rejected on the call with a hint to move it into a
// `matrix => { ... }` rule.
use optim_dsl::prelude::*;

optimizer! {
    LowRank<lr = 0.01, mu = 0.95> {
        param -= lr * low_rank_orthonormalize(grad, mu);
    }
}

fn main() {}
