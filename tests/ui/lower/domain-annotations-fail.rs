// Explicit domains: an unknown domain name (with a suggestion), a default outside its declared
// domain, a constant beta computed from literals outside [0, 1), and a fractional iteration
// count. Each error sits on the offending token.
use optim_dsl::prelude::*;

optimizer! {
    pub Domains<lr = 0.1, decay: nonnegg = 0.0, steps_k: count = 0.5> {
        matrix => {
            let m = momentum(grad, 2.0 * 0.9);
            param -= lr * orthogonalize(m, steps = 2.5);
        }
        _ => { param -= lr * grad; }
    }
}

fn main() {}
