//! Processes started by `mpirun`, through the `mpi` crate (feature `mpi`).

use super::{check_counts, offsets, CommElem, CommError, Communicator};
use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use mpi::Count;

/// A [`Communicator`] over an MPI communicator (feature `mpi`).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let universe = mpi::initialize().ok_or("MPI was already initialised")?;
/// let comm = optim_dist::MpiComm::new(&universe.world());
/// // ... Distributed::new(optimizer, comm) ...
/// # Ok(()) }
/// ```
/// Keep the `Universe` alive for as long as the communicator is used (dropping it finalises
/// MPI). MPI's default error handler aborts the job on a transport error, so the methods only
/// return [`CommError::Sizes`], checked before calling MPI (counts above `i32::MAX` elements
/// included: MPI counts are `int`).
pub struct MpiComm {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl MpiComm {
    /// A communicator over a duplicate of `comm` (`MPI_Comm_dup`), so that its collectives never
    /// match messages of other code that uses `comm`.
    pub fn new(comm: &SimpleCommunicator) -> Self {
        let comm = comm.duplicate();
        // MPI ranks and sizes are non-negative `int`s.
        let rank = usize::try_from(comm.rank()).unwrap_or(0);
        let size = usize::try_from(comm.size()).unwrap_or(1);
        MpiComm { comm, rank, size }
    }

    /// The underlying MPI communicator.
    pub fn raw(&self) -> &SimpleCommunicator {
        &self.comm
    }
}

fn to_counts(op: &'static str, counts: &[usize]) -> Result<(Vec<Count>, Vec<Count>), CommError> {
    let conv = |x: usize| {
        Count::try_from(x).map_err(|_| CommError::Sizes {
            op,
            detail: format!("{x} elements exceed MPI's int count; split the buffer"),
        })
    };
    let c = counts
        .iter()
        .map(|&c| conv(c))
        .collect::<Result<Vec<_>, _>>()?;
    let d = offsets(counts)
        .into_iter()
        .map(conv)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((c, d))
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_to_all_v<T: CommElem>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
    ) -> Result<(), CommError> {
        let op = "all_to_all_v";
        check_counts(op, "send_counts", send_counts, self.size, send.len())?;
        check_counts(op, "recv_counts", recv_counts, self.size, recv.len())?;
        let (sc, sd) = to_counts(op, send_counts)?;
        let (rc, rd) = to_counts(op, recv_counts)?;
        let sp = Partition::new(send, sc, sd);
        let mut rp = PartitionMut::new(recv, rc, rd);
        self.comm.all_to_all_varcount_into(&sp, &mut rp);
        Ok(())
    }
    fn all_gather_v<T: CommElem>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
    ) -> Result<(), CommError> {
        let op = "all_gather_v";
        check_counts(op, "counts", counts, self.size, recv.len())?;
        if send.len() != counts[self.rank] {
            return Err(CommError::Sizes {
                op,
                detail: format!(
                    "rank {} sends {} elements, counts say {}",
                    self.rank,
                    send.len(),
                    counts[self.rank]
                ),
            });
        }
        let (c, d) = to_counts(op, counts)?;
        let mut rp = PartitionMut::new(recv, c, d);
        self.comm.all_gather_varcount_into(send, &mut rp);
        Ok(())
    }
    fn all_reduce_sum<T: CommElem>(&self, buf: &mut [T]) -> Result<(), CommError> {
        to_counts("all_reduce_sum", &[buf.len()])?;
        let send = buf.to_vec();
        self.comm
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn broadcast<T: CommElem>(&self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        let op = "broadcast";
        to_counts(op, &[buf.len()])?;
        let r = Count::try_from(root)
            .ok()
            .filter(|_| root < self.size)
            .ok_or_else(|| CommError::Sizes {
                op,
                detail: format!("root {root} of a {}-rank communicator", self.size),
            })?;
        self.comm.process_at_rank(r).broadcast_into(buf);
        Ok(())
    }
    fn barrier(&self) -> Result<(), CommError> {
        self.comm.barrier();
        Ok(())
    }
}
