//! oxbow's sans-IO core: the deterministic state machines of a node.
//!
//! A [`node::Node`] hosts many Raft groups (one per partition). The driver feeds it
//! [`io::Input`]s with the current time and carries out the [`io::Output`]s it returns: peer
//! sends, disk writes, client replies. Nothing here touches a socket, a file, a thread, a clock or
//! OS randomness; `clippy.toml` bans them and `tests/` checks the dependency tree.

#![deny(missing_docs)]
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod batch;
pub mod clean;
pub mod codec;
pub mod coordinator;
pub mod epoch_history;
pub mod ids;
pub mod io;
pub mod log_store;
pub mod metadata;
pub mod node;
mod partition;
pub mod producer;
pub mod snapshot;
#[cfg(test)]
mod test_support;
pub mod time;
pub mod txn;

pub use raft;
