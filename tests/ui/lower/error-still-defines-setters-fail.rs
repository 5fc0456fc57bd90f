// After a lowering error (`momentun`), code that calls the generated inherent methods
// (`set_lr`, `set_nesterov`, `with_lr`, `config`, `state`) must not add errors: the fallback
// stub should define them too, so the only error is the real one.
use optim_dsl::prelude::*;

optimizer! {
    pub Heavy<lr = 0.1, nesterov = false> {
        let m = momentun(grad, 0.9, nesterov = nesterov);
        param -= lr * m;
    }
}

fn main() {
    let mut opt = Heavy::<f32>::default();
    opt.set_lr(0.2).unwrap();
    opt.set_nesterov(true);
    let opt = opt.with_lr(0.3).unwrap();
    let _ = opt.config();
    let _ = opt.state();
}
