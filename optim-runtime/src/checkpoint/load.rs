//! Reading: validate the whole file against the optimizer, then swap it in.

use super::checksum;
use super::format::{
    ck, decode, decode_bits, decode_f64, dtype_of, low_dtype, mismatch, BufferMeta, FieldRepr,
    Meta, ParamMeta,
};
use super::{FORMAT_VERSION, FORMAT_VERSION_LOW_PRECISION, FORMAT_VERSION_Q8, METADATA_KEY};
use crate::ema::{EmaParam, WeightEma};
use crate::error::OptimError;
use crate::float::Float;
use crate::hyper::Hyper;
use crate::lowp::q8::{self, Q8Buf, Q8Map};
use crate::lowp::LowBuf;
use crate::optimizer::{DslOptimizer, Field, OptimizerConfig};
use crate::state::{grow, OptState, ParamState};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads a checkpoint file.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, OptimError> {
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

/// An 8-bit buffer (format 4): its `U8` codes under `b.key` (`b.len` of them) and its `F32`
/// block scales under `b.scales` (`ceil(b.len / 256)`).
fn read_q8(
    st: &SafeTensors<'_>,
    param: &str,
    b: &BufferMeta,
    map: Q8Map,
) -> Result<Q8Buf, OptimError> {
    let missing = |key: &str| mismatch(param, format!("tensor `{key}` is missing from the file"));
    let t = st.tensor(&b.key).map_err(|_| missing(&b.key))?;
    check_view(&t, param, &b.key, b.len, Dtype::U8)?;
    let codes = t.data().to_vec();
    let skey = b.scales.as_deref().ok_or_else(|| {
        mismatch(
            param,
            format!("8-bit state `{}` names no scales tensor", b.name),
        )
    })?;
    let t = st.tensor(skey).map_err(|_| missing(skey))?;
    check_view(&t, param, skey, q8::blocks(b.len), Dtype::F32)?;
    let scales = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Q8Buf { map, codes, scales })
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

/// Checks the format version and, from format 2 on, the checksum: everything after this reads
/// a file exactly as it was written.
fn check_integrity(bytes: &[u8], meta: &Meta) -> Result<(), OptimError> {
    match (meta.format, meta.checksum.as_deref()) {
        // Format 1 has no checksum: read as before; the next save writes the current format.
        (1, None) => Ok(()),
        (1, Some(_)) => Err(ck(
            "format 1 has no checksum, but this file has one: the file is corrupt",
        )),
        (FORMAT_VERSION | FORMAT_VERSION_LOW_PRECISION | FORMAT_VERSION_Q8, Some(sum)) => {
            checksum::verify(bytes, sum)
        }
        (v @ (FORMAT_VERSION | FORMAT_VERSION_LOW_PRECISION | FORMAT_VERSION_Q8), None) => Err(ck(
            format!("format {v} requires a checksum, but this file has none: the file is corrupt"),
        )),
        (v, _) => Err(ck(format!(
            "format version {v} is not supported (this build reads 1 to \
             {FORMAT_VERSION_Q8})"
        ))),
    }
}

/// Validates the whole checkpoint against `opt` (and `ema`), then swaps it in.
pub(super) fn load<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    ema: Option<&mut WeightEma<E>>,
    bytes: &[u8],
) -> Result<(), OptimError> {
    let mut config = opt.config().clone();
    let target = Target {
        name: <O::Config as OptimizerConfig>::NAME,
        rule_count: O::rule_count(),
        exposes_config: opt.config_mut().is_some(),
        state: opt.opt_state_mut(),
    };
    if load_into(target, &mut config, ema, bytes)? {
        if let Some(c) = opt.config_mut() {
            *c = config;
        }
    }
    Ok(())
}

/// What a load needs of the optimizer besides its config, read through its type once: the
/// loading below is then compiled once per element type, not once per optimizer.
struct Target<'o, E> {
    /// `OptimizerConfig::NAME`.
    name: &'static str,
    /// `DslOptimizer::rule_count`.
    rule_count: usize,
    /// Whether `DslOptimizer::config_mut` gives access to the config.
    exposes_config: bool,
    /// The optimizer state, replaced when the whole file is valid.
    state: &'o mut OptState<E>,
}

