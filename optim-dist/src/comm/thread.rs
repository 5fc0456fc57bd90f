//! Ranks as threads of one process.

use super::{check_counts, offsets, CommElem, CommError, Communicator};
use std::any::Any;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One rank of a group of in-process ranks that run on threads (one `ThreadComm` per thread).
/// Every collective is a personalised exchange through shared memory; reductions add in rank
/// order, so results are deterministic.
///
/// Built with [`ThreadComm::group`], or use [`ThreadComm::run`] to start the threads too. If a
/// rank's `ThreadComm` is dropped (its thread returned or panicked) while others wait in a
/// collective, they get a [`CommError::Transport`] instead of hanging.
///
/// ```
/// use optim_dist::{Communicator, ThreadComm};
/// let sums = ThreadComm::run(3, |comm| {
///     let mut x = [comm.rank() as f64 + 1.0];
///     comm.all_reduce_sum(&mut x).unwrap();
///     x[0]
/// });
/// assert_eq!(sums, vec![6.0; 3]);
/// ```
pub struct ThreadComm {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    round: Mutex<Round>,
    cv: Condvar,
}

/// Payloads of the current exchange: `slots[src]` is `Vec<Option<Vec<T>>>`, one entry per
/// destination, taken by that destination.
struct Round {
    collecting: bool,
    deposited: usize,
    taken: usize,
    slots: Vec<Option<Box<dyn Any + Send>>>,
    broken: Option<String>,
}

impl std::fmt::Debug for ThreadComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadComm")
            .field("rank", &self.rank)
            .field("size", &self.shared.size)
            .finish()
    }
}

impl ThreadComm {
    /// `size` connected ranks (`size ≥ 1`); hand element `r` to the thread of rank `r`.
    ///
    /// # Panics
    /// If `size == 0`.
    pub fn group(size: usize) -> Vec<ThreadComm> {
        assert!(size > 0, "a communicator needs at least one rank");
        let shared = Arc::new(Shared {
            size,
            round: Mutex::new(Round {
                collecting: false,
                deposited: 0,
                taken: 0,
                slots: (0..size).map(|_| None).collect(),
                broken: None,
            }),
            cv: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadComm {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    /// Runs `f` on `size` scoped threads, one per rank, and returns their results in rank
    /// order.
    ///
    /// # Panics
    /// If `size == 0`, or re-raises the panic of a rank's `f`.
    pub fn run<R: Send, F: Fn(ThreadComm) -> R + Sync>(size: usize, f: F) -> Vec<R> {
        let comms = Self::group(size);
        std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    let f = &f;
                    s.spawn(move || f(c))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(r) => r,
                    Err(p) => std::panic::resume_unwind(p),
                })
                .collect()
        })
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // A panic while holding the lock leaves `Round` consistent (no code between the
        // updates can panic), so a poisoned lock is still usable.
        self.shared.round.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Round>) -> MutexGuard<'a, Round> {
        self.shared.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    /// The one primitive: `out[d]` goes to rank `d`; returns what each rank sent to this one,
    /// in source order.
    fn exchange<T: CommElem>(
        &self,
        op: &'static str,
        out: Vec<Vec<T>>,
    ) -> Result<Vec<Vec<T>>, CommError> {
        let n = self.shared.size;
        let broken = |why: &str| CommError::Transport {
            op,
            detail: why.to_string(),
        };
        let mut g = self.lock();
        // Wait for the previous exchange to be fully collected.
        while g.collecting {
            g = self.wait(g);
        }
        if let Some(why) = &g.broken {
            return Err(broken(why));
        }
        let payload: Vec<Option<Vec<T>>> = out.into_iter().map(Some).collect();
        g.slots[self.rank] = Some(Box::new(payload));
        g.deposited += 1;
        if g.deposited == n {
            g.collecting = true;
            g.taken = 0;
            self.shared.cv.notify_all();
        }
        while !g.collecting {
            if let Some(why) = &g.broken {
                let why = why.clone();
                g.slots[self.rank] = None;
                g.deposited -= 1;
                return Err(broken(&why));
            }
            g = self.wait(g);
        }
        let mut got = Vec::with_capacity(n);
        let mut mismatch = false;
        for src in 0..n {
            let piece = g.slots[src]
                .as_mut()
                .and_then(|b| b.downcast_mut::<Vec<Option<Vec<T>>>>())
                .and_then(|v| v.get_mut(self.rank))
                .and_then(Option::take);
            match piece {
                Some(p) => got.push(p),
                None => mismatch = true,
            }
        }
        g.taken += 1;
        if g.taken == n {
            g.slots.iter_mut().for_each(|s| *s = None);
            g.deposited = 0;
            g.collecting = false;
            self.shared.cv.notify_all();
        }
        if mismatch {
            return Err(broken(
                "ranks called different collectives or element types at the same time",
            ));
        }
        Ok(got)
    }
}

