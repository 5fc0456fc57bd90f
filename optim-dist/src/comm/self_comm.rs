//! One rank, no communication.

use super::{check_counts, CommElem, CommError, Communicator};

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
    fn all_to_all_v<T: CommElem>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
    ) -> Result<(), CommError> {
        check_counts("all_to_all_v", "send_counts", send_counts, 1, send.len())?;
        check_counts("all_to_all_v", "recv_counts", recv_counts, 1, recv.len())?;
        if send.len() != recv.len() {
            return Err(CommError::Sizes {
                op: "all_to_all_v",
                detail: format!(
                    "sends {} elements to itself but expects {}",
                    send.len(),
                    recv.len()
                ),
            });
        }
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_v<T: CommElem>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
    ) -> Result<(), CommError> {
        check_counts("all_gather_v", "counts", counts, 1, recv.len())?;
        if send.len() != recv.len() {
            return Err(CommError::Sizes {
                op: "all_gather_v",
                detail: format!("sends {} elements, counts say {}", send.len(), recv.len()),
            });
        }
        recv.copy_from_slice(send);
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
