//! Checkpoints: the complete state of an optimizer (and optionally a [`WeightEma`]) in one
//! safetensors file. Use the provided methods of [`DslOptimizer`]:
//! [`save_checkpoint`](DslOptimizer::save_checkpoint) /
//! [`load_checkpoint`](DslOptimizer::load_checkpoint) (files),
//! [`to_checkpoint_bytes`](DslOptimizer::to_checkpoint_bytes) /
//! [`load_checkpoint_bytes`](DslOptimizer::load_checkpoint_bytes) (memory), and the `_with_ema`
//! variants.
//!
//! # Format (version 1)
//!
//! A [safetensors](https://huggingface.co/docs/safetensors) file. Tensors (little-endian, 1-D):
//!
//! | key | dtype | contents |
//! |---|---|---|
//! | `"{param}/{slot}"` | the optimizer's element type (`F32`/`F64`) | a state buffer of parameter `param`; `slot` is the state's name from `explain()` (`"m"`, `"v"`, …), or `#k` for slot `k` when the plan does not name it |
//! | `"{param}/#scalars"` | `F64` | the parameter's scalar states (e.g. NAdam's `mu_product`), when it has any |
//! | `"#ema/{param}"` | element type | the [`WeightEma`] average of `param` (the biased accumulator under [`EmaCorrection::Debias`]) |
//!
//! Unallocated buffers (a flag that is off) have no tensor. The header's `__metadata__` holds one
//! entry, `"optim_dsl"`, a JSON document with everything else: `format` (1), `optimizer`
//! (the type name, e.g. `"AdamW"`), `dtype` (`"f32"`/`"f64"`), the global `step`,
//! `skipped_steps`, `non_finite_policy`, `config` (every hyperparameter and flag by name, in
//! declaration order: `{"const": 0.9}`, `{"schedule": {...}}` (see [`crate::schedule`]),
//! `{"flag": true}`), `params` (per parameter: `name`, `step`, `rule`, `len`, one entry per
//! buffer slot (`null` when not allocated, else its tensor `key`, `name` and `len`), the
//! `#scalars` key and `scalars_init`), and `ema` (`decay`, `correction`, `include_buffers`,
//! `updates`, and per parameter `name`, `key`, `len`, `updates`). Non-finite floats in the JSON
//! are the strings `"nan"`, `"inf"`, `"-inf"`.
//!
//! Tensors store the exact bits of every buffer and scalar, so a run resumed from a checkpoint
//! is bit-identical to one that never stopped. Scratch buffers (`ParamState::temps`, the dfdx
//! staging copies) are not saved; they are recreated by the next step.
//!
//! A hyperparameter given a [`Schedule::Custom`] closure cannot be serialised: it is saved as
//! its description (`{"opaque": "custom(name)"}`) and, on load, the optimizer loaded into must
//! already hold a field with the same description, which is kept.

