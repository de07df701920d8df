//! Deterministic simulation of oxbow clusters, in two worlds:
//!
//! - [`cluster`]: an in-process discrete-event simulation of several cores (the real `Node`s
//!   over the real segment log on simulated disks, a simulated network and clocks), with fault
//!   injection and a checker. Fast, and it reaches deep into raft's corner cases.
//! - [`world`]: a turmoil world running the real node runtime and the real client over
//!   turmoil's TCP, simulated disks and per-node clocks.

#![deny(missing_docs)]

// turmoil seeds each host's tokio scheduler (select! branch order, watch wake-ups) only under
// `tokio_unstable`; without it two runs of one seed differ. .cargo/config.toml sets it.
#[cfg(not(tokio_unstable))]
compile_error!(
    "oxbow-sim must be built with RUSTFLAGS=\"--cfg tokio_unstable\" (see .cargo/config.toml)"
);

pub mod checker;
pub mod cluster;
pub mod options;
pub mod rng;
pub mod world;
