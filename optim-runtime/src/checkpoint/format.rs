//! The metadata document and the tensor encoding shared by saving and loading.

use crate::ema::EmaCorrection;
use crate::error::OptimError;
use crate::float::Float;
use crate::lowp::q8::Q8Map;
use crate::lowp::StateDtype;
use crate::schedule::Schedule;
use crate::serde_fin::fin;
use crate::state::{Arithmetic, NonFinitePolicy, ScalarPrecision, ShapeChange};
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};
use std::any::Any;

/// The JSON document under [`METADATA_KEY`](super::METADATA_KEY) (see the module docs).
#[derive(Serialize, Deserialize)]
pub(super) struct Meta {
    pub format: u32,
    /// `"sha256:<64 lowercase hex digits>"` (format 2; absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub optimizer: String,
    pub dtype: String,
    pub step: u64,
    pub skipped_steps: u64,
    pub non_finite_policy: NonFinitePolicy,
    /// Absent in files written before it existed (the default then).
    #[serde(default)]
    pub shape_change: ShapeChange,
    /// Absent in files written before it existed (the default then).
    #[serde(default)]
    pub scalar_precision: ScalarPrecision,
    /// Absent in files written before it existed (the default then).
    #[serde(default)]
    pub arithmetic: Arithmetic,
    pub config: Vec<(String, FieldRepr)>,
    pub params: Vec<ParamMeta>,
    pub ema: Option<EmaMeta>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FieldRepr {
    Const(#[serde(with = "fin")] f64),
    Schedule(Schedule),
    Flag(bool),
    /// A field that cannot be serialised (a custom schedule), by its `Debug` description.
    Opaque(String),
}

#[derive(Serialize, Deserialize)]
pub(super) struct ParamMeta {
    pub name: String,
    pub step: u64,
    pub rule: usize,
    pub len: usize,
    /// The parameter's shape (absent in files written before shapes were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<usize>,
    pub buffers: Vec<Option<BufferMeta>>,
    pub scalars: Option<String>,
    pub scalars_init: Vec<bool>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct BufferMeta {
    pub key: String,
    pub name: String,
    pub len: usize,
    /// The storage type of a buffer kept in 16 bits (format 3); absent: the optimizer's
    /// element type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<StateDtype>,
    /// The map of a buffer kept 8-bit quantised (format 4): the tensor under `key` then holds
    /// its `U8` codes and the one under `scales` its `F32` block scales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q8: Option<Q8Map>,
    /// The key of the scales tensor of an 8-bit buffer (format 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scales: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct EmaMeta {
    #[serde(with = "fin")]
    pub decay: f64,
    pub correction: EmaCorrection,
    pub include_buffers: bool,
    pub updates: u64,
    pub params: Vec<EmaParamMeta>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct EmaParamMeta {
    pub name: String,
    pub key: String,
    pub len: usize,
    pub updates: u64,
}

/// An owned little-endian tensor for `safetensors::serialize`.
pub(super) struct Owned {
    pub dtype: Dtype,
    pub shape: [usize; 1],
    pub data: Vec<u8>,
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

pub(super) fn ck(msg: impl Into<String>) -> OptimError {
    OptimError::Checkpoint(msg.into())
}

pub(super) fn mismatch(param: &str, detail: impl Into<String>) -> OptimError {
    OptimError::CheckpointMismatch {
        param: param.to_string(),
        detail: detail.into(),
    }
}

/// The safetensors dtype of `E`.
pub(super) fn dtype_of<E: Float>() -> Result<Dtype, OptimError> {
    match E::NAME {
        "f32" => Ok(Dtype::F32),
        "f64" => Ok(Dtype::F64),
        other => Err(ck(format!(
            "element type `{other}` is not supported (only f32 and f64)"
        ))),
    }
}

/// The exact little-endian bytes of `xs`.
pub(super) fn encode<E: Float>(xs: &[E]) -> Vec<u8> {
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
pub(super) fn decode<E: Float>(bytes: &[u8]) -> Option<Vec<E>> {
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

pub(super) fn decode_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// The safetensors dtype of a 16-bit state buffer.
pub(super) fn low_dtype(d: StateDtype) -> Dtype {
    match d {
        StateDtype::Bf16 => Dtype::BF16,
        StateDtype::F16 => Dtype::F16,
    }
}

/// Decodes the little-endian bits of a 16-bit tensor.
pub(super) fn decode_bits(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}
