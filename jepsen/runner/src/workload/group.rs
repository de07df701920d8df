//! The subscribed consumers (Jepsen's `subscribe`): members of one consumer group polling the
//! topic during the run and after healing, each recording what it read with its generation
//! and every acknowledged offset commit, now and then one crashing and replaced by a new
//! member; and the wait, after the final read, until the group
//! has read every acknowledged write (else the group was not live).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxbow_client::{GroupConfig, GroupConsumer};
use oxbow_jepsen::history::{GroupCommit, GroupDelivery, History};

use super::{client, value_of, Clock};
use crate::rng::Stream;

/// What the consumer group needs.
pub struct Group {
    /// The cluster.
    pub bootstrap: String,
    /// The group id.
    pub group: String,
    /// The topic its members subscribe to.
    pub topic: String,
    /// Members at a time.
    pub members: usize,
    /// Seconds between crashes of a member (each replaced by a new one), if any.
    pub crash_every: Option<(u64, u64)>,
    /// The run's seed.
    pub seed: u64,
    /// Where deliveries and commits go.
    pub history: Arc<Mutex<History>>,
    /// The run's clock.
    pub clock: Clock,
    /// Set when the faults stop: no more crashes.
    pub stop_crashes: Arc<AtomicBool>,
    /// Set when the members must leave.
    pub stop: Arc<AtomicBool>,
}

/// Runs the group's members until `stop`, crashing one now and then (Jepsen's `crash` of a
/// client: its task is dropped without leaving the group, so the group waits out its session)
/// and starting a new member in its place; returns the number of crashes.
pub async fn run_group(group: Group) -> Result<u64, String> {
    let mut rng = Stream::new(group.seed, "group-crashes");
    let start = |member: usize| {
        tokio::spawn(group_member(
            member,
            group.bootstrap.clone(),
            group.group.clone(),
            group.topic.clone(),
            group.history.clone(),
            group.clock,
            group.stop.clone(),
        ))
    };
    let mut running: Vec<(usize, tokio::task::JoinHandle<Result<(), String>>)> =
        (0..group.members).map(|m| (m, start(m))).collect();
    let mut next_member = group.members;
    let mut crashes = 0;
    let mut next_crash = group
        .crash_every
        .map(|(low, high)| group.clock.ms() + rng.between(low, high) * 1000);
    while !group.stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (Some(at), Some((low, high))) = (next_crash, group.crash_every) else {
            continue;
        };
        if group.clock.ms() < at || group.stop_crashes.load(Ordering::SeqCst) || running.is_empty()
        {
            continue;
        }
        let (victim, task) = running.remove(rng.below(running.len() as u64) as usize);
        task.abort();
        crashes += 1;
        println!(
            "[{:>6.1}s] group member g{victim} crashed; g{next_member} starts",
            group.clock.ms() as f64 / 1000.0
        );
        running.push((next_member, start(next_member)));
        next_member += 1;
        next_crash = Some(group.clock.ms() + rng.between(low, high) * 1000);
    }
    for (member, task) in running {
        task.await
            .map_err(|e| format!("group member g{member} failed: {e}"))??;
    }
    Ok(crashes)
}

/// One member: polls, records what it read with its generation, commits after every poll
/// that read something, and records what was committed; until `stop`.
pub async fn group_member(
    member: usize,
    bootstrap: String,
    group: String,
    topic: String,
    history: Arc<Mutex<History>>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut config = GroupConfig::new(&group);
    config.session_timeout_ms = 6_000;
    config.rebalance_timeout_ms = 10_000;
    config.heartbeat_interval = Duration::from_millis(500);
    let mut consumer = GroupConsumer::new(client(&bootstrap)?, config, &[&topic]);
    while !stop.load(Ordering::SeqCst) {
        let records = match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(generation) = consumer.generation().filter(|_| !records.is_empty()) else {
            continue;
        };
        history
            .lock()
            .expect("not poisoned")
            .group
            .deliveries
            .extend(records.iter().map(|r| GroupDelivery {
                member,
                generation,
                partition: r.partition,
                offset: r.offset,
                value: value_of(r),
            }));
        if let Ok(committed) = consumer.commit().await {
            let at_ms = clock.ms();
            history
                .lock()
                .expect("not poisoned")
                .group
                .commits
                .extend(
                    committed
                        .into_iter()
                        .map(|(_, partition, offset)| GroupCommit {
                            member,
                            generation,
                            partition,
                            offset,
                            at_ms,
                        }),
                );
        }
    }
    // Leaving at once lets the others take its partitions without waiting for its session.
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.leave()).await;
    Ok(())
}

/// After the final read: waits until the group has read every acknowledged acks=all write at
/// or above the final read's start, or `timeout`; says whether it did.
pub async fn wait_for_group(history: &Arc<Mutex<History>>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = {
            let history = history.lock().expect("not poisoned");
            history.unread_by_group(&history.final_starts).count()
        };
        if missing == 0 {
            return true;
        }
        if Instant::now() > deadline {
            println!(
                "the consumer group did not read {missing} acknowledged writes within {timeout:?}"
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
