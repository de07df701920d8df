//! The queue workload (Jepsen's Kafka queue test): producers of globally unique values,
//! readers polling every partition during the run, and the final read after healing, all
//! recorded in an `oxbow_jepsen::history::History` exactly as the checker expects and as the
//! simulator's turmoil world records it. Children: `producers`, `readers`, `final_read`,
//! `group` (the consumer group, which the groups workload is about), and `txn` (the
//! transactional workload, with its own history).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oxbow_client::{Admin, Client, ClientConfig, NewTopic};

mod final_read;
mod group;
mod producers;
mod readers;
pub mod txn;

pub use final_read::final_read;
pub use group::{run_group, wait_for_group, Group};
pub use producers::{produce, ProducerTask};
pub use readers::read_during_run;

/// Milliseconds since the run started: the history's time.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Milliseconds since the start.
    pub fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Running counts for the progress line.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sends invoked.
    pub sent: AtomicU64,
    /// Sends acknowledged.
    pub ok: AtomicU64,
    /// Sends that definitely failed.
    pub fail: AtomicU64,
    /// Sends whose outcome is unknown.
    pub info: AtomicU64,
    /// Non-empty polls of the readers.
    pub polls: AtomicU64,
    /// Records those polls returned.
    pub polled: AtomicU64,
    /// Poll errors.
    pub poll_errors: AtomicU64,
}

impl Stats {
    /// `sent N ok N fail N info N pending N polls N (records N)`.
    pub fn line(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (sent, ok, fail, info) = (
            get(&self.sent),
            get(&self.ok),
            get(&self.fail),
            get(&self.info),
        );
        format!(
            "sent {sent} ok {ok} fail {fail} info {info} pending {} | polls {} ({} records, {} errors)",
            sent.saturating_sub(ok + fail + info),
            get(&self.polls),
            get(&self.polled),
            get(&self.poll_errors)
        )
    }
}

/// A client of the cluster at `bootstrap`: requests time out after 5 s, so that a paused
/// node shows up as an indeterminate outcome, not a stuck process.
pub fn client(bootstrap: &str) -> Result<Client, String> {
    let mut config = ClientConfig::new(bootstrap);
    config.client_id = "oxbow-jepsen".into();
    config.request_timeout = Duration::from_secs(5);
    config.reconnect_backoff_max = Duration::from_secs(1);
    Client::new(config).map_err(|e| format!("cannot make a client of {bootstrap}: {e}"))
}

/// Creates the topic and waits until each partition has a leader, retrying for `timeout`.
pub async fn create_topic(
    client: &Client,
    topic: &str,
    partitions: i32,
    replication: i16,
    timeout: Duration,
) -> Result<(), String> {
    let admin = Admin::new(client.clone());
    let deadline = Instant::now() + timeout;
    let new = NewTopic::new(topic, partitions, replication);
    let mut last = String::new();
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "the topic {topic} has no leader for every partition after {timeout:?} (last: {last}); is the cluster up, with at least {replication} nodes?"
            ));
        }
        match admin.create_topics(std::slice::from_ref(&new)).await {
            Ok(answers) => match &answers[0] {
                Ok(()) => {}
                Err(oxbow_client::Error::Broker { code, .. })
                    if *code == oxbow_client::error::codes::TOPIC_ALREADY_EXISTS => {}
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        if let Ok(metadata) = client.refresh_metadata(&[topic]).await {
            if let Some(info) = metadata.topics.get(topic) {
                if info.partitions.len() == partitions as usize
                    && info.partitions.iter().all(|p| p.leader >= 0)
                {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The number a record's value starts with (what a producer sent), or `u64::MAX` for a record
/// this workload did not write (the checker calls it a phantom).
pub fn value_of(record: &oxbow_client::ConsumerRecord) -> u64 {
    oxbow_jepsen::history::queue_value(record.value.as_deref())
}
