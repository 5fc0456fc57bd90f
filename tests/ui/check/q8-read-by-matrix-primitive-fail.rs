// An 8-bit state read by a matrix primitive: matrix primitives read full-precision buffers, so
// `orthogonalize` of a `q8` momentum is refused. We want the error on the stateful word, saying
// 8 bits.
use optim_dsl::prelude::*;

optimizer! {
    Q8Muon<lr = 0.02, mu = 0.95> {
        matrix => {
            let m: q8 = momentum(grad, mu);
            param -= lr * orthogonalize(m);
        }
        _ => {
            param -= lr * grad;
        }
    }
}

fn main() {}
