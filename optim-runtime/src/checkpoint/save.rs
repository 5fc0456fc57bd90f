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
use crate::optimizer::{DslOptimizer, Field, OptimizerConfig};
use crate::plan::{Plan, RuleBody};
use crate::state::OptState;
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
    let plan = &opt.plan;
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
    let mut any_low = false;
    let mut any_q8 = false;
    for (name, ps) in &state.params {
        // Exact names by slot index when the optimizer provides them; otherwise the plan names
        // the live (allocated) buffers in slot order.
        let exact = (opt.state_names)(ps.rule);
        // a slot lives in `buffers` or, stored in 16 bits, in `low`
        let nslots = ps.buffers.len().max(ps.low.len()).max(ps.q8.len());
        let full = |k: usize| ps.buffers.get(k).filter(|b| !b.is_empty());
        let low = |k: usize| ps.low.get(k).filter(|l| !l.bits.is_empty());
        let quant = |k: usize| ps.q8.get(k).filter(|q| !q.codes.is_empty());
        let names: Vec<&'static str> = if exact.len() >= nslots {
            Vec::new()
        } else {
            let names = slot_names(plan, ps.rule);
            let live = (0..nslots)
                .filter(|&k| full(k).is_some() || low(k).is_some() || quant(k).is_some())
                .count();
            if names.len() == live {
                names
            } else {
                Vec::new()
            }
        };
        let mut buffers = Vec::with_capacity(nslots);
        let mut j = 0;
        for k in 0..nslots {
            let mut q8 = None;
            let (tensor, stored) = match (full(k), low(k)) {
                (None, None) if quant(k).is_some() => {
                    any_q8 = true;
                    let q = quant(k).unwrap_or(&ps.q8[k]);
                    q8 = Some((
                        q.map,
                        Owned {
                            dtype: Dtype::F32,
                            shape: [q.scales.len()],
                            data: q.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                        },
                    ));
                    (
                        Owned {
                            dtype: Dtype::U8,
                            shape: [q.codes.len()],
                            data: q.codes.clone(),
                        },
                        None,
                    )
                }
                (Some(buf), _) => (
                    Owned {
                        dtype,
                        shape: [buf.len()],
                        data: encode(buf),
                    },
                    None,
                ),
                (None, Some(l)) => {
                    any_low = true;
                    (
                        Owned {
                            dtype: low_dtype(l.dtype),
                            shape: [l.bits.len()],
                            data: l.bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
                        },
                        Some(l.dtype),
                    )
                }
                (None, None) => {
                    buffers.push(None);
                    continue;
                }
            };
            let slot = if exact.len() >= nslots {
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
            let len = tensor.shape[0];
            let (q8, scales) = match q8 {
                Some((map, t)) => {
                    let skey = claim(format!("{key}#absmax"), format!("{name}/#{k}#absmax"))?;
                    tensors.push((skey.clone(), t));
                    (Some(map), Some(skey))
                }
                None => (None, None),
            };
            tensors.push((key.clone(), tensor));
            buffers.push(Some(BufferMeta {
                key,
                name: slot,
                len,
                dtype: stored,
                q8,
                scales,
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
            shape: ps.shape.clone(),
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
        .fields
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
        .collect();

    let meta = Meta {
        format: if any_q8 {
            FORMAT_VERSION_Q8
        } else if any_low {
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
        config,
        params,
        ema: ema_meta,
    };
    let json = serde_json::to_string(&meta).map_err(|e| ck(format!("metadata: {e}")))?;
    let info = HashMap::from([(METADATA_KEY.to_string(), json)]);
    let mut file =
        safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(info))
            .map_err(|e| ck(format!("safetensors: {e}")))?;
    checksum::seal(&mut file)?;
    Ok(file)
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
