// Schedules set at run time: any numeric hyperparameter (here `lr` and `weight_decay`) can be a
// constant or a `Schedule`, given in the config or with `set_*`/`with_*`, and is validated
// against its domain when set. Must compile; a linear warm-up from 0 must leave the parameter
// unchanged on step 0 and move it on step 1, and an invalid constant must be refused.
use optim_dsl::prelude::*;

optimizer! {
    /// SGD with decoupled weight decay.
    pub Scheduled<lr = 1e-2, weight_decay = 0.0> {
        param = param * (1.0 - lr * weight_decay) - lr * grad;
    }
}

fn main() {
    let config = ScheduledConfig { lr: Schedule::linear(0.0, 1.0, 10).unwrap().into(), ..Default::default() };
    let mut opt = Scheduled::<f32>::new(config).unwrap();
    let mut p = vec![1.0f32];
    let g = [1.0f32];
    opt.update_slices(&mut [ParamSlice { name: "p", shape: &[1], param: &mut p, grad: &g }]).unwrap();
    assert_eq!(p[0], 1.0, "lr is 0 on step 0");
    opt.update_slices(&mut [ParamSlice { name: "p", shape: &[1], param: &mut p, grad: &g }]).unwrap();
    assert!((p[0] - 0.9).abs() < 1e-6, "lr is 0.1 on step 1, p = {p:?}");

    assert!(opt.set_lr(-1.0).is_err(), "`lr` must be >= 0");
    opt.set_weight_decay(Schedule::constant(0.5).unwrap()).unwrap();
    let opt = opt.with_lr(Schedule::cosine(1.0, 0.0, 100).unwrap()).unwrap();
    assert!(matches!(opt.config().lr, Hyper::Schedule(_)));
}
