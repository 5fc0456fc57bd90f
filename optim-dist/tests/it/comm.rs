//! The collectives of `ThreadComm` and `SelfComm`, with uneven and empty segments, and the error
//! a rank gets instead of a hang when a peer leaves.

use optim_dist::{CommError, Communicator, SelfComm, ThreadComm};

#[test]
fn all_to_all_v_delivers_every_segment_in_rank_order() {
    // Rank r sends (r + d) % 3 copies of 100 r + d to rank d (some segments are empty).
    let n = 4;
    let out = ThreadComm::run(n, |comm| {
        let r = comm.rank();
        let send_counts: Vec<usize> = (0..n).map(|d| (r + d) % 3).collect();
        let send: Vec<u64> = (0..n)
            .flat_map(|d| std::iter::repeat_n((100 * r + d) as u64, (r + d) % 3))
            .collect();
        let recv_counts: Vec<usize> = (0..n).map(|s| (s + r) % 3).collect();
        let mut recv = vec![0u64; recv_counts.iter().sum()];
        comm.all_to_all_v(&send, &send_counts, &mut recv, &recv_counts)
            .unwrap();
        recv
    });
    for (r, got) in out.iter().enumerate() {
        let want: Vec<u64> = (0..n)
            .flat_map(|s| std::iter::repeat_n((100 * s + r) as u64, (s + r) % 3))
            .collect();
        assert_eq!(got, &want, "rank {r}");
    }
}

#[test]
fn all_gather_v_broadcast_and_all_reduce() {
    let out = ThreadComm::run(3, |comm| {
        let r = comm.rank();
        let counts = [1, 0, 2];
        let send: Vec<f32> = (0..counts[r]).map(|i| (10 * r + i) as f32).collect();
        let mut all = vec![0.0f32; 3];
        comm.all_gather_v(&send, &mut all, &counts).unwrap();
        let mut b = if r == 2 {
            vec![7.5f64, -1.0]
        } else {
            vec![0.0; 2]
        };
        comm.broadcast(&mut b, 2).unwrap();
        // 0.1 + 0.2 + 0.3 in rank order is 0.6000000000000001; in another order 0.6.
        let mut s = [[0.1f64, 0.2, 0.3][r]];
        comm.all_reduce_sum(&mut s).unwrap();
        (all, b, s[0])
    });
    for (all, b, s) in out {
        assert_eq!(all, vec![0.0, 20.0, 21.0]);
        assert_eq!(b, vec![7.5, -1.0]);
        assert_eq!(s.to_bits(), ((0.1f64 + 0.2) + 0.3).to_bits());
    }
}

#[test]
fn a_rank_that_leaves_makes_the_others_fail_instead_of_hanging() {
    let out = ThreadComm::run(3, |comm| {
        if comm.rank() == 1 {
            return None; // leaves without joining the collective
        }
        let mut x = [1u64];
        Some(comm.all_reduce_sum(&mut x))
    });
    for r in [0, 2] {
        match &out[r] {
            Some(Err(CommError::Transport { op, detail })) => {
                assert_eq!(*op, "all_reduce_sum");
                assert!(detail.contains("rank 1 left"), "{detail}");
            }
            other => panic!("rank {r}: {other:?}"),
        }
    }
}

#[test]
fn wrong_counts_are_refused_before_communicating() {
    let e = SelfComm
        .all_to_all_v(&[1.0f32, 2.0], &[3], &mut [0.0; 2], &[2])
        .unwrap_err();
    assert!(
        matches!(
            e,
            CommError::Sizes {
                op: "all_to_all_v",
                ..
            }
        ),
        "{e}"
    );
    assert!(SelfComm.broadcast(&mut [0u8], 1).is_err());
    let mut r = [0.0f64; 2];
    SelfComm.all_gather_v(&[1.0, 2.0], &mut r, &[2]).unwrap();
    assert_eq!(r, [1.0, 2.0]);
}
