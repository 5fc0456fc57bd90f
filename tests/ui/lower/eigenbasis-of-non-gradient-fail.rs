// `kron_eigenbasis` accumulates statistics of the gradient itself; passing another value is
// an error on that value. Using the basis as a number is an error too.
use optim_dsl::prelude::*;

optimizer! {
    Basis<lr = 0.01> {
        let m = momentum(grad, 0.9);
        let q = kron_eigenbasis(m, 0.95);
        param -= lr * unrotate(rotate(m, q), q) * q;
    }
}

fn main() {}
