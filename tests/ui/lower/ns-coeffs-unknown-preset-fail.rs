// `orthogonalize(x, coeffs = …)` takes a Newton–Schulz preset by name or a literal list of
// triples. A misspelt preset gets a suggestion; a hyperparameter is refused (a schedule is fixed
// at compile time) with the way to pass one triple by hyperparameters; any other expression is
// refused with the two accepted forms; `coeffs` together with `a`/`b`/`c` is ambiguous.
use optim_dsl::prelude::*;

optimizer! {
    pub BadPresets<lr = 0.02, ns = 3.0> {
        matrix => {
            let o1 = orthogonalize(grad, coeffs = polar_expres);
            let o2 = orthogonalize(grad, coeffs = ns);
            let o3 = orthogonalize(grad, coeffs = 2.0 * lr);
            let o4 = orthogonalize(grad, coeffs = keller, a = 3.0);
            param -= lr * (o1 + o2 + o3 + o4);
        }
        _ => { param -= lr * grad; }
    }
}

fn main() {}
