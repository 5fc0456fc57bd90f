//! A one-neuron dfdx model for tests computed by hand: [`OneModel`] (`Linear<2, 1>` on `Cpu`),
//! built with given values by [`one`], with gradients of one value by [`filled`].

use dfdx::prelude::*;

/// `Linear<2, 1>`, as built on `Cpu` in `f32`.
pub type OneModel = <Linear<2, 1> as BuildOnDevice<Cpu, f32>>::Built;

/// A `Linear<2, 1>` with weight `w` and bias `b`.
pub fn one(dev: &Cpu, w: [f32; 2], b: f32) -> OneModel {
    let mut m: OneModel = dev.build_module::<Linear<2, 1>, f32>();
    m.weight.copy_from(&w);
    m.bias.copy_from(&[b]);
    m
}

/// Gradients of `m`: every element `g`.
pub fn filled(m: &OneModel, g: f32) -> Gradients<f32, Cpu> {
    let mut gr = m.alloc_grads();
    gr.get_or_alloc_mut(&m.weight).unwrap().fill(g);
    gr.get_or_alloc_mut(&m.bias).unwrap().fill(g);
    gr
}

/// `(weight, bias)` of `m`.
pub fn values(m: &OneModel) -> (Vec<f32>, Vec<f32>) {
    (m.weight.as_vec(), m.bias.as_vec())
}
