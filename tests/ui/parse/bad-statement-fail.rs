// A bare expression used as a statement (`sqrt(grad);`) instead of `let name = ...;` or an
// update of `param`/a state. We want one error at the statement that lists the accepted
// statement forms.
use optim_dsl::prelude::*;

optimizer! {
    Sgd<lr = 0.1> {
        sqrt(grad);
        param -= lr * grad;
    }
}

fn main() {}
