// An optimizer named `E`: the generated type is generic over its element type `E`, so
// `E<E = f32>` would shadow its own parameter. We want one error on the name saying `E` cannot
// name an optimizer.
use optim_dsl::prelude::*;

optimizer! {
    pub E<lr = 0.1> {
        param -= lr * grad;
    }
}

fn main() {}
