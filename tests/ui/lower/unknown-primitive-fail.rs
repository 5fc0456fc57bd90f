// A misspelt primitive, `momentun(...)`. We want "unknown primitive `momentun`" with
// "did you mean `momentum`?", underlining `momentun` only, and nothing else.
use optim_dsl::prelude::*;

optimizer! {
    Heavy<lr = 0.1> {
        let m = momentun(grad, 0.9);
        param -= lr * m;
    }
}

fn main() {}
