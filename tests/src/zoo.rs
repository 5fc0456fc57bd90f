//! Zoo optimizers as several tests build them.

use crate::fixtures::Case;
use optim_dsl::zoo::{
    Adafactor, AdafactorConfig, AdamWBf16, AdamWBf16Config, AdamWConfig, Muon, MuonConfig, Sgd,
    SgdConfig, Shampoo, ShampooConfig,
};
use optim_dsl::Hyper;

/// [`AdamWConfig`] of a `torch.optim.AdamW` case (`betas`, `eps`, `weight_decay`,
/// `amsgrad`, `maximize` of `final_param_groups[0]`) with learning rate `lr` (constant or
/// scheduled). Panics unless the case's weight decay is decoupled (torch AdamW).
pub fn torch_adamw_config(case: &Case, lr: Hyper) -> AdamWConfig {
    assert!(
        case.group_bool("decoupled_weight_decay"),
        "{}: expected torch AdamW (decoupled weight decay)",
        case.case
    );
    let g = |key: &str| Hyper::from(case.group_f64(key));
    AdamWConfig {
        lr,
        beta1: g("betas.0"),
        beta2: g("betas.1"),
        eps: g("eps"),
        weight_decay: g("weight_decay"),
        amsgrad: case.group_bool("amsgrad"),
        maximize: case.group_bool("maximize"),
    }
}

/// [`Shampoo`] without grafting, with the hyperparameters of a pytorch-optimizer `Shampoo`
/// case (`lr`, `weight_decay`, `matrix_eps`, `preconditioning_compute_steps` as
/// `update_freq`). Panics if the case uses momentum (ours has none).
pub fn pytorch_optimizer_shampoo(case: &Case) -> Shampoo<f32> {
    assert_eq!(case.hyper_f64("momentum"), 0.0, "{}: momentum", case.case);
    Shampoo::<f32>::new(ShampooConfig {
        lr: case.hyper_f64("lr").into(),
        weight_decay: case.hyper_f64("weight_decay").into(),
        matrix_eps: case.hyper_f64("matrix_eps").into(),
        update_freq: case.hyper_f64("preconditioning_compute_steps").into(),
        graft: false,
        ..Default::default()
    })
    .unwrap()
}

/// [`Muon`] with the `lr`, `weight_decay` and `momentum` of a case of Keller Jordan's
/// single-device Muon (`muon_keller_f32`), the rest at their defaults.
pub fn keller_muon(case: &Case) -> Muon<f32> {
    let lr = case.hyper_f64("lr").into();
    Muon::<f32>::new(crate::torch_config! {
        case.hyper_f64, lr, MuonConfig { weight_decay, momentum }
    })
    .unwrap()
}

/// [`Adafactor`] with the hyperparameters of a `torch.optim.Adafactor` case (`lr`,
/// `beta2_decay`, `eps[1]` as `eps2`, `d`, `weight_decay`; the rest default).
pub fn torch_adafactor(case: &Case) -> Adafactor<f32> {
    Adafactor::<f32>::new(AdafactorConfig {
        lr: case.hyper_f64("lr").into(),
        beta2_decay: case.hyper_f64("beta2_decay").into(),
        eps2: case.hyperparameters["eps"][1].as_f64().unwrap().into(),
        d: case.hyper_f64("d").into(),
        weight_decay: case.hyper_f64("weight_decay").into(),
        ..Default::default()
    })
    .unwrap()
}

/// The zoo's [`AdamWBf16`] (bf16 moments) with learning rate `lr`, the other
/// hyperparameters at their defaults.
pub fn adamw_bf16(lr: f64) -> AdamWBf16<f32> {
    AdamWBf16::<f32>::new(AdamWBf16Config {
        lr: lr.into(),
        ..Default::default()
    })
    .unwrap()
}

crate::adamw_stored! {
    /// AdamW with 8-bit block-quantised moments (`q8`/`uq8`) on every tensor: the zoo's
    /// [`optim_dsl::zoo::AdamW8bit`] keeps `f32` moments for tensors under 4,096 elements (bitsandbytes'
    /// `min_8bit_size`), and the 8-bit tests run on smaller ones too.
    pub AdamWQ8: q8, uq8
}

/// [`AdamWQ8`] (8-bit block-quantised moments on every tensor, the zoo's
/// [`optim_dsl::zoo::AdamW8bit`] rule without its 4,096-element minimum) with learning rate `lr`, the other
/// hyperparameters at their defaults.
pub fn adamw_8bit(lr: f64) -> AdamWQ8<f32> {
    AdamWQ8::<f32>::new(AdamWQ8Config {
        lr: lr.into(),
        ..Default::default()
    })
    .unwrap()
}

/// [`AdamWConfig`] with learning rate `lr` (constant or scheduled) and `weight_decay`, the
/// other fields at their defaults.
pub fn adamw_config(lr: impl Into<Hyper>, weight_decay: f64) -> AdamWConfig {
    AdamWConfig {
        lr: lr.into(),
        weight_decay: weight_decay.into(),
        ..Default::default()
    }
}

optim_dsl::optimizer! {
    /// SGD on gradients clipped to a global norm of `max_norm` (`clip_grad_norm_` then SGD,
    /// as one optimizer).
    pub ClipSgd<lr = 1.0, max_norm = 1.0> {
        param -= lr * clip_global_norm(grad, max_norm);
    }
}

/// Plain SGD (no momentum, no weight decay) with learning rate `lr`.
pub fn sgd(lr: f64) -> Sgd<f32> {
    Sgd::<f32>::new(SgdConfig {
        lr: lr.into(),
        ..Default::default()
    })
    .unwrap()
}
