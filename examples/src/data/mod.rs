//! Data sets for the examples: an in-memory [`Dataset`] type, deterministic splitting and
//! mini-batching, and loaders for the embedded UCI digits ([`digits`]), for Fashion-MNIST
//! IDX files on disk ([`idx`]) and for the embedded Shakespeare text ([`text`]).
//!
//! Everything random here is driven by [`SplitMix64`], a tiny self-contained PRNG, so a given
//! `seed` produces the same split and the same batch order on every platform.

pub mod digits;
pub mod idx;
pub mod text;

use std::io::Read;
use std::path::PathBuf;

/// Everything that can go wrong while loading a data set. No loader in this module panics on
/// bad input; each problem is reported as one of these variants with a message that says what
/// was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A required data file does not exist.
    #[error("data file not found: {path}\n  hint: {hint}")]
    Missing {
        /// The path that was looked for.
        path: PathBuf,
        /// How to obtain the file.
        hint: String,
    },
    /// An I/O error other than "not found" while reading a file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A gzip stream could not be decompressed (corrupt or cut short).
    #[error("cannot decompress {path} (corrupt or truncated gzip data): {source}")]
    Decompress {
        /// The file (or embedded resource) being decompressed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An IDX file did not start with the expected magic number.
    #[error(
        "{path}: bad magic number 0x{found:08x}, expected 0x{expected:08x} ({what}); \
         is this really an IDX {what} file?"
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number the reader expected.
        expected: u32,
        /// The magic number found in the file.
        found: u32,
        /// What kind of file was expected ("images" or "labels").
        what: &'static str,
    },
    /// A file is shorter than its header says it should be.
    #[error("{path}: truncated: header promises {expected} bytes but only {found} are present")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The number of bytes the header promises (header included).
        expected: u64,
        /// The number of bytes actually present.
        found: u64,
    },
    /// A file is longer than its header says it should be.
    #[error("{path}: {extra} unexpected trailing bytes after the data the header describes")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// How many bytes follow the data.
        extra: u64,
    },
    /// A header describes an impossible shape (a zero dimension, or a size that overflows).
    #[error("{path}: invalid header: {msg}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The image file and the label file disagree on the number of samples.
    #[error(
        "sample count mismatch: {images_path} holds {images} images but {labels_path} \
         holds {labels} labels"
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Number of images in it.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Number of labels in it.
        labels: usize,
    },
    /// A label is outside `0..classes`.
    #[error("{path}: label {label} at sample {index} is out of range (expected 0..={max})")]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Index of the offending sample.
        index: usize,
        /// The label found.
        label: u32,
        /// The largest valid label.
        max: u32,
    },
    /// A text (CSV) data file could not be parsed.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The file (or embedded resource).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// An argument of a data function is out of its domain (e.g. a split fraction outside
    /// `(0, 1)`); the message names the argument and the value.
    #[error("{0}")]
    InvalidArgument(String),
}

/// A labelled classification data set held in memory.
///
/// `features` is `n × d`, row-major: sample `i` is `features[i * d..(i + 1) * d]`, and its
/// class is `labels[i]`, which is always `< classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Feature matrix, `n × d`, row-major, already scaled (to `[0, 1]` for the loaders here).
    pub features: Vec<f32>,
    /// Class label of each sample, each `< classes`.
    pub labels: Vec<u8>,
    /// Number of samples.
    pub n: usize,
    /// Number of features per sample.
    pub d: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// The features of sample `i` (a slice of length `d`).
    ///
    /// # Panics
    /// If `i >= n`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.d..(i + 1) * self.d]
    }

    /// A new data set holding the samples at `indices`, in that order.
    ///
    /// # Panics
    /// If any index is `>= n`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.d);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            features,
            labels,
            n: indices.len(),
            d: self.d,
            classes: self.classes,
        }
    }

    /// Number of samples of each class (a vector of length `classes`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Splits into `(train, test)` deterministically.
    ///
    /// The split is stratified: within each class the samples are shuffled with a PRNG seeded
    /// by `seed`, and `round(count * test_fraction)` of them go to the test set, so both parts
    /// keep the class proportions. Both parts keep the original sample order (shuffle with
    /// [`Dataset::batches`] when training). The result depends only on the data, `test_fraction`
    /// and `seed`, never on the platform.
    ///
    /// # Panics
    /// If `test_fraction` is not within `[0, 1]`.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        assert!(
            (0.0..=1.0).contains(&test_fraction),
            "test_fraction must be within [0, 1], got {test_fraction}"
        );
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let mut rng = SplitMix64::new(seed);
        let mut is_test = vec![false; self.n];
        for members in &mut by_class {
            rng.shuffle(members);
            let k = (members.len() as f64 * test_fraction).round() as usize;
            for &i in &members[..k.min(members.len())] {
                is_test[i] = true;
            }
        }
        let (test_idx, train_idx): (Vec<usize>, Vec<usize>) =
            (0..self.n).partition(|&i| is_test[i]);
        (self.subset(&train_idx), self.subset(&test_idx))
    }

    /// Iterates over shuffled mini-batches for one epoch.
    ///
    /// The sample order is a permutation drawn from a PRNG seeded by `(seed, epoch)`, so each
    /// epoch sees a different but reproducible order. Every sample appears exactly once; the
    /// last batch is smaller when `batch` does not divide `n`. Each item is
    /// `(features, labels)` with `features.len() == labels.len() * d` (row-major).
    ///
    /// # Panics
    /// If `batch == 0`.
    pub fn batches(&self, batch: usize, seed: u64, epoch: u64) -> Batches<'_> {
        assert!(batch > 0, "batch size must be positive");
        let mut order: Vec<usize> = (0..self.n).collect();
        let mut rng = SplitMix64::new(seed ^ SplitMix64::new(epoch).next_u64());
        rng.shuffle(&mut order);
        Batches {
            data: self,
            order,
            pos: 0,
            batch,
        }
    }

    /// Iterates over the samples in their stored order, in chunks of at most `batch`
    /// (for evaluation). Items have the same shape as those of [`Dataset::batches`].
    ///
    /// # Panics
    /// If `batch == 0`.
    pub fn chunks(&self, batch: usize) -> Batches<'_> {
        assert!(batch > 0, "batch size must be positive");
        Batches {
            data: self,
            order: (0..self.n).collect(),
            pos: 0,
            batch,
        }
    }
}