use crate::ema::{EmaCorrection, EmaParam};
use crate::schedule::fin;
use crate::{
    DslOptimizer, Field, Float, Hyper, NonFinitePolicy, OptimError, OptimizerConfig, ParamState,
    RuleBody, Schedule, WeightEma,
};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Version of the checkpoint format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// The `__metadata__` key holding the JSON document.
pub const METADATA_KEY: &str = "optim_dsl";

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    optimizer: String,
    dtype: String,
    step: u64,
    skipped_steps: u64,
    non_finite_policy: NonFinitePolicy,
    config: Vec<(String, FieldRepr)>,
    params: Vec<ParamMeta>,
    ema: Option<EmaMeta>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FieldRepr {
    Const(#[serde(with = "fin")] f64),
    Schedule(Schedule),
    Flag(bool),
    /// A field that cannot be serialised (a custom schedule), by its `Debug` description.
    Opaque(String),
}

#[derive(Serialize, Deserialize)]
struct ParamMeta {
    name: String,
    step: u64,
    rule: usize,
    len: usize,
    buffers: Vec<Option<BufferMeta>>,
    scalars: Option<String>,
    scalars_init: Vec<bool>,
}

#[derive(Serialize, Deserialize)]
struct BufferMeta {
    key: String,
    name: String,
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct EmaMeta {
    #[serde(with = "fin")]
    decay: f64,
    correction: EmaCorrection,
    include_buffers: bool,
    updates: u64,
    params: Vec<EmaParamMeta>,
}

#[derive(Serialize, Deserialize)]
struct EmaParamMeta {
    name: String,
    key: String,
    len: usize,
    updates: u64,
}

/// An owned little-endian tensor for `safetensors::serialize`.
struct Owned {
    dtype: Dtype,
    shape: [usize; 1],
    data: Vec<u8>,
}

impl safetensors::tensor::View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn ck(msg: impl Into<String>) -> OptimError {
    OptimError::Checkpoint(msg.into())
}

fn mismatch(param: &str, detail: impl Into<String>) -> OptimError {
    OptimError::CheckpointMismatch {
        param: param.to_string(),
        detail: detail.into(),
    }
}

/// The safetensors dtype of `E`.
fn dtype_of<E: Float>() -> Result<Dtype, OptimError> {
    match E::NAME {
        "f32" => Ok(Dtype::F32),
        "f64" => Ok(Dtype::F64),
        other => Err(ck(format!(
            "element type `{other}` is not supported (only f32 and f64)"
        ))),
    }
}

/// The exact little-endian bytes of `xs`.
fn encode<E: Float>(xs: &[E]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * E::BYTES);
    for x in xs {
        let a: &dyn Any = x;
        if let Some(v) = a.downcast_ref::<f32>() {
            out.extend_from_slice(&v.to_le_bytes());
        } else if let Some(v) = a.downcast_ref::<f64>() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn cast<T: Any + Copy, E: Any + Copy>(v: T) -> Option<E> {
    (&v as &dyn Any).downcast_ref::<E>().copied()
}

/// Decodes a tensor of `E` (dtype already checked).
fn decode<E: Float>(bytes: &[u8]) -> Option<Vec<E>> {
    match E::BYTES {
        4 => bytes
            .chunks_exact(4)
            .map(|c| cast::<f32, E>(f32::from_le_bytes(c.try_into().ok()?)))
            .collect(),
        8 => bytes
            .chunks_exact(8)
            .map(|c| cast::<f64, E>(f64::from_le_bytes(c.try_into().ok()?)))
            .collect(),
        _ => None,
    }
}

fn decode_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// Names of the live state buffers of rule `rule` per the plan, in slot order (a reused
/// optimizer's only rule, if it has one).
fn slot_names(plan: &crate::Plan, rule: usize) -> Vec<&'static str> {
    fn of(body: &RuleBody) -> Vec<&'static str> {
        match body {
            RuleBody::Fused { state, .. } => state.clone(),
            RuleBody::Reuse { plan } if plan.rules.len() == 1 => of(&plan.rules[0].body),
            RuleBody::Reuse { .. } => Vec::new(),
        }
    }
    plan.rules
        .get(rule)
        .map(|r| of(&r.body))
        .unwrap_or_default()
}

/// Serialises `opt` (and `ema`) into checkpoint bytes.
pub(crate) fn to_bytes<E: Float, O: DslOptimizer<E>>(
    opt: &O,
    ema: Option<&WeightEma<E>>,
) -> Result<Vec<u8>, OptimError> {
    let dtype = dtype_of::<E>()?;
    let state = opt.opt_state();
    let plan = opt.explain();
    let mut tensors: Vec<(String, Owned)> = Vec::new();
    let mut keys: HashSet<String> = HashSet::new();
    let mut claim = |preferred: String, fallback: String| -> Result<String, OptimError> {
        if keys.insert(preferred.clone()) {
            Ok(preferred)
        } else if keys.insert(fallback.clone()) {
            Ok(fallback)
        } else {
            Err(ck(format!(
                "tensor key `{fallback}` is used twice; rename the parameter"
            )))
        }
    };

    let mut params = Vec::with_capacity(state.params.len());
    for (name, ps) in &state.params {
        // Exact names by slot index when the optimizer provides them; otherwise the plan names
        // the live (allocated) buffers in slot order.
        let exact = O::state_names(ps.rule);
        let names: Vec<&'static str> = if exact.len() >= ps.buffers.len() {
            Vec::new()
        } else {
            let names = slot_names(&plan, ps.rule);
            let live = ps.buffers.iter().filter(|b| !b.is_empty()).count();
            if names.len() == live {
                names
            } else {
                Vec::new()
            }
        };
        let mut buffers = Vec::with_capacity(ps.buffers.len());
        let mut j = 0;
        for (k, buf) in ps.buffers.iter().enumerate() {
            if buf.is_empty() {
                buffers.push(None);
                continue;
            }
            let slot = if exact.len() >= ps.buffers.len() {
                exact
                    .get(k)
                    .map_or_else(|| format!("#{k}"), |s| s.to_string())
            } else {
                names
                    .get(j)
                    .map_or_else(|| format!("#{k}"), |s| s.to_string())
            };
            j += 1;
            let key = claim(format!("{name}/{slot}"), format!("{name}/#{k}"))?;
            tensors.push((
                key.clone(),
                Owned {
                    dtype,
                    shape: [buf.len()],
                    data: encode(buf),
                },
            ));
            buffers.push(Some(BufferMeta {
                key,
                name: slot,
                len: buf.len(),
            }));
        }
        let scalars = if ps.scalars.is_empty() {
            None
        } else {
            let key = claim(format!("{name}/#scalars"), format!("{name}/#scalars#"))?;
            tensors.push((
                key.clone(),
                Owned {
                    dtype: Dtype::F64,
                    shape: [ps.scalars.len()],
                    data: ps.scalars.iter().flat_map(|x| x.to_le_bytes()).collect(),
                },
            ));
            Some(key)
        };
        params.push(ParamMeta {
            name: name.clone(),
            step: ps.step,
            rule: ps.rule,
            len: ps.len,
            buffers,
            scalars,
            scalars_init: ps.scalars_init.clone(),
        });
    }

    let ema_meta = match ema {
        None => None,
        Some(ema) => {
            let mut ps = Vec::with_capacity(ema.params.len());
            for (name, p) in &ema.params {
                let key = claim(format!("#ema/{name}"), format!("#ema#/{name}"))?;
                tensors.push((
                    key.clone(),
                    Owned {
                        dtype,
                        shape: [p.value.len()],
                        data: encode(&p.value),
                    },
                ));
                ps.push(EmaParamMeta {
                    name: name.clone(),
                    key,
                    len: p.value.len(),
                    updates: p.updates,
                });
            }
            Some(EmaMeta {
                decay: ema.decay,
                correction: ema.correction,
                include_buffers: ema.include_buffers,
                updates: ema.updates,
                params: ps,
            })
        }
    };

    let config = opt
        .config()
        .fields()
        .into_iter()
        .map(|(n, f)| {
            let r = match f {
                Field::Flag(b) => FieldRepr::Flag(b),
                Field::Hyper(Hyper::Const(v)) => FieldRepr::Const(v),
                Field::Hyper(Hyper::Schedule(s)) if s.contains_custom() => {
                    FieldRepr::Opaque(format!("{s:?}"))
                }
                Field::Hyper(Hyper::Schedule(s)) => FieldRepr::Schedule(s),
            };
            (n.to_string(), r)
        })
        .collect();

    let meta = Meta {
        format: FORMAT_VERSION,
        optimizer: <O::Config as OptimizerConfig>::NAME.to_string(),
        dtype: E::NAME.to_string(),
        step: state.step,
        skipped_steps: state.skipped_steps,
        non_finite_policy: state.non_finite,
        config,
        params,
        ema: ema_meta,
    };
    let json = serde_json::to_string(&meta).map_err(|e| ck(format!("metadata: {e}")))?;
    let info = HashMap::from([(METADATA_KEY.to_string(), json)]);
    safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(info))
        .map_err(|e| ck(format!("safetensors: {e}")))
}

