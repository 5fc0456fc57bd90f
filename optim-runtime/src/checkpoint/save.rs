//! Writing: the optimizer state (and an EMA) as one safetensors file.

use super::checksum;
use super::format::{
    ck, dtype_of, encode, low_dtype, BufferMeta, EmaMeta, EmaParamMeta, FieldRepr, Meta, Owned,
    ParamMeta,
};
use super::{FORMAT_VERSION, FORMAT_VERSION_LOW_PRECISION, FORMAT_VERSION_Q8, METADATA_KEY};
use crate::ema::WeightEma;
use crate::error::OptimError;
use crate::float::Float;
use crate::hyper::Hyper;
use crate::lowp::q8::Q8Map;
use crate::lowp::StateDtype;
use crate::optimizer::{DslOptimizer, Field, OptimizerConfig};
use crate::plan::{Plan, RuleBody};
use crate::state::{OptState, ParamState};
use safetensors::tensor::Dtype;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Names of the live state buffers of rule `rule` per the plan, in slot order (a reused
/// optimizer's only rule, if it has one).
fn slot_names(plan: &Plan, rule: usize) -> Vec<&'static str> {
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
pub(super) fn to_bytes<E: Float, O: DslOptimizer<E>>(
    opt: &O,
    ema: Option<&WeightEma<E>>,
) -> Result<Vec<u8>, OptimError> {
    let described = Described {
        name: <O::Config as OptimizerConfig>::NAME,
        plan: opt.explain(),
        state_names: O::state_names,
        fields: opt.config().fields(),
    };
    state_to_bytes(opt.opt_state(), &described, ema)
}

/// What a checkpoint records of an optimizer besides its state, read through its type once:
/// the serialisation below is then compiled once per element type, not once per optimizer.
struct Described {
    /// `OptimizerConfig::NAME`.
    name: &'static str,
    /// `DslOptimizer::explain`.
    plan: Plan,
    /// `DslOptimizer::state_names`.
    state_names: fn(usize) -> &'static [&'static str],
    /// `OptimizerConfig::fields` of the current config.
    fields: Vec<(&'static str, Field)>,
}

/// [`to_bytes`] of the optimizer state `state` described by `opt`.
fn state_to_bytes<E: Float>(
    state: &OptState<E>,
    opt: &Described,
    ema: Option<&WeightEma<E>>,
) -> Result<Vec<u8>, OptimError> {
    let dtype = dtype_of::<E>()?;
    // state held on a device (after a dfdx `Cuda` step) is read back first: a checkpoint holds
    // the same values whichever device the state is on
    let on_host;
    let state = if state.on_device() {
        on_host = state.to_host()?;
        &on_host
    } else {
        state
    };
    let mut out = Tensors::default();
    let mut params = Vec::with_capacity(state.params.len());
    for (name, ps) in &state.params {
        params.push(param_meta(&mut out, opt, name, ps, dtype)?);
    }
    let ema = match ema {
        None => None,
        Some(ema) => Some(ema_meta(&mut out, ema, dtype)?),
    };
    let meta = Meta {
        format: if out.any_q8 {
            FORMAT_VERSION_Q8
        } else if out.any_low {
            FORMAT_VERSION_LOW_PRECISION
        } else {
            FORMAT_VERSION
        },
        checksum: Some(checksum::placeholder()),
        optimizer: opt.name.to_string(),
        dtype: E::NAME.to_string(),
        step: state.step,
        skipped_steps: state.skipped_steps,
        non_finite_policy: state.non_finite,
        shape_change: state.shape_change,
        scalar_precision: state.scalar_precision,
        arithmetic: state.arithmetic,
        config: config_repr(&opt.fields),
        params,
        ema,
    };
    let json = serde_json::to_string(&meta).map_err(|e| ck(format!("metadata: {e}")))?;
    let info = HashMap::from([(METADATA_KEY.to_string(), json)]);
    let list = out.list.iter().map(|(k, t)| (k.as_str(), t));
    let mut file = safetensors::tensor::serialize(list, Some(info))
        .map_err(|e| ck(format!("safetensors: {e}")))?;
    checksum::seal(&mut file)?;
    Ok(file)
}

/// The tensors of a checkpoint being written, under unique keys, and which storage formats
/// they need.
#[derive(Default)]
struct Tensors {
    list: Vec<(String, Owned)>,
    keys: HashSet<String>,
    /// A buffer is stored in 16 bits (format 3).
    any_low: bool,
    /// A buffer is stored 8-bit quantised (format 4).
    any_q8: bool,
}

impl Tensors {
    /// `preferred` if no tensor has that key yet, else `fallback`.
    ///
    /// # Errors
    /// [`OptimError::Checkpoint`] when both keys are taken.
    fn claim(&mut self, preferred: String, fallback: String) -> Result<String, OptimError> {
        if self.keys.insert(preferred.clone()) {
            Ok(preferred)
        } else if self.keys.insert(fallback.clone()) {
            Ok(fallback)
        } else {
            Err(ck(format!(
                "tensor key `{fallback}` is used twice; rename the parameter"
            )))
        }
    }

    fn push(&mut self, key: &str, tensor: Owned) {
        self.list.push((key.to_string(), tensor));
    }
}

/// One state slot as stored: its tensor, its 16-bit storage type (`None`: the optimizer's
/// element type or 8-bit) and, for an 8-bit slot, its map and its block scales.
type Slot = (Owned, Option<StateDtype>, Option<(Q8Map, Owned)>);

/// Slot `k` of `ps` as stored (`None` when the slot holds no buffer): in `dtype` (the
/// optimizer's element type), in 16 bits, or 8-bit quantised with `F32` block scales.
fn slot<E: Float>(ps: &ParamState<E>, k: usize, dtype: Dtype) -> Option<Slot> {
    if let Some(buf) = ps.buffers.get(k).filter(|b| !b.is_empty()) {
        let data = encode(buf);
        return Some((owned(dtype, buf.len(), data), None, None));
    }
    if let Some(l) = ps.low.get(k).filter(|l| !l.bits.is_empty()) {
        let data = l.bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let t = owned(low_dtype(l.dtype), l.bits.len(), data);
        return Some((t, Some(l.dtype), None));
    }
    let q = ps.q8.get(k).filter(|q| !q.codes.is_empty())?;
    let scales = q.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    let scales = owned(Dtype::F32, q.scales.len(), scales);
    let codes = owned(Dtype::U8, q.codes.len(), q.codes.clone());
    Some((codes, None, Some((q.map, scales))))
}

/// A rank-1 tensor of `len` elements of type `dtype` with bytes `data`.
fn owned(dtype: Dtype, len: usize, data: Vec<u8>) -> Owned {
    Owned {
        dtype,
        shape: [len],
        data,
    }
}

/// The metadata of parameter `name`'s state `ps`, its buffers and scalars added to `out`.
/// Slots are named exactly by `state_names` when the optimizer provides a name for each;
/// otherwise the plan names the live (allocated) buffers in slot order; otherwise `#k`.
fn param_meta<E: Float>(
    out: &mut Tensors,
    opt: &Described,
    name: &str,
    ps: &ParamState<E>,
    dtype: Dtype,
) -> Result<ParamMeta, OptimError> {
    let exact = (opt.state_names)(ps.rule);
    // a slot lives in `buffers` or, stored in 16 or 8 bits, in `low` or `q8`
    let nslots = ps.buffers.len().max(ps.low.len()).max(ps.q8.len());
    let slots: Vec<Option<Slot>> = (0..nslots).map(|k| slot(ps, k, dtype)).collect();
    let names: Vec<&'static str> = if exact.len() >= nslots {
        exact.to_vec()
    } else {
        let planned = slot_names(&opt.plan, ps.rule);
        let live = slots.iter().flatten().count();
        if planned.len() == live {
            planned
        } else {
            Vec::new()
        }
    };
    let mut buffers = Vec::with_capacity(nslots);
    // the plan's names count live slots only; exact names count every slot
    let mut live = 0;
    for (k, stored) in slots.into_iter().enumerate() {
        let Some((tensor, low, q8)) = stored else {
            buffers.push(None);
            continue;
        };
        let at = if exact.len() >= nslots { k } else { live };
        live += 1;
        let slot = names
            .get(at)
            .map_or_else(|| format!("#{k}"), |s| s.to_string());
        let key = out.claim(format!("{name}/{slot}"), format!("{name}/#{k}"))?;
        let len = tensor.shape[0];
        out.any_low |= low.is_some();
        out.any_q8 |= q8.is_some();
        let (q8, scales) = match q8 {
            Some((map, t)) => {
                let skey = out.claim(format!("{key}#absmax"), format!("{name}/#{k}#absmax"))?;
                out.push(&skey, t);
                (Some(map), Some(skey))
            }
            None => (None, None),
        };
        out.push(&key, tensor);
        buffers.push(Some(BufferMeta {
            key,
            name: slot,
            len,
            dtype: low,
            q8,
            scales,
        }));
    }
    let scalars = if ps.scalars.is_empty() {
        None
    } else {
        let key = out.claim(format!("{name}/#scalars"), format!("{name}/#scalars#"))?;
        let data = ps.scalars.iter().flat_map(|x| x.to_le_bytes()).collect();
        out.push(&key, owned(Dtype::F64, ps.scalars.len(), data));
        Some(key)
    };
    Ok(ParamMeta {
        name: name.to_string(),
        step: ps.step,
        rule: ps.rule,
        len: ps.len,
        shape: ps.shape.clone(),
        buffers,
        scalars,
        scalars_init: ps.scalars_init.clone(),
    })
}

