//! The progress line of a run of the `compare` example (on stderr).

use super::*;

/// Progress of one run on stderr: an indicatif bar when stderr is a terminal; otherwise (output
/// piped to a file, where indicatif draws nothing) a plain line every tenth of the run and at
/// the end, so a log shows how far a long run got.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    name: &'static str,
    total: usize,
    every: usize,
    start: Instant,
}

impl Progress {
    pub(super) fn new(name: &'static str, total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {pos:>5}/{len} {elapsed:>4} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name);
            bar
        });
        Progress {
            bar,
            name,
            total,
            every: total.div_ceil(10).max(1),
            start: Instant::now(),
        }
    }

    /// A line about the run before it starts (plain mode only; the bar has its prefix).
    pub(super) fn note(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_string()),
            None => eprintln!("{:>8}  {what}", self.name),
        }
    }

    /// Step `step` of `total` is done; `msg` describes the state (called only when shown).
    pub(super) fn update(&self, step: usize, msg: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                if step.is_multiple_of(10) {
                    bar.set_message(msg());
                }
            }
            None if step.is_multiple_of(self.every) && step < self.total => eprintln!(
                "{:>8}  step {step:>w$}/{}  {}  ({:.1} s)",
                self.name,
                self.total,
                msg(),
                self.start.elapsed().as_secs_f64(),
                w = self.total.to_string().len()
            ),
            None => {}
        }
    }

    /// The run is over: clears the bar, or prints a closing line.
    pub(super) fn finish(&self, summary: &str) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!(
                "{:>8}  done: {summary}  ({:.1} s)",
                self.name,
                self.start.elapsed().as_secs_f64()
            ),
        }
    }
}
