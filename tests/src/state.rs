//! Comparing optimizer states exactly.

use optim_dsl::OptState;

/// A float's exact bit pattern, widened to `u64`.
pub trait ExactBits: Copy {
    /// The bits (`to_bits`), zero-extended.
    fn exact_bits(self) -> u64;
}

impl ExactBits for f32 {
    fn exact_bits(self) -> u64 {
        u64::from(self.to_bits())
    }
}

impl ExactBits for f64 {
    fn exact_bits(self) -> u64 {
        self.to_bits()
    }
}

/// Everything a checkpoint must restore of `s` (steps, skip counts, non-finite counts and
/// every parameter's step, rule, length, buffers, scalars and initial scalars), floats as
/// their exact bits; temps and scratch are not included.
pub fn state_bits<E: ExactBits>(s: &OptState<E>) -> impl PartialEq + std::fmt::Debug {
    let bits = |v: &[E]| v.iter().map(|x| x.exact_bits()).collect::<Vec<_>>();
    let params: Vec<_> = s
        .params
        .iter()
        .map(|(n, p)| {
            (
                n.clone(),
                p.step,
                p.rule,
                p.len,
                p.buffers.iter().map(|b| bits(b)).collect::<Vec<_>>(),
                p.scalars.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                p.scalars_init.clone(),
            )
        })
        .collect();
    (s.step, s.skipped_steps, s.non_finite, params)
}
