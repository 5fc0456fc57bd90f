//! An embedded English text for character-level language modelling: eight of Shakespeare's
//! tragedies (public domain), as byte tokens, with a train/validation split and reproducible
//! batches of fixed-length windows.
//!
//! The text is pure ASCII, so a "character" is a byte and every token is below [`VOCAB`].
//! Source, exact provenance and licence are in `examples/data/README.md`.
//!
//! ```
//! use examples::data::text;
//!
//! let corpus = text::load().unwrap();
//! let (train, val) = corpus.split(0.1).unwrap();
//! assert_eq!(train.len() + val.len(), corpus.len());
//! let (inputs, targets) = train.batch(4, 64, 0, 0);
//! assert_eq!((inputs.len(), targets.len()), (4 * 64, 4 * 64));
//! assert_eq!(inputs[1..64], targets[..63]); // targets are the inputs shifted by one
//! ```

use std::path::PathBuf;

use super::{DataError, SplitMix64};

/// The gzipped text, embedded at compile time: Hamlet, Macbeth, Othello, King Lear, Romeo and
/// Juliet, Julius Caesar, Antony and Cleopatra and Coriolanus, in that order, each followed by
/// three newlines (1,158,242 bytes of ASCII; 458,045 bytes compressed).
pub const SHAKESPEARE_GZ: &[u8] = include_bytes!("../../data/shakespeare-tragedies.txt.gz");

/// Number of bytes of the decompressed embedded text.
pub const SHAKESPEARE_LEN: usize = 1_158_242;

/// Size of the token vocabulary: every ASCII byte (`0..128`). The embedded text uses 73 of
/// them; the others never occur, and a model learns to give them no probability.
pub const VOCAB: usize = 128;

const RESOURCE: &str = "<embedded>/examples/data/shakespeare-tragedies.txt.gz";

/// A sequence of byte tokens (each `< VOCAB`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corpus {
    /// The tokens: the text's bytes.
    pub tokens: Vec<u8>,
}

/// Decodes the embedded Shakespeare text (a few milliseconds).
///
/// # Errors
/// [`DataError::Decompress`] or [`DataError::Parse`] only if the embedded file were corrupt.
pub fn load() -> Result<Corpus, DataError> {
    parse_gz(SHAKESPEARE_GZ)
}

/// Decodes gzipped ASCII text into a [`Corpus`].
///
/// # Errors
/// [`DataError::Decompress`] for corrupt gzip data; [`DataError::Parse`] for a byte that is
/// not ASCII (`>= 128`), naming its line.
pub fn parse_gz(bytes: &[u8]) -> Result<Corpus, DataError> {
    let tokens = super::gunzip(bytes, RESOURCE, |r, tokens: &mut Vec<u8>| {
        r.read_to_end(tokens)
    })?;
    Corpus::from_ascii(tokens)
}

