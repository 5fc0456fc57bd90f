//! The UCI "Optical Recognition of Handwritten Digits" data set, embedded in the binary.
//!
//! 1,797 samples of 8×8 images with pixel counts `0..=16`, labels `0..=9` (the copy shipped
//! by scikit-learn as `digits.csv.gz`). Source, citation and licence (CC BY 4.0; Alpaydin &
//! Kaynak, 1998, doi:10.24432/C50P49) are in `examples/data/README.md`.
//!
//! ```
//! let ds = examples::data::digits::load().unwrap();
//! assert_eq!((ds.n, ds.d, ds.classes), (1797, 64, 10));
//! let (train, test) = ds.split(0.2, 0);
//! assert_eq!(train.n + test.n, 1797);
//! ```

use std::path::PathBuf;

use super::{DataError, Dataset};

/// The gzipped CSV, embedded at compile time: one sample per line, 64 pixel values in
/// `0..=16` followed by the label in `0..=9`, comma-separated, no header.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Number of samples in the embedded data set.
pub const N_SAMPLES: usize = 1797;
/// Number of features (8×8 pixels).
pub const N_FEATURES: usize = 64;
/// Number of classes (digits 0–9).
pub const N_CLASSES: usize = 10;
/// Largest pixel value; features are divided by this to land in `[0, 1]`.
pub const MAX_PIXEL: f32 = 16.0;

const RESOURCE: &str = "<embedded>/examples/data/digits.csv.gz";

/// Decodes the embedded data set. Features are scaled to `[0, 1]` (divided by 16).
///
/// Takes a few milliseconds; the only failure would be a corrupt embedded file.
pub fn load() -> Result<Dataset, DataError> {
    parse_gz(DIGITS_CSV_GZ)
}

/// Decodes gzipped CSV data in the embedded format (see [`DIGITS_CSV_GZ`]).
pub fn parse_gz(bytes: &[u8]) -> Result<Dataset, DataError> {
    let text = super::gunzip(bytes, RESOURCE, |r, text: &mut String| {
        r.read_to_string(text)
    })?;
    parse_csv(&text)
}

/// Parses CSV text in the embedded format (see [`DIGITS_CSV_GZ`]). Blank lines are skipped;
/// every other line must hold exactly 65 integer fields with pixels in `0..=16` and the label
/// in `0..=9`.
pub fn parse_csv(text: &str) -> Result<Dataset, DataError> {
    let err = |line: usize, msg: String| DataError::Parse {
        path: PathBuf::from(RESOURCE),
        line,
        msg,
    };
    let mut features = Vec::with_capacity(N_SAMPLES * N_FEATURES);
    let mut labels = Vec::with_capacity(N_SAMPLES);
    for (lineno, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let mut fields = 0;
        for (col, field) in line.split(',').enumerate() {
            fields += 1;
            if col > N_FEATURES {
                continue; // counted, reported below
            }
            let value: u32 = field.trim().parse().map_err(|_| {
                err(
                    lineno,
                    format!("field {} is not a non-negative integer: {field:?}", col + 1),
                )
            })?;
            if col < N_FEATURES {
                if value > MAX_PIXEL as u32 {
                    return Err(err(
                        lineno,
                        format!("pixel {} is {value}, expected 0..=16", col + 1),
                    ));
                }
                features.push(value as f32 / MAX_PIXEL);
            } else {
                if value >= N_CLASSES as u32 {
                    return Err(err(lineno, format!("label {value} is not in 0..=9")));
                }
                labels.push(value as u8);
            }
        }
        if fields != N_FEATURES + 1 {
            return Err(err(
                lineno,
                format!("expected {} fields, found {fields}", N_FEATURES + 1),
            ));
        }
    }
    if labels.is_empty() {
        return Err(err(0, "no samples".to_string()));
    }
    Ok(Dataset {
        n: labels.len(),
        features,
        labels,
        d: N_FEATURES,
        classes: N_CLASSES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_loads() {
        let ds = load().unwrap();
        assert_eq!((ds.n, ds.d, ds.classes), (N_SAMPLES, N_FEATURES, N_CLASSES));
        assert_eq!(ds.features.len(), ds.n * ds.d);
        assert!(ds.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
        // Every digit is present in roughly equal numbers (174..=183 in this copy).
        assert!(ds.class_counts().iter().all(|&c| (170..=185).contains(&c)));
        // First sample is a 0: pixels 0,0,5,13,9,1,0,0 in its top row.
        assert_eq!(ds.labels[0], 0);
        assert_eq!(&ds.row(0)[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
    }

    #[test]
    fn bad_rows_are_errors() {
        let good = format!("{}1\n", "0,".repeat(64));
        assert_eq!(parse_csv(&good).unwrap().labels, vec![1]);
        let short = format!("{}1\n", "0,".repeat(63));
        assert!(parse_csv(&short)
            .unwrap_err()
            .to_string()
            .contains("expected 65 fields, found 64"));
        let bad_label = format!("{}10\n", "0,".repeat(64));
        assert!(parse_csv(&bad_label)
            .unwrap_err()
            .to_string()
            .contains("label 10"));
        let bad_pixel = format!("17,{}1\n", "0,".repeat(63));
        assert!(parse_csv(&bad_pixel)
            .unwrap_err()
            .to_string()
            .contains("17"));
        assert!(parse_gz(b"not gzip").is_err());
    }
}
