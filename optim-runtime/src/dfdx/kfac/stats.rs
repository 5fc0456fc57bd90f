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

/// Where the damping of the Kronecker factors happens (Martens & Grosse 2015, §6).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FactorDamping {
    /// Plain Tikhonov damping in the optimizer (the default): [`KfacStats`] hands the undamped
    /// factors `G`, `A`, and the rule's `kfac_precondition(.., damping = λ)` (the zoo's `KFac`
    /// hyperparameter `damping`, default `1e-3`) inverts `G + λI` and `A + λI`:
    /// `u = (G + λI)⁻¹ ∇W (A + λI)⁻¹`.
    #[default]
    InOptimizer,
    /// Factored Tikhonov damping with `π` (Martens & Grosse §6.3, KFAC-pytorch's default):
    /// [`KfacStats`] hands `G + (√γ / π) I` and `A + π √γ I`, with
    /// `π = sqrt((tr A / I) / (tr G / O))` (`1` when a trace is `0`), so that the
    /// preconditioner approximates `(A ⊗ G + γ I)⁻¹` with the damping split in proportion to
    /// the factors' scales. Set the rule's own `damping` to `0` (otherwise it is added on top).
    Pi {
        /// `γ`, finite and `>= 0` (KFAC-pytorch's default is `1e-3`).
        damping: f64,
    },
}

/// Settings of [`KfacStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KfacStatsConfig {
    /// Decay `ρ` of the running averages, in `[0, 1)` (default `0.95`, Martens & Grosse §5 and
    /// KFAC-pytorch's `stat_decay`): `run ← ρ run + (1 − ρ) batch`, from zero, bias-corrected
    /// by `1 − ρᵏ` after `k` updates (as Adam's moments), so the first update gives the batch
    /// itself and `ρ = 0` always the last batch. KFAC-pytorch starts from the first batch
    /// instead of bias-correcting; the two differ only in the first `~1/(1 − ρ)` updates.
    pub decay: f64,
    /// Where the factors are damped (default [`FactorDamping::InOptimizer`]: plain Tikhonov,
    /// by the rule's `kfac_precondition` damping).
    pub damping: FactorDamping,
    /// Hand the factors to the optimizer on the first [`KfacStats::update`] and then every
    /// `update_every` updates (default `10`; KFAC-pytorch's `TInv`): the optimizer's cached
    /// damped inverses are recomputed only when it receives new factors
    /// (`DslOptimizer::set_kron_factors` marks them dirty), so between refreshes each step
    /// reuses the inverses of the last refresh. A whole number `>= 1`.
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
            damping: FactorDamping::InOptimizer,
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
/// optimizer whose rule for their weights applies `kfac_precondition` (the zoo's `KFac`).
///
/// Per layer `y = W a + b` (`W: [O, I]`), with `ĝ` the per-example output
/// gradient (see [`super::KfacLinear`] for the capture and the scaling convention):
///
/// ```text
/// batch:    A_b = Σ a aᵀ / n,  G_b = g_scale · Σ ĝ ĝᵀ / n       (n rows since the last update)
/// running:  Ā ← ρ Ā + (1 − ρ) A_b,  Ḡ ← ρ Ḡ + (1 − ρ) G_b,  c ← ρ c + (1 − ρ)
///           (model buffers kfac_a, kfac_g, kfac_n; c = 1 − ρᵏ after k updates)
/// factors:  A = Ā / c,  G' = Ḡ / c                               (bias-corrected)
/// handed:   "<layer>.weight" (shape [O, I]): left = G' (O × O), right = A (I × I)
///           (FactorDamping::Pi{γ}: left = G' + (√γ/π) I, right = A + π√γ I)
/// ```
///
/// so the zoo's `KFac` (rule `kfac_precondition(grad, damping = λ)`) steps the weight with
/// `(G' + λI)⁻¹ ∇W (A + λI)⁻¹`: K-FAC's block for `W` (`A = E[a aᵀ]`, uncentred: the `W`
/// block of the paper's `Ā = E[ā āᵀ]` over homogeneous inputs `ā = [a; 1]`). The bias, and every tensor that is not the
/// weight of a `KfacLinear` (dfdx's own `Linear`, convolutions, norms, embeddings), receives no
/// factors: route it to the rule's fallback (the zoo's `KFac` steps 1-D tensors with SGD; a
/// matrix without factors passes `kfac_precondition` unchanged, so in `KFac` it takes a plain
/// SGD step too; give such matrices their own rule with a `module == "..."` guard if needed).
/// Dropping the bias from the Kronecker block drops the `W`–`b` cross terms (the input mean
/// `E[a]`), which are zero when the inputs have zero mean.
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
///     kfac.update(&mut model, &mut grads, &mut opt)?; // every k updates: set_kron_factors
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

/// The statistic buffers of a `KfacLinear`, in the order the walk visits them.
const SLOTS: [&str; 3] = ["kfac_a", "kfac_g", "kfac_n"];

