//! The error accumulator passed as `cx` through lowering and checking. Stages push errors and
//! keep going; `propagate` at a stage barrier combines them into one `syn::Error` (each part
//! keeps its own span and becomes its own `compile_error!`).

use proc_macro2::Span;
use std::fmt::Display;

/// Accumulated errors.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Span, msg: impl Display) {
        self.errors.push(syn::Error::new(span, msg));
    }

    /// Records a ready-made error.
    pub(crate) fn push(&mut self, e: syn::Error) {
        self.errors.push(e);
    }

    /// Whether nothing has been recorded.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Stage barrier: `Err` with all errors combined, if any.
    pub(crate) fn propagate(&mut self) -> syn::Result<()> {
        let mut iter = std::mem::take(&mut self.errors).into_iter();
        match iter.next() {
            None => Ok(()),
            Some(mut first) => {
                for e in iter {
                    first.combine(e);
                }
                Err(first)
            }
        }
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `"; did you mean `x`?"` for the closest candidate within a small edit distance, else `""`.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let limit = (word.chars().count() / 3).max(1) + 1;
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= limit && *c != word)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}