/// The calls a load makes on the optimizer's config, object-safe (see [`Target`]).
trait LoadConfig {
    /// `OptimizerConfig::fields`.
    fn fields(&self) -> Vec<(&'static str, Field)>;
    /// `OptimizerConfig::set_field`.
    fn set_field(&mut self, name: &str, value: Field) -> Result<(), OptimError>;
    /// `OptimizerConfig::values` at `step`, for its error only.
    fn check_values(&self, step: u64) -> Result<(), OptimError>;
}

impl<C: OptimizerConfig> LoadConfig for C {
    fn fields(&self) -> Vec<(&'static str, Field)> {
        OptimizerConfig::fields(self)
    }
    fn set_field(&mut self, name: &str, value: Field) -> Result<(), OptimError> {
        OptimizerConfig::set_field(self, name, value)
    }
    fn check_values(&self, step: u64) -> Result<(), OptimError> {
        self.values(step).map(|_| ())
    }
}

/// [`load`] into `opt`'s state, with `config` a copy of its config: validates everything, then
/// swaps the state (and `ema`) in and sets `config` to the checkpoint's. `Ok(true)` when that
/// config differs from the optimizer's (the caller then stores it through `config_mut`).
fn load_into<E: Float>(
    opt: Target<'_, E>,
    config: &mut dyn LoadConfig,
    ema: Option<&mut WeightEma<E>>,
    bytes: &[u8],
) -> Result<bool, OptimError> {
    let dtype = dtype_of::<E>()?;
    let (st, meta) = read_meta(bytes)?;
    check_identity::<E>(&meta, opt.name)?;
    let new_params = decode_params(
        &st,
        &meta,
        &opt.state.params,
        opt.rule_count,
        opt.name,
        dtype,
    )?;
    let config_changed = decode_config(config, &meta, opt.name, opt.exposes_config)?;
    let new_ema = decode_ema(&st, &meta, ema.as_deref(), dtype)?;

    // Everything validated: swap in (the config through the caller).
    let state = opt.state;
    state.step = meta.step;
    state.skipped_steps = meta.skipped_steps;
    state.non_finite = meta.non_finite_policy;
    state.shape_change = meta.shape_change;
    state.scalar_precision = meta.scalar_precision;
    state.arithmetic = meta.arithmetic;
    state.params = new_params;
    // device copies of the old state are stale; the next device step uploads the loaded state
    // (the parameter copies stay: they mirror the model, which a checkpoint does not change)
    if let Some(store) = state.device.0.as_mut() {
        store.clear_state();
    }
    // the host master copies (`ParamSync::Master`) stay too: a rollback that also writes the
    // model's weights in place gives those tensors new storage, which the next CPU step sees
    if let (Some(target), Some(new)) = (ema, new_ema) {
        target.restore(new);
    }
    Ok(config_changed)
}

/// The file's safetensors view and its metadata, after the format and checksum checks.
fn read_meta(bytes: &[u8]) -> Result<(SafeTensors<'_>, Meta), OptimError> {
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
    check_integrity(bytes, &meta)?;
    Ok((st, meta))
}

/// The file was written by optimizer `name` with state of element type `E`.
fn check_identity<E: Float>(meta: &Meta, name: &str) -> Result<(), OptimError> {
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

    Ok(())
}

/// Every parameter's state decoded from the file into fresh state, checked against the
/// optimizer's `current` state (when it has any: names, lengths, buffers) and its rule count.
fn decode_params<E: Float>(
    st: &SafeTensors<'_>,
    meta: &Meta,
    current: &BTreeMap<String, ParamState<E>>,
    rule_count: usize,
    name: &str,
    dtype: Dtype,
) -> Result<BTreeMap<String, ParamState<E>>, OptimError> {
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
        if pm.rule >= rule_count {
            return Err(mismatch(
                p,
                format!(
                    "rule {} does not exist (`{name}` has {} rules)",
                    pm.rule, rule_count
                ),
            ));
        }
        let ps = decode_param(st, pm, current.get(p), dtype)?;
        new_params.insert(pm.name.clone(), ps);
    }
    if let Some(missing) = current.keys().find(|k| !new_params.contains_key(*k)) {
        return Err(mismatch(
            missing,
            "the optimizer has state for this parameter but the checkpoint does not",
        ));
    }

