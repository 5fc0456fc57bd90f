// A hyperparameter named `config` (and one starting with `__`): the setter `set_config` would
// clash with the optimizer's own `set_config`, and `__` names are reserved for generated items.
// We want one error on each name.
use optim_dsl::prelude::*;

optimizer! {
    pub Clash<lr = 0.1, config = 1.0, __hidden = 2.0> {
        param -= lr * config * __hidden * grad;
    }
}

fn main() {}
