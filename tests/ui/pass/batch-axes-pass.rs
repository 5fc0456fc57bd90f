// Batch axes on every matrix word that takes them, in `matrix` and `tensor` rules; a reused
// rule and `batch = 0` (no batch axes) compile too.
use optim_dsl::prelude::*;

optimizer! {
    pub Batched<lr = 0.02, beta = 0.9> {
        tensor => {
            let q = kron_eigenbasis(grad, beta, batch = 1);
            let a = unrotate(rotate(grad, q), q);
            let b = orthogonalize(grad, batch = 2, coeffs = polar_express);
            let c = kron_precondition(grad, batch = 1);
            let d = factored_second_moment(grad, beta, batch = 1);
            let e = eigen_sign(grad, grad, beta, batch = 1);
            let f = psgd_precondition(grad, batch = 1);
            let g = low_rank_orthonormalize(grad, beta, batch = 1);
            param -= lr * (a + b + c + d + e + f + g);
        }
        matrix => { param -= lr * orthogonalize(grad, batch = 0); }
        _ => { param -= lr * grad; }
    }
}

fn main() {
    let _ = Batched::<f32>::default();
}
