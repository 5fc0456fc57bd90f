//! Style checks over the UI suite (`ui/` in this package), so that message style is enforced
//! in one place rather than reviewed by eye (compare clippy's `tests/messages.rs`,
//! rust-clippy#6787):
//!
//! - our own messages in every `.stderr` (lines `error: ...`; rustc's E-coded `error[E....]:`
//!   lines are rustc's, not ours) start lowercase and do not end with a period;
//! - every case starts with a 2–6 line `//` comment stating the mistake and the diagnostic we
//!   want (the spec the `.stderr` is reviewed against), and every `-fail.rs` case has a
//!   `.stderr`.

use std::fs;
use std::path::{Path, PathBuf};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_str().is_some_and(|s| s.ends_with(suffix)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The style problem with one message, if any.
fn style_problem(msg: &str) -> Option<&'static str> {
    let first = msg.chars().next()?;
    if first.is_uppercase() {
        return Some("starts with an uppercase letter");
    }
    if msg.ends_with('.') {
        return Some("ends with a period");
    }
    None
}

#[test]
fn messages_are_lowercase_without_trailing_period() {
    let stderrs = files_with_suffix(&ui_dir(), ".stderr");
    assert!(
        !stderrs.is_empty(),
        "no .stderr files under {}",
        ui_dir().display()
    );
    let mut bad = Vec::new();
    for path in &stderrs {
        let text = fs::read_to_string(path).expect("readable .stderr");
        for (i, line) in text.lines().enumerate() {
            // `error: ...` is ours (compile_error! from the macro) or syn's; `error[E0425]: ...`
            // is rustc's own and follows rustc's style.
            let Some(msg) = line.strip_prefix("error: ") else {
                continue;
            };
            if let Some(problem) = style_problem(msg) {
                bad.push(format!("{}:{}: {problem}: {msg}", path.display(), i + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "messages that break the style (lowercase, no trailing period):\n{}",
        bad.join("\n")
    );
}

#[test]
fn style_check_catches_bad_messages() {
    assert_eq!(
        style_problem("unknown primitive `momentun`; did you mean `momentum`?"),
        None
    );
    assert_eq!(style_problem("`param` is updated twice"), None);
    assert!(style_problem("Unknown primitive").is_some());
    assert!(style_problem("unknown primitive.").is_some());
}

#[test]
fn every_case_has_a_spec_comment_and_fail_cases_have_stderr() {
    let cases = files_with_suffix(&ui_dir(), ".rs");
    assert!(!cases.is_empty());
    let mut bad = Vec::new();
    for path in &cases {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let is_fail = name.ends_with("-fail.rs");
        if !is_fail && !name.ends_with("-pass.rs") {
            bad.push(format!(
                "{}: name must end with `-fail.rs` or `-pass.rs`",
                path.display()
            ));
        }
        let text = fs::read_to_string(path).expect("readable case");
        let comment_lines = text.lines().take_while(|l| l.starts_with("//")).count();
        if !(2..=6).contains(&comment_lines) {
            bad.push(format!(
                "{}: starts with {comment_lines} `//` lines, expected 2 to 6",
                path.display()
            ));
        }
        if is_fail && !path.with_extension("stderr").exists() {
            bad.push(format!(
                "{}: no .stderr (bless with TRYBUILD=overwrite)",
                path.display()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
