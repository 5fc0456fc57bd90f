//! Fixed-iteration benchmark of a data-parallel step: per-step time split into gradient sync,
//! update and parameter sync, and optimizer-state memory per rank.
//!
//! ```text
//! # threads of one process, at 1, 2 and 4 ranks
//! cargo run --release -p optim-dist --example dist_bench -- --ranks 1,2,4
//! # MPI processes (the rank count is mpirun's)
//! cargo build --release -p optim-dist --features mpi --example dist_bench
//! mpirun -np 4 target/release/examples/dist_bench
//! ```
//!
//! Not criterion: criterion picks its iteration count per process, so ranks would call the
//! collectives a different number of times and hang. Every rank runs `--warmup` (default 3)
//! then `--iters` (default 20) steps; the table reports, per phase, the mean over steps of the
//! slowest rank's time. Options: `--optimizer adamw|muon` (default both), `--width W` (default
//! 512: eight `W × W` matrices and their biases). On a machine with fewer cores than ranks the
//! ranks share cores: treat those timings as functional checks only.

use optim_dist::{Communicator, Distributed};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, Muon};
use std::time::Instant;

struct Args {
    ranks: Vec<usize>,
    optimizers: Vec<String>,
    width: usize,
    warmup: usize,
    iters: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        ranks: vec![1, 2, 4],
        optimizers: vec!["adamw".into(), "muon".into()],
        width: 512,
        warmup: 3,
        iters: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--ranks" => a.ranks = v.split(',').map(num).collect::<Result<_, _>>()?,
            "--optimizer" => a.optimizers = vec![v],
            "--width" => a.width = num(&v)?,
            "--warmup" => a.warmup = num(&v)?,
            "--iters" => a.iters = num(&v)?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// Per-phase seconds (slowest rank, summed over the timed steps) and state bytes per rank.
struct Measured {
    phases: [f64; 5],
    state: Vec<f64>,
}

fn bench<O: DslOptimizer<f32>, C: Communicator>(
    opt: O,
    comm: C,
    a: &Args,
) -> Result<Measured, String> {
    let w = a.width;
    let names: Vec<String> = (0..8)
        .flat_map(|l| [format!("layer{l}.weight"), format!("layer{l}.bias")])
        .collect();
    let shapes: Vec<Vec<usize>> = (0..8).flat_map(|_| [vec![w, w], vec![w]]).collect();
    let rank = comm.rank();
    let mut params: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| vec![0.01; s.iter().product()])
        .collect();
    let grads: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(p, s)| {
            let n: usize = s.iter().product();
            (0..n)
                .map(|i| (((i * 31 + p * 7 + rank * 13) % 97) as f32 - 48.0) * 1e-3)
                .collect()
        })
        .collect();
    let mut dist = Distributed::new(opt, comm);
    let mut phases = [0.0f64; 5];
    for it in 0..a.warmup + a.iters {
        let mut slices: Vec<ParamSlice<'_, f32>> = params
            .iter_mut()
            .zip(&names)
            .zip(&shapes)
            .zip(&grads)
            .map(|(((p, n), s), g)| ParamSlice {
                name: n,
                shape: s,
                param: p,
                grad: g,
            })
            .collect();
        let t = Instant::now();
        dist.update_slices(&mut slices).map_err(|e| e.to_string())?;
        let total = t.elapsed().as_secs_f64();
        if it >= a.warmup {
            let s = dist.last_timings();
            // The slowest rank's time per phase: what the step costs the job.
            let mut mine = [
                s.checks.as_secs_f64(),
                s.grad_sync.as_secs_f64(),
                s.update.as_secs_f64(),
                s.param_sync.as_secs_f64(),
                total,
            ];
            let n = dist.comm().size();
            let mut all = vec![0.0f64; 5 * n];
            dist.comm()
                .all_gather_v(&mine, &mut all, &vec![5; n])
                .map_err(|e| e.to_string())?;
            for (k, m) in mine.iter_mut().enumerate() {
                *m = (0..n).map(|r| all[5 * r + k]).fold(0.0, f64::max);
            }
            for (p, m) in phases.iter_mut().zip(mine) {
                *p += m;
            }
        }
    }
    let n = dist.comm().size();
    let mut state = vec![0.0f64; n];
    dist.comm()
        .all_gather_v(&[dist.state_bytes::<f32>() as f64], &mut state, &vec![1; n])
        .map_err(|e| e.to_string())?;
    Ok(Measured { phases, state })
}

fn run<C: Communicator>(comm: C, a: &Args, opt: &str) -> Result<Option<String>, String> {
    let (rank, n) = (comm.rank(), comm.size());
    let m = match opt {
        "adamw" => bench(AdamW::<f32>::default(), comm, a)?,
        "muon" => bench(Muon::<f32>::default(), comm, a)?,
        other => return Err(format!("unknown optimizer {other}")),
    };
    if rank != 0 {
        return Ok(None);
    }
    let ms = |s: f64| 1e3 * s / a.iters as f64;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let max = m.state.iter().copied().fold(0.0, f64::max);
    let total: f64 = m.state.iter().sum();
    Ok(Some(format!(
        "{opt:<6} {n:>5} {:>9.2} {:>10.2} {:>9.2} {:>10.2} {:>9.2} {:>13.2} {:>11.2}",
        ms(m.phases[0]),
        ms(m.phases[1]),
        ms(m.phases[2]),
        ms(m.phases[3]),
        ms(m.phases[4]),
        mib(max),
        mib(total),
    )))
}

const HEADER: &str = "optim  ranks  checks ms  gradsync ms  update ms  paramsync ms  step ms  state/rank MiB  state total MiB";

#[cfg(feature = "mpi")]
fn main() -> Result<(), String> {
    let a = args()?;
    let universe = mpi::initialize().ok_or("MPI was already initialised")?;
    let comm = optim_dist::MpiComm::new(&universe.world());
    if comm.rank() == 0 {
        println!(
            "width {}, {} timed steps after {} warm-up steps, MPI",
            a.width, a.iters, a.warmup
        );
        println!("{HEADER}");
    }
    for opt in &a.optimizers {
        if let Some(line) = run(optim_dist::MpiComm::new(comm.raw()), &a, opt)? {
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(not(feature = "mpi"))]
fn main() -> Result<(), String> {
    let a = args()?;
    println!(
        "width {}, {} timed steps after {} warm-up steps, ranks on threads",
        a.width, a.iters, a.warmup
    );
    println!("{HEADER}");
    for opt in &a.optimizers {
        for &n in &a.ranks {
            let out = optim_dist::ThreadComm::run(n, |comm| run(comm, &a, opt));
            for line in out {
                if let Some(l) = line? {
                    println!("{l}");
                }
            }
        }
    }
    Ok(())
}