    Ok(new_params)
}

/// One parameter's state (`pm`), checked against the optimizer's state for it, if any.
fn decode_param<E: Float>(
    st: &SafeTensors<'_>,
    pm: &ParamMeta,
    current: Option<&ParamState<E>>,
    dtype: Dtype,
) -> Result<ParamState<E>, OptimError> {
    let p = pm.name.as_str();
    let mut ps = ParamState::new(pm.rule, pm.len);
    ps.shape = pm.shape.clone();
    ps.step = pm.step;
    for (slot, b) in pm.buffers.iter().enumerate() {
        let Some(b) = b else {
            ps.buffers.push(Vec::new());
            continue;
        };
        let have = current.and_then(|c| {
            c.buffers
                .get(slot)
                .filter(|x| !x.is_empty())
                .map(Vec::len)
                .or_else(|| {
                    c.low
                        .get(slot)
                        .filter(|l| !l.bits.is_empty())
                        .map(|l| l.bits.len())
                })
                .or_else(|| c.slot_q8(slot).map(|_| c.q8[slot].codes.len()))
        });
        if let Some(have) = have.filter(|&h| h != b.len) {
            return Err(mismatch(
                p,
                format!(
                    "state `{}` has {} elements in the checkpoint, {have} in the optimizer",
                    b.name, b.len
                ),
            ));
        }
        if let Some(map) = b.q8 {
            ps.buffers.push(Vec::new());
            grow(&mut ps.q8, slot, || Q8Buf::empty(map));
            ps.q8[slot] = read_q8(st, p, b, map)?;
            continue;
        }
        match b.dtype {
            None => ps
                .buffers
                .push(read_tensor::<E>(st, p, &b.key, b.len, dtype)?),
            Some(d) => {
                // a 16-bit buffer, kept as stored (format 3)
                let t = st.tensor(&b.key).map_err(|_| {
                    mismatch(p, format!("tensor `{}` is missing from the file", b.key))
                })?;
                check_view(&t, p, &b.key, b.len, low_dtype(d))?;
                grow(&mut ps.low, slot, || LowBuf::empty(d));
                ps.low[slot] = LowBuf {
                    dtype: d,
                    bits: decode_bits(t.data()),
                };
                ps.buffers.push(Vec::new());
            }
        }
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
    Ok(ps)
}

/// Sets every config field of the file on `config` (a copy of the optimizer's), then validates
/// it at the checkpoint's step. `Ok(true)` when it differs from the optimizer's config, which
/// is an error unless the optimizer exposes `config_mut` (`exposes_config`).
fn decode_config(
    config: &mut dyn LoadConfig,
    meta: &Meta,
    name: &str,
    exposes_config: bool,
) -> Result<bool, OptimError> {
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
        .check_values(meta.step)
        .map_err(|e| ck(format!("config: {e}")))?;
    let config_changed = config.fields() != fields;
    if config_changed && !exposes_config {
        return Err(ck(format!(
            "the checkpoint's config differs from the optimizer's and `{name}` does not expose \
             `config_mut`; build the optimizer with the checkpoint's config"
        )));
    }

    Ok(config_changed)
}

/// The file's weight EMA for `ema` (`None` when the caller loads no EMA), checked against it.
fn decode_ema<E: Float>(
    st: &SafeTensors<'_>,
    meta: &Meta,
    ema: Option<&WeightEma<E>>,
    dtype: Dtype,
) -> Result<Option<WeightEma<E>>, OptimError> {
    Ok(match (ema, &meta.ema) {
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
                let value = read_tensor::<E>(st, &p.name, &p.key, p.len, dtype)?;
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
    })
}
