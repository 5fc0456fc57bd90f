//! [`KfacStats`]: running K-FAC factors from the statistics [`super::KfacLinear`] records, handed
//! to an optimizer's `kfac_precondition`.

use super::super::walk::{walk, walk_mut};
use crate::error::OptimError;
use crate::float::Float;
use crate::optimizer::DslOptimizer;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::tensor::{Cpu, Gradients, UniqueId};
use dfdx::tensor_ops::Device;

/// The module type name [`super::KfacLinear`]'s tensors report (`module == "KfacLinear"`).
pub const KFAC_MODULE: &str = "KfacLinear";

/// Settings of [`KfacStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KfacStatsConfig {
    /// Decay `ρ` of the running averages, in `[0, 1)` (default `0.95`, Martens & Grosse §5 and
    /// KFAC-pytorch's `stat_decay`): `run ← ρ run + (1 − ρ) batch`, from zero, bias-corrected
    /// by `1 − ρᵏ` after `k` updates (as Adam's moments), so the first update gives the batch
    /// itself and `ρ = 0` always the last batch.
    pub decay: f64,
    /// Tikhonov damping `λ >= 0` of the Kronecker product (default `1e-3`), split between the
    /// factors as Martens & Grosse's factored Tikhonov damping (§6.3):
    /// `(A + π√λ I) ⊗ (G + √λ/π I)`, with `π = sqrt((tr Ā / (I+1)) / (tr G / O))` when
    /// `pi_damping` (1 otherwise, or when a trace is 0).
    pub damping: f64,
    /// Whether the damping is balanced between the factors by `π` (default `true`).
    pub pi_damping: bool,
    /// Hand the factors to the optimizer on the first [`KfacStats::update`] and then every
    /// `update_every` updates (default `10`; KFAC-pytorch's `TInv`): the optimizer's cached
    /// damped inverses are recomputed only when it receives new factors
    /// (`DslOptimizer::set_kron_factors` marks them dirty). A whole number `>= 1`.
    pub update_every: u64,
    /// Multiplies the recorded output-gradient statistic `G` (default `1`): the capture assumes
    /// the loss is the *mean* over the `N` rows of a forward (per-example gradients
    /// `ĝ = N ∂L/∂y`); for a loss *summed* over the rows set `1/N²`. Finite and `> 0`.
    pub g_scale: f64,
}

impl Default for KfacStatsConfig {
    fn default() -> Self {
        KfacStatsConfig {
            decay: 0.95,
            damping: 1e-3,
            pi_damping: true,
            update_every: 10,
            g_scale: 1.0,
        }
    }
}

/// What one [`KfacStats::update`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KfacReport {
    /// `KfacLinear` layers in the model.
    pub layers: usize,
    /// Layers that had statistics since the last update (their running averages moved).
    pub recorded: usize,
    /// Layers whose statistics held a NaN or an infinity: dropped, running averages unchanged.
    pub non_finite: Vec<String>,
    /// Whether the factors were handed to the optimizer (its inverses will be recomputed).
    pub refreshed: bool,
}

