// A raw Newton–Schulz schedule is a non-empty list of `(a, b, c)` number literals: a pair, an
// array instead of a tuple, a hyperparameter inside a triple and an empty list are each reported
// at their tokens.
use optim_dsl::prelude::*;

optimizer! {
    pub BadTriples<lr = 0.02> {
        matrix => {
            let o1 = orthogonalize(grad, coeffs = [(3.4445, -4.7750, 2.0315), (3.4445, -4.7750)]);
            let o2 = orthogonalize(grad, coeffs = [[3.4445, -4.7750, 2.0315]]);
            let o3 = orthogonalize(grad, coeffs = [(3.4445, -lr, 2.0315)]);
            let o4 = orthogonalize(grad, coeffs = []);
            param -= lr * (o1 + o2 + o3 + o4);
        }
        _ => { param -= lr * grad; }
    }
}

fn main() {}
