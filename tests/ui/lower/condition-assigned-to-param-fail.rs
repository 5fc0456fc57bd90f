// A condition assigned to `param` (`param -= grad > 0.0;`, a comparison where a number is
// needed). We want one error on the condition saying it cannot be assigned and suggesting
// `select(cond, a, b)`; the statement still counts as the rule's update of `param`, so there
// must be no "this rule never updates `param`" follow-on.
use optim_dsl::prelude::*;

optimizer! {
    SignStep<lr = 0.1> {
        param -= grad > 0.0;
    }
}

fn main() {}
