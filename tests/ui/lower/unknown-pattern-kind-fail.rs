// A misspelt parameter kind in a rule pattern, `matrx`. We want "unknown parameter kind
// `matrx`" listing the kinds, with "did you mean `matrix`?", on `matrx` only.
use optim_dsl::prelude::*;

optimizer! {
    Routed<lr = 0.1> {
        matrx => {
            param -= lr * grad;
        }
        _ => {
            param -= 0.5 * lr * grad;
        }
    }
}

fn main() {}
