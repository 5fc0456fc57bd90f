//! The file checksum of format 2: SHA-256 of every byte of the file, the checksum's own 64
//! hex digits counted as ASCII `0`s.
//!
//! The checksum lives in the metadata document as `"checksum":"sha256:<64 hex digits>"`. A
//! file is written with 64 `0`s there, hashed, and the digits are filled in ([`seal`]); a reader
//! finds the digits, hashes the file with them read as `0`s, and compares ([`verify`]). So a
//! change to any byte — header length, JSON, padding, tensor data or the digits themselves —
//! is detected.

use super::format::ck;
use crate::error::OptimError;
use sha2::{Digest, Sha256};

/// The algorithm prefix of the stored checksum.
const PREFIX: &str = "sha256:";
/// Number of hex digits of a SHA-256 digest.
const DIGITS: usize = 64;
/// What the digits count as while hashing.
const ZEROS: [u8; DIGITS] = [b'0'; DIGITS];

/// The checksum value a file is written with before [`seal`] fills it in.
pub(super) fn placeholder() -> String {
    format!("{PREFIX}{}", "0".repeat(DIGITS))
}

/// Where the digits of `checksum` (the stored value, e.g. [`placeholder`]) start in `file`: the
/// first occurrence of the metadata entry `\"checksum\":\"<checksum>\"` (escaped, as it sits
/// inside the JSON string of the safetensors header, whose metadata comes first).
fn digits_at(file: &[u8], checksum: &str) -> Option<usize> {
    let pattern = format!("\\\"checksum\\\":\\\"{checksum}\\\"");
    let header_end = file
        .get(..8)
        .and_then(|n| <[u8; 8]>::try_from(n).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_add(8))?
        .min(file.len());
    let header = file.get(8..header_end)?;
    let at = header
        .windows(pattern.len())
        .position(|w| w == pattern.as_bytes())?;
    // offset of the digits: 8 (length prefix) + the match + `\"checksum\":\"sha256:`
    Some(8 + at + pattern.len() - DIGITS - 2)
}

/// SHA-256 of `file` with the `DIGITS` bytes at `at` read as `0`s, in lowercase hex.
fn digest(file: &[u8], at: usize) -> String {
    let mut h = Sha256::new();
    h.update(&file[..at]);
    h.update(ZEROS);
    h.update(&file[at + DIGITS..]);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills in the checksum of a file written with [`placeholder`].
///
/// # Errors
/// [`OptimError::Checkpoint`] when the placeholder is not in the header (a bug).
pub(super) fn seal(file: &mut [u8]) -> Result<(), OptimError> {
    let at = digits_at(file, &placeholder())
        .ok_or_else(|| ck("internal error: the checksum placeholder is missing"))?;
    let hex = digest(file, at);
    file[at..at + DIGITS].copy_from_slice(hex.as_bytes());
    Ok(())
}

/// Checks `file` against its stored `checksum` (`"sha256:<hex>"` from the metadata).
///
/// # Errors
/// [`OptimError::Checkpoint`] when the stored value is malformed or cannot be found in the
/// header, or the file's checksum differs (the file is corrupt).
pub(super) fn verify(file: &[u8], checksum: &str) -> Result<(), OptimError> {
    let well_formed = checksum.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == DIGITS && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if !well_formed {
        return Err(ck(format!(
            "the stored checksum `{checksum}` is malformed (expected `{PREFIX}` and {DIGITS} \
             lowercase hex digits): the file is corrupt"
        )));
    }
    let at = digits_at(file, checksum).ok_or_else(|| {
        ck("the stored checksum is not where the format puts it: the file is corrupt")
    })?;
    let actual = digest(file, at);
    if actual != checksum[PREFIX.len()..] {
        return Err(ck(format!(
            "checksum mismatch (stored {checksum}, file {PREFIX}{actual}): the file is corrupt \
             or was modified"
        )));
    }
    Ok(())
}