/// Writes the checkpoint to `path` through a sibling temporary file and a rename.
pub(crate) fn save_file<E: Float, O: DslOptimizer<E>>(
    opt: &O,
    ema: Option<&WeightEma<E>>,
    path: &Path,
) -> Result<(), OptimError> {
    let bytes = to_bytes(opt, ema)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, &bytes).map_err(|e| ck(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| ck(format!("renaming to {}: {e}", path.display())))
}

/// Reads a checkpoint file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, OptimError> {
    std::fs::read(path).map_err(|e| ck(format!("reading {}: {e}", path.display())))
}

/// Reads tensor `key` of parameter `param` as `E` with `len` elements.
fn read_tensor<E: Float>(
    st: &SafeTensors<'_>,
    param: &str,
    key: &str,
    len: usize,
    dtype: Dtype,
) -> Result<Vec<E>, OptimError> {
    let t = st
        .tensor(key)
        .map_err(|_| mismatch(param, format!("tensor `{key}` is missing from the file")))?;
    check_view(&t, param, key, len, dtype)?;
    decode::<E>(t.data()).ok_or_else(|| mismatch(param, format!("tensor `{key}` is malformed")))
}

fn check_view(
    t: &TensorView<'_>,
    param: &str,
    key: &str,
    len: usize,
    dtype: Dtype,
) -> Result<(), OptimError> {
    if t.dtype() != dtype {
        return Err(mismatch(
            param,
            format!(
                "tensor `{key}` has dtype {:?}, expected {dtype:?}",
                t.dtype()
            ),
        ));
    }
    if t.shape() != [len] {
        return Err(mismatch(
            param,
            format!("tensor `{key}` has shape {:?}, expected [{len}]", t.shape()),
        ));
    }
    Ok(())
}

