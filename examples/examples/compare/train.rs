//! Training of the `compare` example: evaluation, one run of one optimizer, the runs of all
//! selected optimizers, and the progress line of a run.

use super::*;

pub(super) type Logits<T> = Tensor<(usize, Const<CLASSES>), f32, Cpu, T>;

/// Evaluates `net` on `data` in chunks of 512 (no tape).
pub(super) fn evaluate<M, S, X>(dev: &Cpu, net: &M, data: &Dataset, input: &X) -> Evaluation
where
    S: Shape,
    X: Input<S>,
    M: Module<Tensor<S, f32, Cpu>, Output = Logits<NoneTape>>,
{
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    for (features, labels) in data.chunks(512) {
        let n = labels.len();
        let (x, y) = (input.make(dev, features, n), one_hot(dev, &labels));
        let logits = net.forward(x);
        for (row, &label) in logits.as_vec().chunks_exact(CLASSES).zip(&labels) {
            correct += usize::from(argmax(row) == label as usize);
        }
        loss_sum += f64::from(cross_entropy_with_logits_loss(logits, y).array()) * n as f64;
    }
    let n = data.n.max(1) as f64;
    Evaluation {
        loss: (loss_sum / n) as f32,
        accuracy: correct as f64 / n,
    }
}

pub(super) fn one_hot(dev: &Cpu, labels: &[u8]) -> Logits<NoneTape> {
    let mut v = vec![0.0f32; labels.len() * CLASSES];
    for (i, &l) in labels.iter().enumerate() {
        v[i * CLASSES + l as usize] = 1.0;
    }
    dev.tensor_from_vec(v, (labels.len(), Const))
}

/// Trains a fresh model of architecture `A` (built from `cfg.seed`) with the optimizer `spec`
/// at peak learning rate `peak_lr`.
pub(super) fn train_one<A, S, X>(
    cfg: &RunConfig,
    spec: &OptimizerSpec,
    peak_lr: f64,
    train: &Dataset,
    test: &Dataset,
    input: &X,
    progress: &Progress,
) -> Result<RunResult, Box<dyn Error>>
where
    A: BuildOnDevice<Cpu, f32>,
    A::Built: TensorCollection<f32, Cpu>
        + ZeroGrads<f32, Cpu>
        + Clone
        + ModuleMut<Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>, Output = Logits<OwnedTape<f32, Cpu>>>
        + Module<Tensor<S, f32, Cpu>, Output = Logits<NoneTape>>,
    S: Shape,
    X: Input<S>,
{
    let (dev, mut net) = model::build::<A>(cfg.seed);
    let mut ema_net = cfg.ema.map(|_| net.clone());
    let mut grads = net.alloc_grads();
    let schedule = cfg.schedule(peak_lr)?;
    let mut opt = optimizers::build::<A::Built>(spec.name, schedule.clone().into())?;

    let mut curve = Vec::with_capacity(cfg.steps);
    let (mut step_times, mut update_times) =
        (Vec::with_capacity(cfg.steps), Vec::with_capacity(cfg.steps));
    let (mut ema_loss, mut steps_to_target) = (0.0f64, None);
    let mut step = 0;
    let mut epoch = 0;
    while step < cfg.steps {
        for (features, labels) in train.batches(cfg.batch, cfg.seed, epoch) {
            if step == cfg.steps {
                break;
            }
            let t0 = Instant::now();
            let n = labels.len();
            let (x, y) = (input.make(&dev, features, n), one_hot(&dev, &labels));
            let taken = std::mem::replace(&mut grads, Gradients::leaky());
            let logits = net.forward_mut(x.traced(taken));
            let loss = cross_entropy_with_logits_loss(logits, y);
            let loss_value = f64::from(loss.array());
            grads = loss.backward();
            let t1 = Instant::now();
            opt.step(&mut net, &mut grads)
                .map_err(|e| format!("{} failed at step {step}: {e}", spec.name))?;
            let t2 = Instant::now();
            net.zero_grads(&mut grads);
            step_times.push(t0.elapsed());
            update_times.push(t2 - t1);

            if let (Some(decay), Some(e)) = (cfg.ema, ema_net.as_mut()) {
                e.ema(&net, decay);
            }
            step += 1;
            ema_loss = SMOOTHING * ema_loss + (1.0 - SMOOTHING) * loss_value;
            let smoothed = ema_loss / (1.0 - SMOOTHING.powi(step as i32));
            if steps_to_target.is_none() && smoothed <= cfg.target {
                steps_to_target = Some(step);
            }
            curve.push(Point {
                step,
                lr: schedule.value(step as u64 - 1),
                loss: loss_value,
                smoothed,
            });
            if !loss_value.is_finite() {
                return Err(
                    format!("{}: the loss is {loss_value} at step {step}", spec.name).into(),
                );
            }
            progress.update(step, || format!("loss {smoothed:.4}"));
        }
        epoch += 1;
    }
    let summary = format!(
        "train loss {:.4}",
        ema_loss / (1.0 - SMOOTHING.powi(step as i32))
    );
    progress.finish(&summary);
    Ok(RunResult {
        name: spec.name,
        type_name: opt.name(),
        peak_lr,
        train: evaluate(&dev, &net, train, input),
        test: evaluate(&dev, &net, test, input),
        ema_test: ema_net.as_ref().map(|e| evaluate(&dev, e, test, input)),
        steps_to_target,
        step_times,
        update_times,
        steps: step,
        curve,
    })
}

/// Runs every selected optimizer on architecture `A` and returns the results in order.
pub(super) fn run_all<A, S, X>(
    cfg: &RunConfig,
    selected: &[(&'static OptimizerSpec, f64)],
    train: &Dataset,
    test: &Dataset,
    input: &X,
) -> Result<Vec<RunResult>, Box<dyn Error>>
where
    A: BuildOnDevice<Cpu, f32>,
    A::Built: TensorCollection<f32, Cpu>
        + ZeroGrads<f32, Cpu>
        + Clone
        + NumParams<f32, Cpu>
        + ModuleMut<Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>, Output = Logits<OwnedTape<f32, Cpu>>>
        + Module<Tensor<S, f32, Cpu>, Output = Logits<NoneTape>>,
    S: Shape,
    X: Input<S>,
{
    let params = model::build::<A>(cfg.seed).1.num_trainable_params();
    println!("model: {params} trainable parameters");
    let mut results = Vec::new();
    for &(spec, lr) in selected {
        let progress = Progress::new(spec.name, cfg.steps);
        results.push(train_one::<A, S, X>(
            cfg, spec, lr, train, test, input, &progress,
        )?);
    }
    Ok(results)
}
