// `rotate` and `unrotate` take an eigenbasis made by `kron_eigenbasis(grad, beta)`; any other
// value is rejected on that argument.
use optim_dsl::prelude::*;

optimizer! {
    Rot<lr = 0.01> {
        let m = momentum(grad, 0.9);
        param -= lr * rotate(grad, m);
    }
}

fn main() {}
