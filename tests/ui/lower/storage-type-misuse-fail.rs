// A storage type on a `let`: an unknown type name, and a 16-bit type on a `let` whose value
// creates no state (there is no buffer to store in 16 bits). We want one error on each type.
use optim_dsl::prelude::*;

optimizer! {
    StorageMisuse<lr = 1e-3, beta1 = 0.9> {
        let m: bf8 = momentum(grad, beta1);
        let d: bf16 = 2.0 * grad;
        param -= lr * (m + d);
    }
}

fn main() {}
