// Two optimizers declared in one `optimizer!` invocation. We want one error on the first token
// after the first optimizer's body (`B`) saying to declare one optimizer per `optimizer!`.
use optim_dsl::prelude::*;

optimizer! {
    A<lr = 0.1> {
        param -= lr * grad;
    }
    B<lr = 0.1> {
        param -= lr * grad;
    }
}

fn main() {}
