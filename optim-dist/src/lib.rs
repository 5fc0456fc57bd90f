//! Data-parallel training for [optim-dsl](https://docs.rs/optim-dsl) optimizers, with the
//! optimizer state sharded over ranks (ZeRO stage 1).
//!
//! ```
//! use optim_dist::{Distributed, ThreadComm};
//! use optim_dsl::prelude::*;
//! use optim_dsl::zoo::AdamW;
//!
//! // Two ranks on two threads; each has the whole model and its own gradients.
//! let out = ThreadComm::run(2, |comm| {
//!     let rank = comm.rank() as f32;
//!     let mut dist = Distributed::new(AdamW::<f32>::default(), comm);
//!     let (mut w, mut b) = (vec![1.0f32; 6], vec![0.5f32; 3]);
//!     let (gw, gb) = (vec![0.1 + rank; 6], vec![-0.2 * rank; 3]);
//!     dist.update_slices(&mut [
//!         ParamSlice { name: "w", shape: &[3, 2], param: &mut w, grad: &gw },
//!         ParamSlice { name: "b", shape: &[3], param: &mut b, grad: &gb },
//!     ]).unwrap();
//!     (w, b)
//! });
//! assert_eq!(out[0], out[1]); // every rank holds the same updated parameters
//! # use optim_dist::Communicator;
//! ```
//!
//! - [`comm`]: the [`Communicator`] trait and its implementations: [`SelfComm`] (one rank),
//!   [`ThreadComm`] (ranks on threads, for tests), `MpiComm` (feature `mpi`, processes under
//!   `mpirun`).
//! - [`layout`]: who owns which parameter ([`Layout`]), from names, shapes and each rule's cost.
//! - [`Distributed`]: the step (gradient averaging, sharded update, parameter all-gather) and
//!   its cross-rank checks; [`GradSync`] chooses the gradient collective.
//! - [`sync`]: cross-rank agreement (errors, non-finite decisions) and [`sync::CommSync`], the
//!   runtime's coming step-sync hook for global reductions.
//! - [`checkpoint`]: one state file per rank plus a manifest; loading reshards to any rank
//!   count.
//!
//! Scaling notes (bandwidth model, load balance, NCCL plan): `docs/scaling.md` in the
//! repository.

pub mod checkpoint;
pub mod comm;
mod distributed;
pub mod layout;
pub mod sync;

#[cfg(feature = "mpi")]
pub use comm::mpi_comm::MpiComm;
pub use comm::{CommElem, CommError, Communicator, SelfComm, ThreadComm};
pub use distributed::{DistOptions, Distributed, GradSync, StepTimings};
pub use layout::{Layout, ShardOptions};
