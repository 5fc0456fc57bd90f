// A rule that reads seven flags: each flag combination is compiled into its own kernel, so at
// most six are allowed. We want one error saying the rule reads 7 flags and at most 6 are
// supported.
use optim_dsl::prelude::*;

optimizer! {
    Flags<lr = 0.1, a = false, b = false, c = false, d = false, e = false, f = false, g = false> {
        let x = select(a, -grad, grad);
        let x = select(b, 2.0 * x, x);
        let x = select(c, 3.0 * x, x);
        let x = select(d, 4.0 * x, x);
        let x = select(e, 5.0 * x, x);
        let x = select(f, 6.0 * x, x);
        let x = select(g, 7.0 * x, x);
        param -= lr * x;
    }
}

fn main() {}