/// Iterator over mini-batches of a [`Dataset`]; see [`Dataset::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    pos: usize,
    batch: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Vec<f32>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch).min(self.order.len());
        let idx = &self.order[self.pos..end];
        self.pos = end;
        let d = self.data.d;
        let mut features = Vec::with_capacity(idx.len() * d);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            features.extend_from_slice(self.data.row(i));
            labels.push(self.data.labels[i]);
        }
        Some((features, labels))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.pos).div_ceil(self.batch);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// SplitMix64 (Steele, Lea & Flood, 2014): a tiny, fast, platform-independent PRNG.
/// Used for shuffling so that splits and batch orders are reproducible everywhere.
/// Not cryptographically secure.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniformly distributed integer in `0..bound` (unbiased, by rejection).
    ///
    /// # Panics
    /// If `bound == 0`.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "bound must be positive");
        // Reject the top partial block so every residue is equally likely.
        let zone = u64::MAX - (u64::MAX % bound + 1) % bound;
        loop {
            let x = self.next_u64();
            if x <= zone {
                return x % bound;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Decompresses the embedded gzip stream `bytes` (called `resource` in errors), reading it
/// with `read` (`read_to_end` or `read_to_string`).
///
/// # Errors
/// [`DataError::Decompress`] for corrupt gzip data (or what `read` refuses).
pub(crate) fn gunzip<T: Default>(
    bytes: &[u8],
    resource: &str,
    read: impl FnOnce(&mut dyn Read, &mut T) -> std::io::Result<usize>,
) -> Result<T, DataError> {
    let mut out = T::default();
    read(&mut flate2::read::GzDecoder::new(bytes), &mut out).map_err(|source| {
        DataError::Decompress {
            path: PathBuf::from(resource),
            source,
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset {
            features: (0..n * 2).map(|x| x as f32).collect(),
            labels: (0..n).map(|i| (i % 3) as u8).collect(),
            n,
            d: 2,
            classes: 3,
        }
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SplitMix64::new(7);
        for bound in [1u64, 2, 3, 10, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(r.below(bound) < bound);
            }
        }
    }

    #[test]
    fn split_is_stratified_deterministic_and_disjoint() {
        let ds = toy(300);
        let (tr, te) = ds.split(0.2, 42);
        assert_eq!(tr.n + te.n, 300);
        assert_eq!(te.class_counts(), vec![20, 20, 20]);
        assert_eq!(tr.class_counts(), vec![80, 80, 80]);
        // Each sample's first feature is 2*i, so it identifies the sample.
        let mut seen: Vec<usize> = tr
            .features
            .chunks(2)
            .chain(te.features.chunks(2))
            .map(|r| r[0] as usize / 2)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        assert_eq!(ds.split(0.2, 42), (tr.clone(), te.clone()));
        assert_ne!(ds.split(0.2, 43).1, te);
    }

    #[test]
    fn batches_cover_every_sample_once_and_vary_by_epoch() {
        let ds = toy(10);
        let b: Vec<_> = ds.batches(4, 1, 0).collect();
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.iter().map(|(_, l)| l.len()).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        let mut ids: Vec<usize> = b
            .iter()
            .flat_map(|(f, _)| f.chunks(2).map(|r| r[0] as usize / 2))
            .collect();
        let first_order = ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        for (f, l) in &b {
            for (row, &lab) in f.chunks(2).zip(l) {
                assert_eq!(ds.labels[row[0] as usize / 2], lab);
            }
        }
        let again: Vec<_> = ds.batches(4, 1, 0).collect();
        assert_eq!(again, b);
        let other: Vec<usize> = ds
            .batches(4, 1, 1)
            .flat_map(|(f, _)| f.chunks(2).map(|r| r[0] as usize / 2).collect::<Vec<_>>())
            .collect();
        assert_ne!(other, first_order);
        assert_eq!(ds.chunks(4).len(), 3);
    }
}
