// A rule that computes an update but never writes `param`. We want one error saying the rule
// never updates `param`, suggesting `param -= lr * update;`, spanning the rule's body.
use optim_dsl::prelude::*;

optimizer! {
    Lazy<lr = 0.1> {
        let m = momentum(grad, 0.9);
        let update = lr * m;
    }
}

fn main() {}