impl Drop for ThreadComm {
    fn drop(&mut self) {
        let mut g = self.lock();
        if g.broken.is_none() {
            g.broken = Some(format!(
                "rank {} left the communicator{}",
                self.rank,
                if std::thread::panicking() {
                    " (its thread panicked)"
                } else {
                    ""
                }
            ));
        }
        self.shared.cv.notify_all();
    }
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_to_all_v<T: CommElem>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
    ) -> Result<(), CommError> {
        let n = self.size();
        check_counts("all_to_all_v", "send_counts", send_counts, n, send.len())?;
        check_counts("all_to_all_v", "recv_counts", recv_counts, n, recv.len())?;
        let out = offsets(send_counts)
            .iter()
            .zip(send_counts)
            .map(|(&o, &c)| send[o..o + c].to_vec())
            .collect();
        let got = self.exchange("all_to_all_v", out)?;
        for ((src, piece), o) in got.iter().enumerate().zip(offsets(recv_counts)) {
            if piece.len() != recv_counts[src] {
                return Err(CommError::Sizes {
                    op: "all_to_all_v",
                    detail: format!(
                        "rank {src} sent {} elements to rank {}, which expected {}",
                        piece.len(),
                        self.rank,
                        recv_counts[src]
                    ),
                });
            }
            recv[o..o + piece.len()].copy_from_slice(piece);
        }
        Ok(())
    }
    fn all_gather_v<T: CommElem>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
    ) -> Result<(), CommError> {
        let n = self.size();
        check_counts("all_gather_v", "counts", counts, n, recv.len())?;
        if send.len() != counts[self.rank] {
            return Err(CommError::Sizes {
                op: "all_gather_v",
                detail: format!(
                    "rank {} sends {} elements, counts say {}",
                    self.rank,
                    send.len(),
                    counts[self.rank]
                ),
            });
        }
        let got = self.exchange("all_gather_v", vec![send.to_vec(); n])?;
        let mut all_fit = true;
        for ((src, piece), o) in got.iter().enumerate().zip(offsets(counts)) {
            if piece.len() == counts[src] {
                recv[o..o + piece.len()].copy_from_slice(piece);
            } else {
                all_fit = false;
            }
        }
        if !all_fit {
            return Err(CommError::Sizes {
                op: "all_gather_v",
                detail: "ranks passed different counts".to_string(),
            });
        }
        Ok(())
    }
    fn all_reduce_sum<T: CommElem>(&self, buf: &mut [T]) -> Result<(), CommError> {
        let n = self.size();
        let got = self.exchange("all_reduce_sum", vec![buf.to_vec(); n])?;
        if got.iter().any(|p| p.len() != buf.len()) {
            return Err(CommError::Sizes {
                op: "all_reduce_sum",
                detail: "ranks passed buffers of different lengths".to_string(),
            });
        }
        for (i, x) in buf.iter_mut().enumerate() {
            let mut acc = got[0][i];
            for p in &got[1..] {
                acc = acc.add(p[i]);
            }
            *x = acc;
        }
        Ok(())
    }
    fn broadcast<T: CommElem>(&self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        let n = self.size();
        if root >= n {
            return Err(CommError::Sizes {
                op: "broadcast",
                detail: format!("root {root} of a {n}-rank communicator"),
            });
        }
        let out = if self.rank == root {
            vec![buf.to_vec(); n]
        } else {
            vec![Vec::new(); n]
        };
        let got = self.exchange("broadcast", out)?;
        if got[root].len() != buf.len() {
            return Err(CommError::Sizes {
                op: "broadcast",
                detail: format!(
                    "root sent {} elements, rank {} expected {}",
                    got[root].len(),
                    self.rank,
                    buf.len()
                ),
            });
        }
        buf.copy_from_slice(&got[root]);
        Ok(())
    }
}
