// 8-bit storage on a `let` whose value creates no state (nothing to quantise), a misspelt
// 8-bit type (`u8` is not a storage type; the non-negative map is `uq8`), and `uq8` on a
// per-row state (only per-element states can be stored in low precision). We want one error on
// each type.
use optim_dsl::prelude::*;

optimizer! {
    Q8Misuse<lr = 1e-3, beta2 = 0.999> {
        matrix => {
            let d: q8 = 2.0 * grad;
            let v: u8 = second_moment(grad, beta2);
            let r: uq8 = row_state(0.0);
            r = beta2 * r + (1.0 - beta2) * row_mean(grad * grad);
            param -= lr * (d + v + r);
        }
        _ => {
            param -= lr * grad;
        }
    }
}

fn main() {}