/// Running K-FAC factors of a dfdx model's [`super::KfacLinear`] layers, handed to an
/// optimizer whose rule applies `kfac_precondition` (the zoo's `KFacAdamW` or `KFac`).
///
/// Per layer `y = W a + b` (`W: [O, I]`), with `ā = [a; 1]` and `ĝ` the per-example output
/// gradient (see [`super::KfacLinear`] for the capture and the scaling convention):
///
/// ```text
/// batch:    Ā_b = Σ ā āᵀ / n,  G_b = g_scale · Σ ĝ ĝᵀ / n       (n rows since the last update)
/// running:  Ā ← ρ Ā + (1 − ρ) Ā_b,  G ← ρ G + (1 − ρ) G_b      (model buffers kfac_a, kfac_g)
/// factors:  c = Ā[I, I] = 1 − ρᵏ (bias correction),  A = Ā[:I, :I] / c,  G' = G / c
///           π = sqrt((tr Ā / c / (I + 1)) / (tr G' / O)),  s = √damping
/// weight:   left  G' + (s / π) I  (O × O),  right A + π s I  (I × I)
/// bias:     left  G' + (s / π) I  (O × O),  right 1 + π s      (1 × 1)
/// ```
///
/// so `kfac_precondition(grad, damping = 0)` computes `(G' + s/π I)⁻¹ ∇W (A + π s I)⁻¹` for the
/// weight and `(G' + s/π I)⁻¹ ∇b / (1 + π s)` for the bias. This is K-FAC's block for the
/// homogeneous `[W b]` with the `W`–`b` cross terms of `Ā` (the input mean `E[a]`) dropped: dfdx
/// keeps `W` and `b` in separate tensors and `kfac_precondition` preconditions each tensor on
/// its own. It equals the paper's block when the inputs have zero mean.
///
/// ```no_run
/// # use optim_runtime::dfdx::kfac::{KfacStats, KfacStatsConfig, builder::KfacLinear};
/// # use optim_runtime::{DfdxUpdate, DslOptimizer, OptimError};
/// # fn f<O: DslOptimizer<f32>>(mut opt: O) -> Result<(), OptimError> {
/// use dfdx::prelude::*;
/// let dev = Cpu::default();
/// let mut model = dev.build_module::<(KfacLinear<4, 8>, ReLU, KfacLinear<8, 2>), f32>();
/// let mut kfac = KfacStats::new(KfacStatsConfig::default())?;
/// let mut grads = model.alloc_grads();
/// kfac.watch(&model, &mut grads)?; // once per Gradients: keeps the statistics past backward
/// # let (x, y) = (dev.zeros::<Rank2<16, 4>>(), dev.zeros::<Rank2<16, 2>>());
/// for _ in 0..100 {
///     let out = model.forward_mut(x.trace(grads));
///     grads = cross_entropy_with_logits_loss(out, y.clone()).backward();
///     kfac.update(&mut model, &mut grads, &mut opt)?; // running factors; every k: set_kron_factors
///     opt.update(&mut model, &mut grads)?;
///     model.zero_grads(&mut grads);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct KfacStats {
    config: KfacStatsConfig,
    updates: u64,
}

/// One layer as read from the model and its statistic slots.
struct Layer<E> {
    prefix: String,
    i: usize,
    o: usize,
    a_run: Vec<E>,
    a_sum: Vec<E>,
    g_run: Vec<E>,
    g_sum: Vec<E>,
}

/// What [`KfacStats::update`] writes for one layer.
enum Outcome<E> {
    /// No rows recorded: nothing changes.
    Empty,
    /// Statistics dropped (non-finite): slots are zeroed, running averages unchanged.
    Dropped,
    /// New running averages.
    Moved(Vec<E>, Vec<E>),
}

impl KfacStats {
    /// A collector with `config`.
    ///
    /// # Errors
    /// [`OptimError::InvalidHyperparameter`] (optimizer `"KfacStats"`) for a `decay` outside
    /// `[0, 1)`, a negative or non-finite `damping`, an `update_every` of 0, a `g_scale` that is
    /// not finite and `> 0`.
    pub fn new(config: KfacStatsConfig) -> Result<Self, OptimError> {
        let bad = |name: &'static str, value: f64, expected: &'static str| {
            Err(OptimError::InvalidHyperparameter {
                optimizer: "KfacStats",
                name,
                value,
                step: 0,
                expected,
            })
        };
        if !(0.0..1.0).contains(&config.decay) {
            return bad("decay", config.decay, "a value in [0, 1)");
        }
        if !(config.damping.is_finite() && config.damping >= 0.0) {
            return bad("damping", config.damping, "a finite value >= 0");
        }
        if config.update_every == 0 {
            return bad("update_every", 0.0, "a whole number >= 1");
        }
        if !(config.g_scale.is_finite() && config.g_scale > 0.0) {
            return bad("g_scale", config.g_scale, "a finite value > 0");
        }
        Ok(KfacStats { config, updates: 0 })
    }

