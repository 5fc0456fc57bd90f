//! Text tables printed by `compare` and `anisotropy` (included with `#[path]`).

/// The width of each column in characters: its widest cell, header included.
pub fn column_widths<H: AsRef<str>>(header: &[H], rows: &[Vec<String>]) -> Vec<usize> {
    (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].as_ref().chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect()
}
