// An optimizer whose name starts with `__`, the prefix of generated items such as
// `__NameValues`. We want one error on the name.
use optim_dsl::prelude::*;

optimizer! {
    pub __Hidden<lr = 0.1> {
        param -= lr * grad;
    }
}

fn main() {}
