//! The collectives data-parallel training needs, behind one trait: [`Communicator`].
//!
//! Implementations: [`SelfComm`] (one rank, no communication), [`ThreadComm`] (ranks are
//! threads of one process; for tests and for trying things on one machine) and, with feature
//! `mpi`, `MpiComm` (processes started by `mpirun`).
//!
//! The trait is deliberately small: the five collectives below are exactly what
//! [`Distributed`](crate::Distributed) calls, and each maps onto one NCCL call or one NCCL group
//! of point-to-point calls (see `docs/scaling.md`, "NCCL plan"), so a GPU implementation fits
//! without changing callers:
//!
//! | method | MPI | NCCL |
//! |---|---|---|
//! | [`all_to_all_v`](Communicator::all_to_all_v) | `MPI_Alltoallv` | `ncclGroupStart`; `ncclSend`/`ncclRecv` per peer; `ncclGroupEnd` |
//! | [`all_gather_v`](Communicator::all_gather_v) | `MPI_Allgatherv` | grouped `ncclBroadcast` per rank (or padded `ncclAllGather`) |
//! | [`all_reduce_sum`](Communicator::all_reduce_sum) | `MPI_Allreduce(MPI_SUM)` | `ncclAllReduce(ncclSum)` |
//! | [`broadcast`](Communicator::broadcast) | `MPI_Bcast` | `ncclBroadcast` |
//! | [`barrier`](Communicator::barrier) | `MPI_Barrier` | a one-element `ncclAllReduce` |
//!
//! Every rank must call the same collectives in the same order with consistent counts, as in
//! MPI; a rank that does not, hangs the others (or, with [`ThreadComm`], gets a
//! [`CommError`] once a peer is dropped).

mod self_comm;
mod thread;

#[cfg(feature = "mpi")]
pub(crate) mod mpi_comm;

pub use self_comm::SelfComm;
pub use thread::ThreadComm;

/// An element type the collectives can move: `f32`, `f64`, `u64` and `u8`.
///
/// Sealed: the set is what MPI and NCCL both support natively. With feature `mpi` it also
/// requires `mpi::datatype::Equivalence`.
pub trait CommElem: sealed::Sealed + Copy + Default + PartialEq + Send + Sync + 'static {
    /// `self + other` (wrapping for the integer types), used by in-process reductions.
    fn add(self, other: Self) -> Self;
}

mod sealed {
    #[cfg(feature = "mpi")]
    pub trait Sealed: mpi::datatype::Equivalence {}
    #[cfg(not(feature = "mpi"))]
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for u64 {}
    impl Sealed for u8 {}
}

impl CommElem for f32 {
    fn add(self, other: Self) -> Self {
        self + other
    }
}
impl CommElem for f64 {
    fn add(self, other: Self) -> Self {
        self + other
    }
}
impl CommElem for u64 {
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}
impl CommElem for u8 {
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}

/// A failed collective.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommError {
    /// Buffer lengths or counts do not add up (a bug in the caller, detected before any
    /// communication).
    #[error("collective `{op}` called with inconsistent sizes: {detail}")]
    Sizes {
        /// The collective.
        op: &'static str,
        /// What does not add up.
        detail: String,
    },
    /// A peer is gone (its [`ThreadComm`] was dropped, e.g. its thread panicked), or the
    /// transport reported an error.
    #[error("communicator failed during `{op}`: {detail}")]
    Transport {
        /// The collective.
        op: &'static str,
        /// What happened.
        detail: String,
    },
}

/// The collectives of data-parallel training. All methods are collective: every rank of the
/// communicator calls them in the same order.
///
/// Counts are in elements. Rank `r`'s data is always placed in rank order: for
/// [`all_to_all_v`](Self::all_to_all_v), `send` holds the segment for rank 0, then for rank
/// 1, …, and `recv` the segment from rank 0, then from rank 1, ….
pub trait Communicator {
    /// This process's (or thread's) rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;

    /// Personalised exchange: rank `r` sends `send[off_s(d)..off_s(d) + send_counts[d]]` to
    /// each rank `d` and receives rank `s`'s segment for it into
    /// `recv[off_r(s)..off_r(s) + recv_counts[s]]`, where the offsets are prefix sums of the
    /// counts. `send_counts[d]` on rank `r` must equal `recv_counts[r]` on rank `d`.
    ///
    /// # Errors
    /// [`CommError::Sizes`] when the counts do not have `size()` entries or do not sum to the
    /// buffer lengths; [`CommError::Transport`] when the exchange fails.
    fn all_to_all_v<T: CommElem>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
    ) -> Result<(), CommError>;

    /// Gather to all: rank `r`'s `send` (of `counts[r]` elements) lands in every rank's `recv`
    /// at offset `counts[..r].sum()`.
    ///
    /// # Errors
    /// [`CommError::Sizes`] when `counts` has not `size()` entries, `send.len() !=
    /// counts[rank]` or `recv.len()` is not the sum; [`CommError::Transport`] on failure.
    fn all_gather_v<T: CommElem>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
    ) -> Result<(), CommError>;

    /// Element-wise sum over ranks, in place. The order in which the ranks' values are added is
    /// the implementation's (MPI and NCCL use trees and rings), so floating-point results can
    /// differ from a sum in rank order in the last bits; use
    /// [`all_to_all_v`](Self::all_to_all_v) and add in rank order where that matters.
    ///
    /// # Errors
    /// [`CommError::Transport`] on failure.
    fn all_reduce_sum<T: CommElem>(&self, buf: &mut [T]) -> Result<(), CommError>;

    /// Copies `buf` of rank `root` into `buf` of every rank.
    ///
    /// # Errors
    /// [`CommError::Sizes`] when `root >= size()`; [`CommError::Transport`] on failure.
    fn broadcast<T: CommElem>(&self, buf: &mut [T], root: usize) -> Result<(), CommError>;

    /// Returns once every rank has called it.
    ///
    /// # Errors
    /// [`CommError::Transport`] on failure.
    fn barrier(&self) -> Result<(), CommError> {
        let mut x = [0u8];
        self.all_reduce_sum(&mut x)
    }
}

/// Checks that `counts` has one entry per rank and sums to `len`.
pub(crate) fn check_counts(
    op: &'static str,
    what: &str,
    counts: &[usize],
    size: usize,
    len: usize,
) -> Result<(), CommError> {
    if counts.len() != size {
        return Err(CommError::Sizes {
            op,
            detail: format!("{what} has {} entries for {size} ranks", counts.len()),
        });
    }
    let total: usize = counts.iter().sum();
    if total != len {
        return Err(CommError::Sizes {
            op,
            detail: format!("{what} sum to {total} but the buffer has {len} elements"),
        });
    }
    Ok(())
}

/// Prefix sums: `offsets(c)[i] = c[..i].sum()`.
pub(crate) fn offsets(counts: &[usize]) -> Vec<usize> {
    let mut acc = 0;
    counts
        .iter()
        .map(|c| {
            let o = acc;
            acc += c;
            o
        })
        .collect()
}