impl Corpus {
    /// Wraps ASCII bytes as tokens.
    ///
    /// # Errors
    /// [`DataError::Parse`] naming the line (1-based) of the first byte `>= 128`.
    pub fn from_ascii(tokens: Vec<u8>) -> Result<Self, DataError> {
        if let Some(pos) = tokens.iter().position(|&b| usize::from(b) >= VOCAB) {
            let line = 1 + tokens[..pos].iter().filter(|&&b| b == b'\n').count();
            return Err(DataError::Parse {
                path: PathBuf::from(RESOURCE),
                line,
                msg: format!(
                    "byte 0x{:02x} at offset {pos} is not ASCII (the vocabulary is bytes 0..{VOCAB})",
                    tokens[pos]
                ),
            });
        }
        Ok(Corpus { tokens })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Splits into `(train, validation)`: the validation part is the last
    /// `round(len × val_fraction)` tokens (a contiguous tail, as nanoGPT splits its
    /// Shakespeare), the training part everything before it.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] when `val_fraction` is not in `(0, 1)`.
    pub fn split(&self, val_fraction: f64) -> Result<(Corpus, Corpus), DataError> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(DataError::InvalidArgument(format!(
                "validation fraction must be in (0, 1), got {val_fraction}"
            )));
        }
        let n_val = (self.len() as f64 * val_fraction).round() as usize;
        let cut = self.len() - n_val;
        Ok((
            Corpus {
                tokens: self.tokens[..cut].to_vec(),
            },
            Corpus {
                tokens: self.tokens[cut..].to_vec(),
            },
        ))
    }

    /// A training batch of `batch` windows of `context` tokens at random offsets, as
    /// `(inputs, targets)`, each `batch × context` tokens row-major, `targets` being the
    /// inputs shifted by one token. The offsets are drawn uniformly from
    /// `0..=len - context - 1` by a PRNG seeded by `(seed, step)`, so every run with the same
    /// seed sees the same batches at the same steps (as nanoGPT samples its batches).
    ///
    /// # Panics
    /// If the corpus has fewer than `context + 1` tokens or `batch == 0`.
    pub fn batch(&self, batch: usize, context: usize, seed: u64, step: u64) -> (Vec<u8>, Vec<u8>) {
        assert!(batch > 0, "batch size must be positive");
        assert!(
            self.len() > context,
            "corpus of {} tokens is too short for windows of {context} + 1",
            self.len()
        );
        let span = (self.len() - context) as u64; // offsets 0..span
        let mut rng = SplitMix64::new(seed ^ SplitMix64::new(step ^ 0x005e_ed0f_c0de).next_u64());
        let (mut inputs, mut targets) = (
            Vec::with_capacity(batch * context),
            Vec::with_capacity(batch * context),
        );
        for _ in 0..batch {
            let start = rng.below(span) as usize;
            inputs.extend_from_slice(&self.tokens[start..start + context]);
            targets.extend_from_slice(&self.tokens[start + 1..start + context + 1]);
        }
        (inputs, targets)
    }

    /// The evaluation windows: up to `max_windows` non-overlapping windows of `context` tokens
    /// (targets shifted by one), spread evenly over the text, as `(inputs, targets)` row-major.
    /// With `max_windows >= (len - 1) / context` this covers every token once (a tail shorter
    /// than a window is left out). Deterministic.
    pub fn windows(&self, context: usize, max_windows: usize) -> (Vec<u8>, Vec<u8>) {
        let available = self.len().saturating_sub(1) / context.max(1);
        let n = available.min(max_windows);
        let (mut inputs, mut targets) = (
            Vec::with_capacity(n * context),
            Vec::with_capacity(n * context),
        );
        for i in 0..n {
            // window i of `available`, evenly spaced when taking fewer than all
            let w = i * available / n;
            let start = w * context;
            inputs.extend_from_slice(&self.tokens[start..start + context]);
            targets.extend_from_slice(&self.tokens[start + 1..start + context + 1]);
        }
        (inputs, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_text_decodes_to_the_documented_ascii() {
        let c = load().unwrap();
        assert_eq!(c.len(), SHAKESPEARE_LEN);
        assert!(c.tokens.starts_with(b"HAMLET, PRINCE OF DENMARK"));
        let mut seen = [false; VOCAB];
        for &b in &c.tokens {
            seen[usize::from(b)] = true;
        }
        assert_eq!(seen.iter().filter(|&&s| s).count(), 73);
    }

    #[test]
    fn non_ascii_is_a_clear_error() {
        let err = Corpus::from_ascii(b"ab\ncd\xc3\xa9".to_vec()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2") || msg.contains(":2"), "{msg}");
        assert!(msg.contains("0xc3") && msg.contains("offset 5"), "{msg}");
    }

    #[test]
    fn split_is_a_contiguous_tail() {
        let c = Corpus::from_ascii((0..100u8).collect()).unwrap();
        let (t, v) = c.split(0.1).unwrap();
        assert_eq!(t.tokens, (0..90u8).collect::<Vec<_>>());
        assert_eq!(v.tokens, (90..100u8).collect::<Vec<_>>());
        assert!(c.split(0.0).is_err() && c.split(1.0).is_err() && c.split(f64::NAN).is_err());
    }

    #[test]
    fn batches_are_shifted_reproducible_and_in_range() {
        let c = Corpus::from_ascii((0..100u8).collect()).unwrap();
        let (x, y) = c.batch(8, 10, 3, 7);
        assert_eq!(c.batch(8, 10, 3, 7), (x.clone(), y.clone()));
        assert_ne!(c.batch(8, 10, 3, 8).0, x);
        for (xw, yw) in x.chunks(10).zip(y.chunks(10)) {
            // tokens are their own offsets here: consecutive, and the target is the next one
            for k in 0..10 {
                assert_eq!(xw[k], xw[0] + k as u8);
                assert_eq!(yw[k], xw[k] + 1);
            }
            assert!(usize::from(yw[9]) < 100);
        }
    }

    #[test]
    fn windows_cover_the_text_without_overlap() {
        let c = Corpus::from_ascii((0..41u8).collect()).unwrap();
        let (x, y) = c.windows(10, usize::MAX);
        assert_eq!(x, (0..40u8).collect::<Vec<_>>());
        assert_eq!(y, (1..41u8).collect::<Vec<_>>());
        let (x2, _) = c.windows(10, 2);
        assert_eq!(
            x2,
            [(0..10u8).collect::<Vec<_>>(), (20..30).collect()].concat()
        );
    }
}
