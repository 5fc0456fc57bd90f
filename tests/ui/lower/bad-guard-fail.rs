// Rule guards the router cannot evaluate: a misspelt method on `name` (`contans`), a
// hyperparameter compared in a guard (`lr`), and a guard that is not a condition at all.
// We want one error per guard: on `contans` (did you mean `contains`?), on `lr` (lists the
// shape names a guard may use), and on the unsupported expression (lists supported guards).
use optim_dsl::prelude::*;

optimizer! {
    Guarded<lr = 0.1> {
        matrix if name.contans("embed") => {
            param -= lr * grad;
        }
        matrix if rows > lr => {
            param -= 0.5 * lr * grad;
        }
        vector if numel => {
            param -= 0.25 * lr * grad;
        }
        _ => {
            param -= 0.1 * lr * grad;
        }
    }
}

fn main() {}