/// Validates the whole checkpoint against `opt` (and `ema`), then swaps it in.
pub(crate) fn load<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    ema: Option<&mut WeightEma<E>>,
    bytes: &[u8],
) -> Result<(), OptimError> {
    let dtype = dtype_of::<E>()?;
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| ck(format!("not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| ck(format!("not a safetensors file: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            ck(format!(
                "no `{METADATA_KEY}` metadata: not an optim-dsl checkpoint"
            ))
        })?;
    let meta: Meta =
        serde_json::from_str(json).map_err(|e| ck(format!("malformed metadata: {e}")))?;
    if meta.format != FORMAT_VERSION {
        return Err(ck(format!(
            "format version {} is not supported (this build reads {FORMAT_VERSION})",
            meta.format
        )));
    }
    let name = <O::Config as OptimizerConfig>::NAME;
    if meta.optimizer != name {
        return Err(ck(format!(
            "written by optimizer `{}`, cannot load into `{name}`",
            meta.optimizer
        )));
    }
    if meta.dtype != E::NAME {
        let detail = format!(
            "the checkpoint's state is {}, this optimizer's is {}",
            meta.dtype,
            E::NAME
        );
        return Err(match meta.params.first() {
            Some(p) => mismatch(&p.name, detail),
            None => ck(detail),
        });
    }

    // Parameters: decode everything into fresh state.
    let current = &opt.opt_state().params;
    let mut new_params: BTreeMap<String, ParamState<E>> = BTreeMap::new();
    for pm in &meta.params {
        let p = pm.name.as_str();
        if new_params.contains_key(p) {
            return Err(mismatch(p, "recorded twice"));
        }
        if !current.is_empty() {
            match current.get(p) {
                None => {
                    return Err(mismatch(
                        p,
                        "the optimizer has no parameter of this name (unknown parameter)",
                    ))
                }
                Some(c) if c.len != pm.len => {
                    return Err(mismatch(
                        p,
                        format!(
                            "the checkpoint has {} elements, the optimizer's parameter has {}",
                            pm.len, c.len
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if pm.rule >= O::rule_count() {
            return Err(mismatch(
                p,
                format!(
                    "rule {} does not exist (`{name}` has {} rules)",
                    pm.rule,
                    O::rule_count()
                ),
            ));
        }
        let mut ps = ParamState::new(pm.rule, pm.len);
        ps.step = pm.step;
        for (slot, b) in pm.buffers.iter().enumerate() {
            let buf = match b {
                None => Vec::new(),
                Some(b) => {
                    if let Some(c) = current.get(p).and_then(|c| c.buffers.get(slot)) {
                        if !c.is_empty() && c.len() != b.len {
                            return Err(mismatch(
                                p,
                                format!(
                                    "state `{}` has {} elements in the checkpoint, {} in the optimizer",
                                    b.name,
                                    b.len,
                                    c.len()
                                ),
                            ));
                        }
                    }
                    read_tensor::<E>(&st, p, &b.key, b.len, dtype)?
                }
            };
            ps.buffers.push(buf);
        }
        match &pm.scalars {
            None if pm.scalars_init.is_empty() => {}
            None => return Err(mismatch(p, "scalar states are missing")),
            Some(key) => {
                let t = st
                    .tensor(key)
                    .map_err(|_| mismatch(p, format!("tensor `{key}` is missing from the file")))?;
                check_view(&t, p, key, pm.scalars_init.len(), Dtype::F64)?;
                ps.scalars = decode_f64(t.data());
            }
        }
        ps.scalars_init = pm.scalars_init.clone();
        new_params.insert(pm.name.clone(), ps);
    }
    if let Some(missing) = current.keys().find(|k| !new_params.contains_key(*k)) {
        return Err(mismatch(
            missing,
            "the optimizer has state for this parameter but the checkpoint does not",
        ));
    }

    // Config: set every field on a copy, then validate it at the checkpoint's step.
    let mut config = opt.config().clone();
    let fields = config.fields();
    let file_names: Vec<&str> = meta.config.iter().map(|(n, _)| n.as_str()).collect();
    let ours: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    if file_names != ours {
        return Err(ck(format!(
            "the checkpoint's config fields {file_names:?} differ from `{name}`'s {ours:?}"
        )));
    }
    for ((field, repr), (_, cur)) in meta.config.iter().zip(&fields) {
        let value = match repr {
            FieldRepr::Const(v) => Field::Hyper(Hyper::Const(*v)),
            FieldRepr::Schedule(s) => Field::Hyper(Hyper::Schedule(s.clone())),
            FieldRepr::Flag(b) => Field::Flag(*b),
            FieldRepr::Opaque(desc) => {
                let have = match cur {
                    Field::Hyper(Hyper::Schedule(s)) => format!("{s:?}"),
                    other => format!("{other:?}"),
                };
                if &have != desc {
                    return Err(ck(format!(
                        "hyperparameter `{field}` was the custom schedule {desc}, which cannot be \
                         stored; the optimizer must already hold it, but holds {have}"
                    )));
                }
                continue;
            }
        };
        config
            .set_field(field, value)
            .map_err(|e| ck(format!("config: {e}")))?;
    }
    config
        .values(meta.step)
        .map_err(|e| ck(format!("config: {e}")))?;
    let config_changed = config.fields() != opt.config().fields();
    if config_changed && opt.config_mut().is_none() {
        return Err(ck(format!(
            "the checkpoint's config differs from the optimizer's and `{name}` does not expose \
             `config_mut`; build the optimizer with the checkpoint's config"
        )));
    }

    // EMA.
    let new_ema = match (ema.as_deref(), &meta.ema) {
        (None, _) => None,
        (Some(_), None) => return Err(ck("the checkpoint has no weight EMA")),
        (Some(target), Some(em)) => {
            if !(0.0..1.0).contains(&em.decay) {
                return Err(ck(format!("EMA decay {} is not in [0, 1)", em.decay)));
            }
            let mut ps = BTreeMap::new();
            for p in &em.params {
                if !target.params.is_empty() {
                    match target.params.get(&p.name) {
                        None => {
                            return Err(mismatch(
                                &p.name,
                                "the EMA has no parameter of this name (unknown parameter)",
                            ))
                        }
                        Some(c) if c.value.len() != p.len => {
                            return Err(mismatch(
                                &p.name,
                                format!(
                                    "the checkpoint's EMA has {} elements, the EMA's has {}",
                                    p.len,
                                    c.value.len()
                                ),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                let value = read_tensor::<E>(&st, &p.name, &p.key, p.len, dtype)?;
                if ps
                    .insert(
                        p.name.clone(),
                        EmaParam {
                            value,
                            updates: p.updates,
                        },
                    )
                    .is_some()
                {
                    return Err(mismatch(&p.name, "recorded twice in the EMA"));
                }
            }
            if let Some(missing) = target.params.keys().find(|k| !ps.contains_key(*k)) {
                return Err(mismatch(
                    missing,
                    "the EMA averages this parameter but the checkpoint does not",
                ));
            }
            if target.is_swapped() {
                return Err(OptimError::InvalidUse(
                    "the EMA's averages are swapped into the model; swap back before loading"
                        .into(),
                ));
            }
            Some(WeightEma::from_parts(
                em.decay,
                em.correction,
                em.include_buffers,
                em.updates,
                ps,
            ))
        }
    };

    // Everything validated: swap in.
    if config_changed {
        if let Some(c) = opt.config_mut() {
            *c = config;
        }
    }
    let state = opt.opt_state_mut();
    state.step = meta.step;
    state.skipped_steps = meta.skipped_steps;
    state.non_finite = meta.non_finite_policy;
    state.params = new_params;
    if let (Some(target), Some(new)) = (ema, new_ema) {
        target.restore(new);
    }
    Ok(())
}