    /// The settings.
    pub fn config(&self) -> &KfacStatsConfig {
        &self.config
    }

    /// Number of successful [`KfacStats::update`] calls so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Registers the statistic slots of every `KfacLinear` layer of `model` as leaves of
    /// `grads` (`Gradients::retain_leafs`), so that `backward()` keeps what the layers record,
    /// and allocates them (zero). Call it once after `model.alloc_grads()`: the registration
    /// travels with `grads` through the tape and `backward()`, and `model.zero_grads` leaves the
    /// slots alone. Returns the number of layers.
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when `model` has no `KfacLinear` layer;
    /// [`OptimError::Device`] when dfdx cannot allocate a slot.
    pub fn watch<E, M>(&self, model: &M, grads: &mut Gradients<E, Cpu>) -> Result<usize, OptimError>
    where
        E: Float,
        M: TensorCollection<E, Cpu>,
        Cpu: Device<E>,
    {
        let mut ids: Vec<UniqueId> = Vec::new();
        let mut layers = 0;
        walk::<E, M>(model, |t, h| {
            if t.module == KFAC_MODULE && slot_prefix(t.name).is_some() {
                if t.name.ends_with("kfac_a") {
                    layers += 1;
                }
                let g = h.take_grad(grads)?;
                h.put_grad(grads, g)?;
                ids.push(h.id());
            }
            Ok(())
        })?;
        if layers == 0 {
            return Err(no_layers());
        }
        grads.retain_leafs(&ids);
        Ok(layers)
    }

    /// Folds the statistics recorded since the last call into the running averages (the
    /// values of `kfac_a` and `kfac_g`), zeroes the slots, and on the first call and every
    /// `update_every` calls hands each layer's damped factors to `opt` with
    /// `set_kron_factors` (`"<layer>.weight"`, shape `[O, I]`, and `"<layer>.bias"`, `[O]`; see
    /// the type's docs). Call it after `backward()` and before `opt.update(...)`, on every step
    /// whose backward should count (e.g. every step; or only the steps of an extra backward
    /// pass on sampled targets for the Fisher). A layer that recorded nothing keeps its
    /// averages; one whose statistics hold a NaN or an infinity has them dropped (reported).
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when `model` has no `KfacLinear` layer, or when no layer
    /// recorded anything since the last call (the slots were not registered with
    /// [`KfacStats::watch`] for this `grads`, or no taped backward ran);
    /// [`OptimError::ShapeMismatch`] when `opt` holds state of another size for a layer's
    /// weight or bias; [`OptimError::Device`] from dfdx. Nothing is modified on error.
    pub fn update<E, M, O>(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<E, Cpu>,
        opt: &mut O,
    ) -> Result<KfacReport, OptimError>
    where
        E: Float,
        M: TensorCollection<E, Cpu>,
        O: DslOptimizer<E>,
        Cpu: Device<E>,
    {
        let layers = read_layers(model, grads)?;
        if layers.is_empty() {
            return Err(no_layers());
        }
        let rho = self.config.decay;
        let outcomes: Vec<Outcome<E>> = layers
            .iter()
            .map(|l| fold(l, rho, self.config.g_scale))
            .collect();
        if outcomes.iter().all(|o| matches!(o, Outcome::Empty)) {
            return Err(OptimError::InvalidUse(
                "KfacStats::update: no KfacLinear layer recorded statistics since the last \
                 update; register the slots with `KfacStats::watch(&model, &mut grads)` after \
                 `alloc_grads`, and run a taped forward and backward before updating"
                    .to_string(),
            ));
        }
        let refresh = self.updates % self.config.update_every == 0;
        let mut pushes = Vec::new();
        if refresh {
            for (l, out) in layers.iter().zip(&outcomes) {
                let (a_run, g_run) = match out {
                    Outcome::Moved(a, g) => (a, g),
                    _ => (&l.a_run, &l.g_run),
                };
                if let Some(p) = factors(l, a_run, g_run, &self.config) {
                    pushes.push(p);
                }
            }
            // validate against the optimizer's state before writing anything
            for (name, shape, _, _) in &pushes {
                let numel: usize = shape.iter().product();
                if let Some(ps) = opt.opt_state().params.get(name.as_str()) {
                    if ps.len != numel {
                        return Err(OptimError::ShapeMismatch {
                            param: name.clone(),
                            detail: format!(
                                "the K-FAC layer has {numel} elements but the optimizer state \
                                 has {}",
                                ps.len
                            ),
                        });
                    }
                }
            }
        }
        write_layers(model, grads, &layers, &outcomes)?;
        for (name, shape, left, right) in pushes {
            opt.set_kron_factors(&name, &shape, Some(left), Some(right))?;
        }
        self.updates += 1;
        Ok(KfacReport {
            layers: layers.len(),
            recorded: outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Moved(..)))
                .count(),
            non_finite: layers
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, Outcome::Dropped))
                .map(|(l, _)| l.prefix.clone())
                .collect(),
            refreshed: refresh,
        })
    }
}

