// A misspelt named argument, `nesterove = true`. We want "unknown argument `nesterove` for
// `momentum`" listing the named arguments it takes, with "did you mean `nesterov`?",
// underlining `nesterove` only.
use optim_dsl::prelude::*;

optimizer! {
    Heavy<lr = 0.1> {
        let m = momentum(grad, 0.9, nesterove = true);
        param -= lr * m;
    }
}

fn main() {}
