//! The step's working lists, kept between steps so that a steady-state step allocates nothing.
//!
//! A step builds a few lists with one entry per parameter: its entries, their rules, their
//! states, their staged jobs, each loop's calls and reduction totals. Their element types
//! borrow the step's parameters (`Entry<'a, E>`, `&'a mut ParamState<E>`, the generated job
//! `O::Job<'a>`), so a `Vec` of them cannot be kept in the optimizer between steps. What can be
//! kept is the memory: [`Scratch`] holds one allocation per list ([`Spare`], a pointer, a size
//! and an alignment, typed by nothing), and the step takes each list back out of it as an empty
//! `Vec<T>` of the capacity the last step left ([`Scratch::take`]), fills it, and gives its
//! memory back when done ([`Scratch::give`]). A list given back on no path (an error returned
//! half-way) is dropped as usual; the next step allocates it again.

use std::alloc::{dealloc, Layout};
use std::mem::{align_of, size_of, ManuallyDrop};
use std::ptr::NonNull;

/// One kept allocation: `bytes` bytes aligned to `align`, allocated by the global allocator
/// for a `Vec` whose elements have that alignment and whose capacity times element size is
/// `bytes` (or nothing, when `bytes` is 0).
struct Spare {
    ptr: NonNull<u8>,
    bytes: usize,
    align: usize,
}

// SAFETY: a `Spare` owns plain memory that holds no value (the `Vec` it came from was empty),
// so moving it to or sharing it with another thread cannot move or share any `T`.
unsafe impl Send for Spare {}
// SAFETY: as above; `&Spare` gives access to nothing.
unsafe impl Sync for Spare {}

impl Default for Spare {
    fn default() -> Self {
        Spare {
            ptr: NonNull::dangling(),
            bytes: 0,
            align: 1,
        }
    }
}

impl Spare {
    /// The kept memory as an empty `Vec<T>` (leaving nothing here), when it fits `T` exactly
    /// (same alignment, a whole number of elements); otherwise an empty, unallocated `Vec`
    /// (the memory is freed).
    fn take<T>(&mut self) -> Vec<T> {
        let (size, align) = (size_of::<T>(), align_of::<T>());
        if self.bytes == 0 || size == 0 {
            return Vec::new();
        }
        if align != self.align || !self.bytes.is_multiple_of(size) {
            self.free();
            return Vec::new();
        }
        let cap = self.bytes / size;
        let ptr = self.ptr.as_ptr().cast::<T>();
        self.bytes = 0;
        // SAFETY: `ptr` was allocated by the global allocator for a `Vec` (see `give`) with
        // alignment `align == align_of::<T>()` and size `bytes == cap * size_of::<T>()`, the
        // layout `Vec<T>` of capacity `cap` deallocates with; length 0 (nothing to be
        // initialised) is at most `cap`; and no one else owns it any more (`bytes` is 0 now,
        // so neither `take` nor `free` will use it again).
        unsafe { Vec::from_raw_parts(ptr, 0, cap) }
    }

    /// Keeps `v`'s memory (its elements are dropped first), freeing what was kept before.
    fn give<T>(&mut self, mut v: Vec<T>) {
        v.clear();
        if size_of::<T>() == 0 || v.capacity() == 0 {
            return; // no memory to keep
        }
        self.free();
        let mut v = ManuallyDrop::new(v);
        self.bytes = v.capacity() * size_of::<T>();
        self.align = align_of::<T>();
        // a `Vec` that has allocated has a non-null pointer
        self.ptr = NonNull::new(v.as_mut_ptr().cast::<u8>()).unwrap_or(NonNull::dangling());
    }

    fn free(&mut self) {
        if self.bytes == 0 {
            return;
        }
        // SAFETY: `bytes` and `align` describe the allocation `ptr` points to (see `give`):
        // a valid layout (it was a `Vec`'s), allocated by the global allocator and owned here.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.bytes, self.align),
            );
        }
        self.bytes = 0;
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.free();
    }
}

/// Which list of a step a [`Scratch`] slot keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum List {
    /// The step's entries (`Entry`).
    Entries,
    /// Their validation views (`Meta`).
    Metas,
    /// Their rules.
    Rules,
    /// Their states (`Option<&ParamState>` or `Option<&mut ParamState>`).
    Found,
    /// Their staged jobs.
    Jobs,
    /// Their 16-bit parameters and entry points (`crate::narrow`), by job.
    Narrow,
    /// The same jobs as trait objects (what the loops run on).
    Erased,
    /// One loop's calls.
    Calls,
    /// One loop's reduction totals per call.
    Totals,
    /// One loop's global contributions per job.
    Contributions,
    /// One loop's per-tensor reduction totals per job.
    Sums,
    /// The jobs with barrier work.
    Pending,
    /// One loop's work items (the parallel path).
    Items,
}

const LISTS: usize = List::Items as usize + 1;

/// The memory of a step's lists, kept between steps (a cache, not optimizer state: a clone
/// starts empty, two compare equal, and `Debug` shows no contents).
#[derive(Default)]
pub(crate) struct Scratch {
    spares: [Spare; LISTS],
}

impl Scratch {
    /// List `which` as an empty `Vec<T>` with the memory the last step gave back (none if it
    /// did not fit `T`).
    pub(crate) fn take<T>(&mut self, which: List) -> Vec<T> {
        self.spares[which as usize].take()
    }

    /// Gives list `which` back (emptied), to be taken again by the next step.
    pub(crate) fn give<T>(&mut self, which: List, v: Vec<T>) {
        self.spares[which as usize].give(v);
    }
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true // memory, never part of what a state is
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch(cache)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_comes_back_with_its_memory_for_a_type_of_the_same_layout() {
        let mut s = Scratch::default();
        let mut v: Vec<&str> = s.take(List::Entries);
        assert_eq!(v.capacity(), 0);
        v.extend(["a", "b", "c"]);
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        s.give(List::Entries, v);
        // another lifetime, same layout: the same memory, empty
        let name = String::from("x");
        let mut w: Vec<&str> = s.take(List::Entries);
        assert_eq!((w.len(), w.capacity(), w.as_ptr() as usize), (0, cap, ptr));
        w.push(&name);
        assert_eq!(w, ["x"]);
        s.give(List::Entries, w);
        // a whole number of another type of the same alignment: reused, capacity rescaled
        let u: Vec<u64> = s.take(List::Entries);
        assert_eq!(u.capacity(), cap * 2);
        assert_eq!(u.as_ptr() as usize, ptr);
        s.give(List::Entries, u);
        // another alignment: freed, not reused
        let b: Vec<u8> = s.take(List::Entries);
        assert_eq!(b.capacity(), 0);
        // nothing kept now
        let again: Vec<u64> = s.take(List::Entries);
        assert_eq!(again.capacity(), 0);
    }

    #[test]
    fn elements_given_back_are_dropped_and_slots_are_separate() {
        let mut s = Scratch::default();
        let counted = std::rc::Rc::new(());
        let v = vec![counted.clone(), counted.clone()];
        s.give(List::Jobs, v);
        assert_eq!(std::rc::Rc::strong_count(&counted), 1);
        let other: Vec<std::rc::Rc<()>> = s.take(List::Calls);
        assert_eq!(other.capacity(), 0);
        let back: Vec<std::rc::Rc<()>> = s.take(List::Jobs);
        assert_eq!((back.len(), back.capacity()), (0, 2));
        assert_eq!(s.clone().take::<u64>(List::Jobs).capacity(), 0);
        assert_eq!(s, Scratch::default());
        assert_eq!(format!("{s:?}"), "Scratch(cache)");
    }
}
