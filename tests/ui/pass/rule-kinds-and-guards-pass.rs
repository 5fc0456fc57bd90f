// Every pattern kind and guard form: `matrix if name.contains(...)`, a shape comparison,
// `vector | scalar` alternatives, `tensor`, negation and `||` in guards, and the catch-all.
// Must compile; one step over five parameters must route each to the expected rule (each rule
// scales the step differently, so the new values identify the rule).
use optim_dsl::prelude::*;

optimizer! {
    /// One rule per parameter kind.
    pub Router<lr = 0.1> {
        matrix if name.contains("embed") => {
            param -= 1.0 * lr * grad;
        }
        matrix if rows >= 4 && !(name == "skip" || name.ends_with("_frozen")) => {
            param -= 2.0 * lr * grad;
        }
        vector | scalar => {
            param -= 3.0 * lr * grad;
        }
        tensor if fan_in > 1 => {
            param -= 4.0 * lr * grad;
        }
        _ => {
            param -= 5.0 * lr * grad;
        }
    }
}

fn step(opt: &mut Router<f32>, name: &str, shape: &[usize]) -> f32 {
    let n: usize = shape.iter().product();
    let mut p = vec![0.0f32; n];
    let g = vec![1.0f32; n];
    opt.update_slices(&mut [ParamSlice { name, shape, param: &mut p, grad: &g }]).unwrap();
    p[0]
}

fn main() {
    let mut opt = Router::<f32>::default();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(close(step(&mut opt, "token_embed", &[8, 2]), -0.1));
    assert!(close(step(&mut opt, "dense", &[4, 2]), -0.2));
    assert!(close(step(&mut opt, "bias", &[3]), -0.3));
    assert!(close(step(&mut opt, "scale", &[]), -0.3));
    assert!(close(step(&mut opt, "conv", &[2, 3, 3, 3]), -0.4));
    assert!(close(step(&mut opt, "small", &[2, 2]), -0.5));
    assert_eq!(opt.explain().rules.len(), 5);
}
