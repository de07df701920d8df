//! The turmoil world: the real node runtime (`oxbow_node::runtime::start`, the same code as
//! `oxbow node`) on 3 to 5 simulated hosts, and the real client (`oxbow-client`) on a client
//! host, over turmoil's TCP, with simulated disks and per-node clocks.
//!
//! The driver steps turmoil one millisecond at a time and injects faults between steps:
//! crashes that lose unsynced bytes (and may tear the last frame), damage to a crashed node's
//! synced bytes (which it must detect and refuse to start on), and network partitions.
//! Partitions hold a link's segments and deliver them when it heals, as TCP's retransmission
//! would; turmoil's dropping partitions would wedge its TCP streams, which have no retransmit.
//! A safety phase with faults is followed by a healed liveness phase, in which every send must
//! resolve and every acknowledged record must be read back.
//!
//! Everything observable goes into the trace hash: every log record of every node at info level
//! and above (with its simulated time), every fault, and every client operation.
//!
//! This file holds what the parts share (constants, simulated time, host names, the clients'
//! configuration); its children each do one job: `options` (a seed's world), `trace` (the trace
//! hash and the nodes' log drain), `transport` (turmoil's TCP for nodes and clients), `node` (a
//! node's configuration, clock and host), `faults` (the fault schedule), `run` (the driver),
//! `report` (what a run found), and the workload tasks on the client host: `workload` (the
//! client host's script and the final read), `producers`, `readers`, `trimmer` (DeleteRecords
//! calls), `group` (the consumer group's members) and `transactions` (consume-transform-produce
//! with transactions, in half the seeds).

use std::sync::Arc;
use std::time::Duration;

use oxbow_client::{ClientConfig, WallClock};

mod faults;
mod group;
mod node;
mod options;
mod producers;
mod readers;
mod report;
mod run;
mod trace;
mod transactions;
mod transport;
mod trimmer;
mod workload;

pub use options::{CompactionOptions, Trimming, WorldOptions};
pub use report::{WorldReport, WorldStats};
pub use run::{run_world, Output};
pub use trace::Trace;
pub use transactions::TxnOptions;
pub use transport::{TurmoilConnector, TurmoilNet};

/// The simulated wall clock starts at 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;
const KAFKA_PORT: u16 = 9092;
const TICK_MS: u64 = 1;
const PEER_PORT: u16 = 19092;
/// The host the workload's clients run on.
const CLIENT: &str = "client";
/// The topic the workload writes.
pub const TOPIC: &str = "sim";

/// Simulated milliseconds since the world started.
fn sim_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

/// A node's host name (`n1`, `n2`, ...).
fn node_name(index: usize) -> String {
    format!("n{}", index + 1)
}

/// A client of the cluster at `bootstrap`, over turmoil's TCP and the simulated wall clock.
fn client_config(bootstrap: String) -> ClientConfig {
    let mut config = ClientConfig::new(&bootstrap);
    config.connector = Arc::new(TurmoilConnector);
    config.request_timeout = Duration::from_secs(5);
    config.wall_clock = WallClock::from_fn(|| EPOCH_MS + sim_ms() as i64);
    config
}

/// Creates `topic`, retrying (each failure traced) until it exists.
async fn create_topic(admin: &oxbow_client::Admin, topic: oxbow_client::NewTopic, trace: &Trace) {
    let name = topic.name.clone();
    loop {
        match admin.create_topics(std::slice::from_ref(&topic)).await {
            Ok(answers) => match &answers[0] {
                Ok(()) => return,
                Err(oxbow_client::Error::Broker { code, .. })
                    if *code == oxbow_client::error::codes::TOPIC_ALREADY_EXISTS =>
                {
                    return
                }
                Err(e) => trace.line(&format!("{:>7} client create {name}: {e}", sim_ms())),
            },
            Err(e) => trace.line(&format!("{:>7} client create {name}: {e}", sim_ms())),
        }
        sleep_ms(200).await;
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The number a record's value starts with (what a producer sent); for a tombstone (no value)
/// its id header's; else `u64::MAX`.
fn value_of(record: &oxbow_client::ConsumerRecord) -> u64 {
    use oxbow_jepsen::history::{record_value, ID_HEADER};
    let id = record
        .headers
        .iter()
        .find(|(k, _)| k == ID_HEADER)
        .and_then(|(_, v)| v.as_deref());
    record_value(record.value.as_deref(), id)
}