/// The metadata of the weight EMA `ema`, its averages added to `out` in `dtype`.
fn ema_meta<E: Float>(
    out: &mut Tensors,
    ema: &WeightEma<E>,
    dtype: Dtype,
) -> Result<EmaMeta, OptimError> {
    let mut params = Vec::with_capacity(ema.params.len());
    for (name, p) in &ema.params {
        let key = out.claim(format!("#ema/{name}"), format!("#ema#/{name}"))?;
        out.push(&key, owned(dtype, p.value.len(), encode(&p.value)));
        params.push(EmaParamMeta {
            name: name.clone(),
            key,
            len: p.value.len(),
            updates: p.updates,
        });
    }
    Ok(EmaMeta {
        decay: ema.decay,
        correction: ema.correction,
        include_buffers: ema.include_buffers,
        updates: ema.updates,
        params,
    })
}

/// The config's fields as recorded (a schedule with a custom function only by its `Debug`
/// form: it cannot be restored).
fn config_repr(fields: &[(&'static str, Field)]) -> Vec<(String, FieldRepr)> {
    fields
        .iter()
        .cloned()
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
        .collect()
}

/// Writes the checkpoint to `path` through a sibling temporary file and a rename.
pub(super) fn save_file<E: Float, O: DslOptimizer<E>>(
    opt: &O,
    ema: Option<&WeightEma<E>>,
    path: &Path,
) -> Result<(), OptimError> {
    write_file(path, &to_bytes(opt, ema)?)
}

/// Writes `bytes` to `path` through a sibling temporary file and a rename.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OptimError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).map_err(|e| ck(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| ck(format!("renaming to {}: {e}", path.display())))
}
