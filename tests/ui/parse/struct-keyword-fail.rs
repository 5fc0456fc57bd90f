// An optimizer declared with Rust's `struct` keyword (`pub struct Name<...>`). We want one
// error on `struct` saying to leave it out, and no follow-on errors where the type is used
// (the fallback finds the name after `struct`).
use optim_dsl::prelude::*;

optimizer! {
    pub struct Sgd<lr = 0.1> {
        param -= lr * grad;
    }
}

fn main() {
    let _ = Sgd::<f32>::default();
}
