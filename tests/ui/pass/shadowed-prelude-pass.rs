// Hygiene: the module that invokes `optimizer!` shadows `Option`, `Result`, `Vec`, `Box`, `f32`
// (`type f32 = u8;`), `f64`, `usize`, `bool`, `str`, `Some` and `Ok`. Generated code names only
// `::core`, `::std` and `::optim_dsl::__private`, so it must still compile and run. The body
// uses a shape guard, a flag, `debias`, `cumprod` and a reuse rule, to reach every emit path.
#![allow(non_camel_case_types, non_snake_case, dead_code)]

use optim_dsl::prelude::*;
use optim_dsl::zoo::Sgd;

type Real = core::primitive::f32;

struct Option;
struct Result;
struct Vec;
struct Box;
type f32 = u8;
struct f64;
struct usize;
struct bool;
struct str;
fn Some() {}
fn Ok() {}

optimizer! {
    /// Shadowing everything the expansion might name by accident.
    pub Shadowed<lr = 0.1, beta = 0.9, maximize = false> {
        matrix if rows > 1 && name.starts_with("w") => {
            let g = select(maximize, -grad, grad);
            let m = momentum(g, beta);
            let c = cumprod(0.5);
            param -= lr * debias(m) * c;
        }
        vector => Sgd<lr = lr>,
        _ => {
            param -= lr * grad;
        }
    }
}

fn main() {
    let mut opt = Shadowed::default();
    let mut w: [Real; 4] = [1.0; 4];
    let gw: [Real; 4] = [0.5; 4];
    let mut b: [Real; 2] = [1.0; 2];
    let gb: [Real; 2] = [0.5; 2];
    opt.update_slices(&mut [
        ParamSlice { name: "w", shape: &[2, 2], param: &mut w, grad: &gw },
        ParamSlice { name: "b", shape: &[2], param: &mut b, grad: &gb },
    ])
    .unwrap();
    // matrix rule: debias(m) = 0.5 on the first step, cumprod = 0.5
    assert!((w[0] - 0.975).abs() < 1e-6, "w = {w:?}");
    // vector rule: zoo `Sgd` with `lr = 0.1`
    assert!((b[0] - 0.95).abs() < 1e-6, "b = {b:?}");
}