fn no_layers() -> OptimError {
    OptimError::InvalidUse(
        "KfacStats: the model has no KfacLinear layer (build it with \
         optim_dsl::kfac::builder::KfacLinear in place of dfdx's Linear)"
            .to_string(),
    )
}

/// `"0.kfac_a"` → `Some("0")`, `"kfac_g"` → `Some("")`, anything else `None`.
fn slot_prefix(name: &str) -> Option<&str> {
    let p = name
        .strip_suffix("kfac_a")
        .or_else(|| name.strip_suffix("kfac_g"))?;
    if p.is_empty() {
        Some(p)
    } else {
        p.strip_suffix('.')
    }
}

/// `prefix.leaf`, as the walk joins names.
fn join(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}.{leaf}")
    }
}

/// Every `KfacLinear` layer's running averages and slot sums (the slots are read, not taken).
fn read_layers<E, M>(model: &M, grads: &mut Gradients<E, Cpu>) -> Result<Vec<Layer<E>>, OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    let mut layers: Vec<Layer<E>> = Vec::new();
    walk::<E, M>(model, |t, h| {
        if t.module != KFAC_MODULE {
            return Ok(());
        }
        let Some(prefix) = slot_prefix(t.name) else {
            return Ok(());
        };
        let mut run = Vec::new();
        h.read(&mut run);
        let sum = h.take_grad(grads)?;
        let mut kept = sum.clone();
        if kept.len() != run.len() {
            kept = vec![E::zero(); run.len()]; // an unallocated slot reads as zero
        }
        h.put_grad(grads, sum)?;
        if t.name.ends_with("kfac_a") {
            layers.push(Layer {
                prefix: prefix.to_string(),
                i: t.shape[0].saturating_sub(1),
                o: 0,
                a_run: run,
                a_sum: kept,
                g_run: Vec::new(),
                g_sum: Vec::new(),
            });
        } else if let Some(l) = layers.last_mut().filter(|l| l.prefix == prefix) {
            l.o = t.shape[0];
            l.g_run = run;
            l.g_sum = kept;
        }
        Ok(())
    })?;
    // a layer is complete once both buffers were seen (always, for `KfacLinear`)
    layers.retain(|l| l.g_run.len() == l.o * l.o && l.o > 0);
    Ok(layers)
}

