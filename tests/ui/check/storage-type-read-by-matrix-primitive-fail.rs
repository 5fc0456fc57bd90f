// A 16-bit state read by a matrix primitive: matrix primitives read full-precision buffers, so
// `orthogonalize` of a `bf16` momentum is refused. We want the error on the stateful word.
use optim_dsl::prelude::*;

optimizer! {
    LowMuon<lr = 0.02, mu = 0.95> {
        matrix => {
            let m: bf16 = momentum(grad, mu);
            param -= lr * orthogonalize(m);
        }
        _ => {
            param -= lr * grad;
        }
    }
}

fn main() {}
