// `batch = k` (leading batch axes of a matrix word) is a whole-number literal, in a rule that
// receives only matrices and tensors; `kfac_precondition` takes no batch axes (its factors are
// supplied per parameter) and `rotate` takes its batch axes from its eigenbasis. Each mistake is
// reported at its token.
use optim_dsl::prelude::*;

optimizer! {
    pub BadBatch<lr = 0.02, heads = 4.0> {
        tensor => {
            let o1 = orthogonalize(grad, batch = heads);
            let o2 = orthogonalize(grad, batch = 1.0);
            let o3 = orthogonalize(grad, batch = -1);
            let o4 = kfac_precondition(grad, batch = 1);
            let q = kron_eigenbasis(grad, 0.9, batch = 1);
            let o5 = rotate(grad, q, batch = 1);
            param -= lr * (o1 + o2 + o3 + o4 + o5);
        }
        _ => {
            let v = factored_second_moment(grad, 0.9, batch = 1);
            param -= lr * grad / sqrt(v + 1e-30);
        }
    }
}

fn main() {}
