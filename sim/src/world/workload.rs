//! The client host's script: create the topic, start the readers, the consumer group and the
//! producers, wait for every send to resolve, then read every partition back and wait for the
//! group to have read every acknowledged write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_client::{Admin, Client, Consumer, ConsumerConfig, NewTopic};
use oxbow_jepsen::history::{Delivery, History, Outcome};

use super::group::run_group;
use super::producers::produce;
use super::readers::read_during_run;
use super::{client_config, sim_ms, sleep_ms, value_of, Trace, WorldOptions, TOPIC};

/// The client host: creates the topic, runs the producers through the safety phase, waits for
/// every send to resolve, then reads every partition back.
pub(super) async fn workload(
    options: WorldOptions,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
) -> Result<(), String> {
    let client = Client::new(client_config(bootstrap.clone())).map_err(|e| e.to_string())?;
    let admin = Admin::new(client.clone());
    loop {
        let topic = NewTopic::new(TOPIC, options.partitions, options.replication);
        match admin.create_topics(&[topic]).await {
            Ok(answers) => match &answers[0] {
                Ok(()) => break,
                Err(oxbow_client::Error::Broker { code, .. })
                    if *code == oxbow_client::error::codes::TOPIC_ALREADY_EXISTS =>
                {
                    break
                }
                Err(e) => trace.line(&format!("{:>7} client create topic: {e}", sim_ms())),
            },
            Err(e) => trace.line(&format!("{:>7} client create topic: {e}", sim_ms())),
        }
        sleep_ms(200).await;
    }
    trace.line(&format!("{:>7} client topic created", sim_ms()));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..options.readers {
        readers.spawn(read_during_run(
            reader,
            options.clone(),
            bootstrap.clone(),
            history.clone(),
            trace.clone(),
            stop_readers.clone(),
        ));
    }
    let stop_group = Arc::new(AtomicBool::new(false));
    let group = tokio::spawn(run_group(
        options.clone(),
        bootstrap.clone(),
        history.clone(),
        trace.clone(),
        stop_group.clone(),
    ));
    let mut producers = tokio::task::JoinSet::new();
    for (index, kind) in options.producers.iter().enumerate() {
        producers.spawn(produce(
            index,
            *kind,
            options.clone(),
            client.clone(),
            history.clone(),
            trace.clone(),
        ));
    }
    while let Some(result) = producers.join_next().await {
        result.map_err(|e| format!("a producer task failed: {e}"))??;
    }
    stop_readers.store(true, Ordering::SeqCst);
    while let Some(result) = readers.join_next().await {
        result.map_err(|e| format!("a reader task failed: {e}"))?;
    }
    // Every send has resolved; the cluster is healed. Read everything back.
    while sim_ms() < options.safety_ms {
        sleep_ms(100).await;
    }
    let acknowledged: BTreeMap<i32, i64> = {
        let history = history.lock().expect("not poisoned");
        let mut highest = BTreeMap::new();
        // acks=1 writes may be lost, offsets and all: only acks=all ones must be read.
        for send in history.sends.values() {
            if send.kind == Delivery::LeaderOnly {
                continue;
            }
            if let Outcome::Ok { partition, offset } = send.outcome {
                let entry = highest.entry(partition).or_insert(-1);
                *entry = (*entry).max(offset);
            }
        }
        highest
    };
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let partitions: Vec<(&str, i32)> = (0..options.partitions).map(|p| (TOPIC, p)).collect();
    consumer.assign(&partitions);
    let mut quiet_since = sim_ms();
    loop {
        let records = match consumer.poll(Duration::from_millis(500)).await {
            Ok(records) => records,
            Err(e) => {
                trace.line(&format!("{:>7} client poll: {e}", sim_ms()));
                sleep_ms(100).await;
                continue;
            }
        };
        if !records.is_empty() {
            quiet_since = sim_ms();
        }
        {
            let mut history = history.lock().expect("not poisoned");
            for record in &records {
                let value = value_of(record);
                trace.line(&format!(
                    "{:>7} client read {}@{} = {value}",
                    sim_ms(),
                    record.partition,
                    record.offset
                ));
                history
                    .reads
                    .entry(record.partition)
                    .or_default()
                    .push((record.offset, value));
            }
        }
        let caught_up = acknowledged.iter().all(|(p, highest)| {
            consumer
                .position(TOPIC, *p)
                .is_some_and(|position| position > *highest)
        });
        // Caught up with every acknowledged write, and nothing new for a while: done.
        if caught_up && sim_ms() - quiet_since >= 2_000 {
            break;
        }
    }
    history.lock().expect("not poisoned").finished = true;
    trace.line(&format!("{:>7} client final read done", sim_ms()));
    // The group must read every acknowledged write too (it may be slower: rebalances).
    loop {
        let caught_up = {
            let history = history.lock().expect("not poisoned");
            let delivered: BTreeSet<u64> =
                history.group.deliveries.iter().map(|d| d.value).collect();
            history.sends.values().all(|s| {
                s.kind == Delivery::LeaderOnly
                    || !matches!(s.outcome, Outcome::Ok { .. })
                    || delivered.contains(&s.value)
            })
        };
        if caught_up {
            break;
        }
        sleep_ms(200).await;
    }
    stop_group.store(true, Ordering::SeqCst);
    group
        .await
        .map_err(|e| format!("the group task failed: {e}"))?;
    history.lock().expect("not poisoned").group.finished = true;
    trace.line(&format!("{:>7} client done", sim_ms()));
    Ok(())
}