/// The running averages after folding in one layer's slot sums.
fn fold<E: Float>(l: &Layer<E>, rho: f64, g_scale: f64) -> Outcome<E> {
    let d = l.i + 1;
    let n = l.a_sum[d * d - 1].as_f64();
    if n == 0.0 {
        return Outcome::Empty;
    }
    let finite = |v: &[E]| v.iter().all(|x| x.is_finite());
    if !n.is_finite() || n < 0.0 || !finite(&l.a_sum) || !finite(&l.g_sum) {
        return Outcome::Dropped;
    }
    let ema = |run: &[E], sum: &[E], scale: f64| -> Vec<E> {
        run.iter()
            .zip(sum)
            .map(|(r, s)| E::of_f64(rho * r.as_f64() + (1.0 - rho) * scale * s.as_f64() / n))
            .collect()
    };
    let a = ema(&l.a_run, &l.a_sum, 1.0);
    let g = ema(&l.g_run, &l.g_sum, g_scale);
    if !finite(&a) || !finite(&g) {
        return Outcome::Dropped;
    }
    Outcome::Moved(a, g)
}

/// A parameter's name, shape, and damped `left`, `right` factors.
type Push<E> = (String, Vec<usize>, Vec<E>, Vec<E>);

/// The damped factors of one layer's weight and bias from its running averages (see
/// [`KfacStats`]); empty before the first update (bias correction 0) or if not finite.
fn factors<E: Float>(l: &Layer<E>, a_run: &[E], g_run: &[E], cfg: &KfacStatsConfig) -> Option<[Push<E>; 2]> {
    let (i, o) = (l.i, l.o);
    let d = i + 1;
    let c = a_run[d * d - 1].as_f64();
    if !(c.is_finite() && c > 0.0) {
        return None;
    }
    let tr_a: f64 = (0..d).map(|k| a_run[k * d + k].as_f64()).sum::<f64>() / c;
    let tr_g: f64 = (0..o).map(|k| g_run[k * o + k].as_f64()).sum::<f64>() / c;
    let mut pi = 1.0;
    if cfg.pi_damping && tr_a > 0.0 && tr_g > 0.0 {
        let p = ((tr_a / d as f64) / (tr_g / o as f64)).sqrt();
        if p.is_finite() && p > 0.0 {
            pi = p;
        }
    }
    let s = cfg.damping.sqrt();
    let left: Vec<E> = (0..o * o)
        .map(|k| {
            let diag = if k / o == k % o { s / pi } else { 0.0 };
            E::of_f64(g_run[k].as_f64() / c + diag)
        })
        .collect();
    let right: Vec<E> = (0..i * i)
        .map(|k| {
            let (r, col) = (k / i, k % i);
            let diag = if r == col { pi * s } else { 0.0 };
            E::of_f64(a_run[r * d + col].as_f64() / c + diag)
        })
        .collect();
    if !left.iter().chain(&right).all(|v| v.is_finite()) {
        return None;
    }
    let bias_right = vec![E::of_f64(1.0 + pi * s)];
    Some([
        (join(&l.prefix, "weight"), vec![o, i], left.clone(), right),
        (join(&l.prefix, "bias"), vec![o], left, bias_right),
    ])
}

/// Writes the new running averages and zeroes the slots that were consumed.
fn write_layers<E, M>(
    model: &mut M,
    grads: &mut Gradients<E, Cpu>,
    layers: &[Layer<E>],
    outcomes: &[Outcome<E>],
) -> Result<(), OptimError>
where
    E: Float,
    M: TensorCollection<E, Cpu>,
    Cpu: Device<E>,
{
    walk_mut::<E, M>(model, |t, h| {
        if t.module != KFAC_MODULE {
            return Ok(());
        }
        let Some(prefix) = slot_prefix(t.name) else {
            return Ok(());
        };
        let Some(k) = layers.iter().position(|l| l.prefix == prefix) else {
            return Ok(());
        };
        let is_a = t.name.ends_with("kfac_a");
        match &outcomes[k] {
            Outcome::Empty => return Ok(()),
            Outcome::Dropped => {}
            Outcome::Moved(a, g) => h.write(if is_a { a } else { g }),
        }
        let mut slot = h.take_grad(grads)?;
        slot.clear();
        slot.resize(t.numel(), E::zero());
        h.put_grad(grads, slot)
    })
}
