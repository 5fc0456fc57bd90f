// A name used before its `let`: we want one error on the use saying it is used before its
// definition, not a "did you mean" suggestion for some other name.
use optim_dsl::prelude::*;

optimizer! {
    Early<lr = 0.1> {
        param -= lr * update;
        let update = sign(grad);
    }
}

fn main() {}
