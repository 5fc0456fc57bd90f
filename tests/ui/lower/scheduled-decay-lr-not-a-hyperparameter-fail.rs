// `scheduled_decay` given an expression (`0.5 * lr`) and the step count as its learning rate. Its
// multiplier is `eta_t = lr_t / peak(lr)`, which needs the schedule of a hyperparameter, not a
// value. We want one error on each `lr` argument saying it must name a numeric hyperparameter
// and pointing to `decoupled_decay` for a fixed multiplier.
use optim_dsl::prelude::*;

optimizer! {
    Decay<lr = 0.1, weight_decay = 0.01> {
        let p = scheduled_decay(param, 0.5 * lr, weight_decay);
        param = scheduled_decay(p, step, weight_decay);
    }
}

fn main() {}
