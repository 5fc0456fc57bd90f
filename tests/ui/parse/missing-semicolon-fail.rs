// A statement without its closing `;`. Parsing stops at the first syntax error (syn's
// behaviour), so exactly one error is wanted: syn's "expected `;`", on the token after the
// unterminated statement (`param`), and no follow-on errors where `Sgd` is used.
use optim_dsl::prelude::*;

optimizer! {
    Sgd<lr = 0.1> {
        let g = grad
        param -= lr * g;
    }
}

fn main() {
    let _ = Sgd::<f32>::default();
}
