// A syntax error (missing `;`) in an optimizer whose config `main` goes on to build. The fallback
// for unparsable input emits a stub type and config; we want only syn's "expected `;`", with no
// "struct `HeavyConfig` has no field named `lr`" follow-on (the stub should keep the header's
// hyperparameter names when the header itself parsed).
use optim_dsl::prelude::*;

optimizer! {
    pub Heavy<lr = 0.1, beta = 0.9> {
        let m = momentum(grad, beta)
        param -= lr * m;
    }
}

fn main() {
    let config = HeavyConfig { lr: 0.01.into(), ..Default::default() };
    let _ = Heavy::<f32>::new(config);
}
