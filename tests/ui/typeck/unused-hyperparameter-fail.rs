// A hyperparameter and a flag declared in the header but never used by any rule. With
// `unused_variables` denied, we want rustc's lint on each of them, at the header's names.
#![deny(unused_variables)]
use optim_dsl::prelude::*;

optimizer! {
    Declared<lr = 0.1, momentum = 0.9, nesterov = false> {
        param -= lr * grad;
    }
}

fn main() {}
