//! serde for `f64` values that may be non-finite, for the JSON of schedules and checkpoints:
//! finite values as JSON numbers, others as the strings `"nan"`, `"inf"` and `"-inf"` (the
//! convention of the reference files). Use with `#[serde(with = "fin")]` (and `fin_vec`,
//! `fin_opt` for `Vec<f64>` and `Option<f64>`).

/// `f64`.
pub(crate) mod fin {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(crate) fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else if x.is_nan() {
            s.serialize_str("nan")
        } else if *x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    struct F;

    impl Visitor<'_> for F {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or one of \"nan\", \"inf\", \"-inf\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "nan" | "NaN" => Ok(f64::NAN),
                "inf" | "Infinity" => Ok(f64::INFINITY),
                "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(F)
    }

    /// Newtype so that containers of possibly non-finite floats can reuse this module.
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(transparent)]
    pub(crate) struct Fin(#[serde(with = "self")] pub(crate) f64);
}

/// serde for `Vec<f64>` with possibly non-finite elements (see `fin`).
pub(crate) mod fin_vec {
    use super::fin::Fin;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(xs: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<Fin> = xs.iter().map(|&x| Fin(x)).collect();
        v.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Fin>::deserialize(d)?
            .into_iter()
            .map(|f| f.0)
            .collect())
    }
}

/// serde for `Option<f64>` with a possibly non-finite value (see `fin`).
pub(crate) mod fin_opt {
    use super::fin::Fin;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        x.map(Fin).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Fin>::deserialize(d)?.map(|f| f.0))
    }
}
