// Three independent mistakes in one body (`momentun`, `gard`, `epss`). Lowering keeps going
// after an error, so we want all three reported at once, each on its own token, and nothing
// else.
use optim_dsl::prelude::*;

optimizer! {
    Typos<lr = 0.1, eps = 1e-8> {
        let m = momentun(grad, 0.9);
        let v = second_moment(gard, 0.999);
        param -= lr * m / (sqrt(v) + epss);
    }
}

fn main() {}
