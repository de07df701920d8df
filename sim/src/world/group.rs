//! The consumer group on the client host: its members (each polls, records what it read with
//! its generation, and commits), and the crashes of members, each replaced by a new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_client::{Client, GroupConfig, GroupConsumer};
use oxbow_jepsen::history::{GroupCommit, GroupDelivery, History};

use super::{client_config, sim_ms, sleep_ms, value_of, Trace, WorldOptions, TOPIC};
use crate::rng::Stream;

/// The consumer group: its members, and (when the options say so) crashes of members, each
/// replaced by a new one.
pub(super) async fn run_group(
    options: WorldOptions,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
    stop: Arc<AtomicBool>,
) {
    history.lock().expect("not poisoned").group.ran = true;
    let mut crashes = Stream::new(options.seed, "world-group-crashes");
    let start = |member: usize| {
        tokio::spawn(group_member(
            member,
            bootstrap.clone(),
            history.clone(),
            trace.clone(),
        ))
    };
    let mut members: Vec<(usize, tokio::task::JoinHandle<()>)> =
        (0..options.group_members).map(|m| (m, start(m))).collect();
    let mut next_member = options.group_members;
    let mut next_crash = options
        .member_crash_every_ms
        .map(|(low, high)| sim_ms() + crashes.between(low, high));
    while !stop.load(Ordering::SeqCst) {
        sleep_ms(100).await;
        let Some(at) = next_crash else { continue };
        if sim_ms() < at || sim_ms() >= options.safety_ms {
            continue;
        }
        let (victim, task) = members.remove(crashes.below(members.len() as u64) as usize);
        task.abort();
        trace.line(&format!("{:>7} client member m{victim} crashed", sim_ms()));
        members.push((next_member, start(next_member)));
        next_member += 1;
        let (low, high) = options.member_crash_every_ms.expect("crashes scheduled");
        next_crash = Some(sim_ms() + crashes.between(low, high));
    }
    for (_, task) in members {
        task.abort();
    }
}

/// One member of the consumer group: polls, records what it read with its generation,
/// commits after every poll that read something, and records what was committed.
async fn group_member(
    member: usize,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
) {
    let Ok(client) = Client::new(client_config(bootstrap)) else {
        return;
    };
    let mut config = GroupConfig::new("sim-group");
    config.session_timeout_ms = 6_000;
    config.rebalance_timeout_ms = 10_000;
    config.heartbeat_interval = Duration::from_millis(500);
    let mut consumer = GroupConsumer::new(client, config, &[TOPIC]);
    let mut last_generation = None;
    loop {
        let records = match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(e) => {
                trace.line(&format!("{:>7} client m{member} poll: {e}", sim_ms()));
                sleep_ms(100).await;
                continue;
            }
        };
        let generation = consumer.generation();
        if generation != last_generation {
            trace.line(&format!(
                "{:>7} client m{member} generation {generation:?} assignment {:?}",
                sim_ms(),
                consumer.assignment()
            ));
            last_generation = generation;
        }
        let Some(generation) = generation.filter(|_| !records.is_empty()) else {
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
        match consumer.commit().await {
            Ok(committed) => {
                let at_ms = sim_ms();
                history.lock().expect("not poisoned").group.commits.extend(
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
            Err(e) => trace.line(&format!("{:>7} client m{member} commit: {e}", sim_ms())),
        }
    }
}
