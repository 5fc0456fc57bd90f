//! Helpers shared by several modules of this binary that need its dev-dependencies (rayon);
//! helpers that need only the runtime live in `optim_tests` (`tests/src/lib.rs`).

/// Runs `f` on a fresh rayon pool of `threads` threads (never the global pool, which the
/// modules of this binary share), for checks that results do not depend on the thread count.
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(f)
}
