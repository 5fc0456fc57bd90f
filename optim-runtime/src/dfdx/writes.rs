//! The in-place writes this crate makes into dfdx models outside an optimizer's own commit
//! (`swap_state_with_model`, `WeightEma::copy_to_model` and `WeightEma::swap_with_model`),
//! recorded by tensor id, so that an optimizer keeping master copies
//! ([`ParamSync::Master`](crate::ParamSync::Master)) reads those tensors again at its next step.
//! The writers cannot reach the optimizers, so the record is process-wide, as dfdx's ids are.
//!
//! Each write gets the next sequence number and the registry keeps, per tensor id ever written
//! this way, the number of its last write (a few dozen bytes per tensor; a model written again
//! and again reuses its entries). A master copy remembers the sequence number at the start of
//! the step that committed it, and is stale when its tensor's last write is later. A step
//! locks the registry only when something was written since its copies were committed.

use dfdx::tensor::UniqueId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The sequence number of the last recorded write (0: none yet).
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The sequence number of the last recorded write into each tensor id.
static LAST: Mutex<BTreeMap<UniqueId, u64>> = Mutex::new(BTreeMap::new());

/// The registry (a panic while it was held left it consistent: each update is one insert).
fn registry() -> MutexGuard<'static, BTreeMap<UniqueId, u64>> {
    LAST.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records an in-place write into the tensor `id` (call it while holding the model `&mut`).
pub(crate) fn note(id: UniqueId) {
    let mut last = registry();
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    last.insert(id, seq);
}

/// The questions one step asks the registry: whether a tensor was written after a master copy
/// of it was committed.
pub(crate) struct Since {
    /// The sequence number when the step began (a copy committed by this step is compared
    /// with it at a later step).
    pub now: u64,
    /// The registry, locked on the first question that needs it.
    guard: Option<MutexGuard<'static, BTreeMap<UniqueId, u64>>>,
}

impl Since {
    /// At the start of a step.
    pub(crate) fn new() -> Self {
        Since {
            now: SEQ.load(Ordering::SeqCst),
            guard: None,
        }
    }

    /// Whether tensor `id` was written by [`note`] after sequence number `seen`.
    pub(crate) fn written_after(&mut self, id: UniqueId, seen: u64) -> bool {
        if seen >= self.now {
            return false; // nothing at all was written since
        }
        let last = self.guard.get_or_insert_with(registry);
        last.get(&id).is_some_and(|&w| w > seen)
    }
}