/// One layer as read from the model and its statistic slots: `run[k]` the running value and
/// `sum[k]` the slot sums of buffer `SLOTS[k]` (`A`: `I × I`, `G`: `O × O`, count: `1`).
struct Layer<E> {
    prefix: String,
    i: usize,
    o: usize,
    run: [Vec<E>; 3],
    sum: [Vec<E>; 3],
}

/// What [`KfacStats::update`] writes for one layer.
enum Outcome<E> {
    /// No rows recorded: nothing changes.
    Empty,
    /// Statistics dropped (non-finite): slots are zeroed, running averages unchanged.
    Dropped,
    /// New running values of the three buffers.
    Moved([Vec<E>; 3]),
}

impl KfacStats {
    /// A collector with `config`.
    ///
    /// # Errors
    /// [`OptimError::InvalidHyperparameter`] (optimizer `"KfacStats"`) for a `decay` outside
    /// `[0, 1)`, a negative or non-finite [`FactorDamping::Pi`] damping, an `update_every` of 0,
    /// a `g_scale` that is not finite and `> 0`.
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
        if let FactorDamping::Pi { damping } = config.damping {
            if !(damping.is_finite() && damping >= 0.0) {
                return bad("damping", damping, "a finite value >= 0");
            }
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
            if t.module == KFAC_MODULE && slot_of(t.name).is_some() {
                if t.name.ends_with(SLOTS[0]) {
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
    /// `set_kron_factors` (`"<layer>.weight"`, shape `[O, I]`; see the type's docs). Call it after `backward()` and before `opt.update(...)`, on every step
    /// whose backward should count (e.g. every step; or only the steps of an extra backward
    /// pass on sampled targets for the Fisher). A layer that recorded nothing keeps its
    /// averages; one whose statistics hold a NaN or an infinity has them dropped (reported).
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when `model` has no `KfacLinear` layer, or when no layer
    /// recorded anything since the last call (the slots were not registered with
    /// [`KfacStats::watch`] for this `grads`, or no taped backward ran);
    /// [`OptimError::ShapeMismatch`] when `opt` holds state of another size for a layer's
    /// weight; [`OptimError::Device`] from dfdx. Nothing is modified on error.
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
        self.update_into(model, grads, opt)
    }

    /// [`update`](Self::update) with the optimizer as a trait object: compiled once per element
    /// type and model, not once per optimizer too.
    fn update_into<E, M>(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<E, Cpu>,
        opt: &mut dyn KronTarget<E>,
    ) -> Result<KfacReport, OptimError>
    where
        E: Float,
        M: TensorCollection<E, Cpu>,
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
        let refresh = self.updates.is_multiple_of(self.config.update_every);
        let mut pushes: Vec<Push<E>> = Vec::new();
        if refresh {
            for (l, out) in layers.iter().zip(&outcomes) {
                let run = match out {
                    Outcome::Moved(run) => run,
                    _ => &l.run,
                };
                if let Some(p) = factors(l, run, &self.config) {
                    pushes.push(p);
                }
            }
            // validate against the optimizer's state before writing anything
            for (name, shape, _, _) in &pushes {
                let numel: usize = shape.iter().product();
                if let Some(len) = opt.state_len(name) {
                    if len != numel {
                        return Err(OptimError::ShapeMismatch {
                            param: name.clone(),
                            detail: format!(
                                "the K-FAC layer has {numel} elements but the optimizer state \
                                 has {len}"
                            ),
                        });
                    }
                }
            }
        }
        write_layers(model, grads, &layers, &outcomes)?;
        for (name, shape, left, right) in pushes {
            opt.set_factors(&name, &shape, left, right)?;
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

/// What [`KfacStats::update`] uses of the optimizer, object-safe (see `update_into`).
trait KronTarget<E> {
    /// The length of parameter `name`'s state, if it has one.
    fn state_len(&self, name: &str) -> Option<usize>;
    /// `DslOptimizer::set_kron_factors` with both factors.
    fn set_factors(
        &mut self,
        name: &str,
        shape: &[usize],
        left: Vec<E>,
        right: Vec<E>,
    ) -> Result<(), OptimError>;
}

impl<E: Float, O: DslOptimizer<E>> KronTarget<E> for O {
    fn state_len(&self, name: &str) -> Option<usize> {
        self.opt_state().params.get(name).map(|ps| ps.len)
    }
    fn set_factors(
        &mut self,
        name: &str,
        shape: &[usize],
        left: Vec<E>,
        right: Vec<E>,
    ) -> Result<(), OptimError> {
        self.set_kron_factors(name, shape, Some(left), Some(right))
    }
}

fn no_layers() -> OptimError {
    OptimError::InvalidUse(
        "KfacStats: the model has no KfacLinear layer (build it with \
         optim_dsl::kfac::builder::KfacLinear in place of dfdx's Linear)"
            .to_string(),
    )
}

/// `"0.kfac_g"` → `Some(("0", 1))` (prefix, index in [`SLOTS`]), `"kfac_a"` → `Some(("", 0))`,
/// anything else `None`.
fn slot_of(name: &str) -> Option<(&str, usize)> {
    SLOTS.iter().enumerate().find_map(|(k, slot)| {
        let p = name.strip_suffix(slot)?;
        if p.is_empty() {
            Some((p, k))
        } else {
            p.strip_suffix('.').map(|p| (p, k))
        }
    })
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
        let Some((prefix, k)) = slot_of(t.name) else {
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
        if k == 0 {
            layers.push(Layer {
                prefix: prefix.to_string(),
                i: t.shape[0],
                o: 0,
                run: [run, Vec::new(), Vec::new()],
                sum: [kept, Vec::new(), Vec::new()],
            });
        } else if let Some(l) = layers.last_mut().filter(|l| l.prefix == prefix) {
            if k == 1 {
                l.o = t.shape[0];
            }
            l.run[k] = run;
            l.sum[k] = kept;
        }
        Ok(())
    })?;
    // a layer is complete once the three buffers were seen (always, for `KfacLinear`)
    layers.retain(|l| {
        l.o > 0 && l.run[0].len() == l.i * l.i && l.run[1].len() == l.o * l.o && l.run[2].len() == 1
    });
    Ok(layers)
}

/// The running averages after folding in one layer's slot sums.
fn fold<E: Float>(l: &Layer<E>, rho: f64, g_scale: f64) -> Outcome<E> {
    let n = l.sum[2][0].as_f64();
    if n == 0.0 {
        return Outcome::Empty;
    }
    let finite = |v: &[E]| v.iter().all(|x| x.is_finite());
    if !n.is_finite() || n < 0.0 || !finite(&l.sum[0]) || !finite(&l.sum[1]) {
        return Outcome::Dropped;
    }
    let ema = |run: &[E], sum: &[E], scale: f64| -> Vec<E> {
        run.iter()
            .zip(sum)
            .map(|(r, s)| E::of_f64(rho * r.as_f64() + (1.0 - rho) * scale * s.as_f64() / n))
            .collect()
    };
    let a = ema(&l.run[0], &l.sum[0], 1.0);
    let g = ema(&l.run[1], &l.sum[1], g_scale);
    let c = ema(&l.run[2], &l.sum[2], 1.0); // the EMA of 1: 1 − ρᵏ
    if !finite(&a) || !finite(&g) {
        return Outcome::Dropped;
    }
    Outcome::Moved([a, g, c])
}

/// A weight's name, shape, and `left`, `right` factors.
type Push<E> = (String, Vec<usize>, Vec<E>, Vec<E>);

/// The factors of one layer's weight from its running averages (see [`KfacStats`]); `None`
/// before the first update (bias correction 0) or if not finite.
fn factors<E: Float>(l: &Layer<E>, run: &[Vec<E>; 3], cfg: &KfacStatsConfig) -> Option<Push<E>> {
    let (i, o) = (l.i, l.o);
    let [a_run, g_run, c_run] = run;
    let c = c_run[0].as_f64();
    if !(c.is_finite() && c > 0.0) {
        return None;
    }
    let (left_add, right_add) = match cfg.damping {
        FactorDamping::InOptimizer => (0.0, 0.0),
        FactorDamping::Pi { damping } => {
            let tr_a: f64 = (0..i).map(|k| a_run[k * i + k].as_f64()).sum::<f64>() / c;
            let tr_g: f64 = (0..o).map(|k| g_run[k * o + k].as_f64()).sum::<f64>() / c;
            let pi = pi_factor(tr_a / i as f64, tr_g / o as f64);
            let s = damping.sqrt();
            (s / pi, pi * s)
        }
    };
    let left: Vec<E> = (0..o * o)
        .map(|k| {
            let diag = if k / o == k % o { left_add } else { 0.0 };
            E::of_f64(g_run[k].as_f64() / c + diag)
        })
        .collect();
    let right: Vec<E> = (0..i * i)
        .map(|k| {
            let (r, col) = (k / i, k % i);
            let diag = if r == col { right_add } else { 0.0 };
            E::of_f64(a_run[k].as_f64() / c + diag)
        })
        .collect();
    if !left.iter().chain(&right).all(|v| v.is_finite()) {
        return None;
    }
    Some((join(&l.prefix, "weight"), vec![o, i], left, right))
}

/// Martens & Grosse's `π = sqrt(mean eigenvalue of A / mean eigenvalue of G)` from the mean
/// diagonals; `1` when either is `0` or the ratio is not finite.
fn pi_factor(mean_diag_a: f64, mean_diag_g: f64) -> f64 {
    let p = (mean_diag_a / mean_diag_g).sqrt();
    if mean_diag_a > 0.0 && mean_diag_g > 0.0 && p.is_finite() && p > 0.0 {
        p
    } else {
        1.0
    }
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
        let Some((prefix, slot)) = slot_of(t.name) else {
            return Ok(());
        };
        let Some(k) = layers.iter().position(|l| l.prefix == prefix) else {
            return Ok(());
        };
        match &outcomes[k] {
            Outcome::Empty => return Ok(()),
            Outcome::Dropped => {}
            Outcome::Moved(run) => h.write(&run[slot]),
        }
        let mut slot = h.take_grad(grads)?;
        slot.clear();
        slot.resize(t.numel(), E::zero());
        h.put_grad(grads, slot)
    })
}
