// A reuse rule that binds a field the reused optimizer does not have (`lrr` for `AdamW`'s `lr`).
// The macro leaves this to rustc: we want rustc's "no field `lrr`" error underlining `lrr` in
// the rule, not a span inside the generated code or on the whole macro call.
use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;

optimizer! {
    Mixed<lr = 0.1> {
        matrix => {
            param -= lr * grad;
        }
        _ => AdamW<lrr = 0.1>,
    }
}

fn main() {}
