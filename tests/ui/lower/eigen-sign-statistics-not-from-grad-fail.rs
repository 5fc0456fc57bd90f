// `eigen_sign` takes the Gram statistics of its bases from the raw gradient (its second
// argument); passing the momentum there is an error on that argument, saying to pass `grad`.
use optim_dsl::prelude::*;

optimizer! {
    SignBasis<lr = 0.01> {
        matrix => {
            let m = momentum(grad, 0.9);
            param -= lr * eigen_sign(m, m, 0.999);
        }
        _ => { param -= lr * grad; }
    }
}

fn main() {}
