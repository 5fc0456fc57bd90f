// `scheduled_decay` misused three ways: the weight decay left out, a flag as the value to decay,
// and a per-element value (`grad`) as the weight decay, which must be a per-step scalar. We want
// the missing argument named with the signature, and each wrong role reported on its argument.
use optim_dsl::prelude::*;

optimizer! {
    Decay<lr = 0.1, weight_decay = 0.01, decay = true> {
        let a = scheduled_decay(param, lr);
        let b = scheduled_decay(decay, lr, weight_decay);
        let c = scheduled_decay(param, lr, grad);
        param = a + b + c;
    }
}

fn main() {}
