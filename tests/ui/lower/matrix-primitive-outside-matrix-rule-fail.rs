// `orthogonalize` needs the parameter as a matrix. In a rule that can also receive vectors and
// scalars (here the implicit catch-all of a plain body) it is rejected on the call, with a hint
// to move it into a `matrix => { ... }` rule.
use optim_dsl::prelude::*;

optimizer! {
    Ortho<lr = 0.02> {
        let m = momentum(grad, 0.95);
        param -= lr * orthogonalize(m);
    }
}

fn main() {}
