//! One rank, no communication.

use super::{AllGatherV, AllToAllV, CommElem, CommError, Communicator};

/// A communicator of one rank: every collective is a local copy (or nothing). With it,
/// [`Distributed`](crate::Distributed) is the plain optimizer plus its checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelfComm;

impl Communicator for SelfComm {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn transport_all_to_all_v<T: CommElem>(&self, x: AllToAllV<'_, T>) -> Result<(), CommError> {
        if x.send.len() != x.recv.len() {
            return Err(CommError::Sizes {
                op: "all_to_all_v",
                detail: format!(
                    "sends {} elements to itself but expects {}",
                    x.send.len(),
                    x.recv.len()
                ),
            });
        }
        x.recv.copy_from_slice(x.send);
        Ok(())
    }
    fn transport_all_gather_v<T: CommElem>(&self, x: AllGatherV<'_, T>) -> Result<(), CommError> {
        x.recv.copy_from_slice(x.send);
        Ok(())
    }
    fn all_reduce_sum<T: CommElem>(&self, _buf: &mut [T]) -> Result<(), CommError> {
        Ok(())
    }
    fn broadcast<T: CommElem>(&self, _buf: &mut [T], root: usize) -> Result<(), CommError> {
        if root != 0 {
            return Err(CommError::Sizes {
                op: "broadcast",
                detail: format!("root {root} of a 1-rank communicator"),
            });
        }
        Ok(())
    }
}
