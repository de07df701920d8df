//! The client host's script: create the topic, start the readers, the consumer group and the
//! producers, wait for every send to resolve, then read every partition back and wait for the
//! group to have read every acknowledged write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_client::{Admin, Client, Consumer, ConsumerConfig, NewTopic};
use oxbow_jepsen::history::{Compaction, History};
use oxbow_jepsen::txn::TxnHistory;

use super::group::run_group;
use super::producers::produce;
use super::readers::read_during_run;
use super::transactions::run_transactions;
use super::{client_config, create_topic, sim_ms, sleep_ms, value_of, Trace, WorldOptions, TOPIC};

/// The client host: creates the topic, runs the producers through the safety phase, waits for
/// every send to resolve, then reads every partition back.
pub(super) async fn workload(
    options: WorldOptions,
    bootstrap: String,
    (history, txn_history): (Arc<Mutex<History>>, Arc<Mutex<TxnHistory>>),
    trace: Trace,
) -> Result<(), String> {
    let transactions = options.txn.map(|txn| {
        tokio::spawn(run_transactions(
            options.clone(),
            txn,
            bootstrap.clone(),
            txn_history,
            trace.clone(),
        ))
    });
    let client = Client::new(client_config(bootstrap.clone())).map_err(|e| e.to_string())?;
    let admin = Admin::new(client.clone());
    let mut topic = NewTopic::new(TOPIC, options.partitions, options.replication);
    topic.configs = options.trimming.topic_configs();
    if let Some(compaction) = &options.compaction {
        topic.configs.extend(compaction.topic_configs());
    }
    create_topic(&admin, topic, &trace).await;
    trace.line(&format!("{:>7} client topic created", sim_ms()));
    {
        let mut history = history.lock().expect("not poisoned");
        history.retention = options.trimming.retention();
        history.compaction = options.compaction.map(|c| Compaction {
            delete_retention_ms: c.delete_retention_ms,
            min_compaction_lag_ms: c.min_compaction_lag_ms,
        });
    }
    let trimmer = tokio::spawn(super::trimmer::trim(
        options.clone(),
        client.clone(),
        history.clone(),
        trace.clone(),
    ));
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
    trimmer
        .await
        .map_err(|e| format!("the trimmer task failed: {e}"))?;
    // On a compacted topic the readers go on while the cleaner settles (below): reader 0's
    // reads from the log start must meet the last tombstones within `delete.retention.ms`.
    if options.compaction.is_none() {
        stop_all(&stop_readers, &mut readers).await?;
    }
    // Every send has resolved; the cluster is healed. Read everything back.
    while sim_ms() < options.safety_ms {
        sleep_ms(100).await;
    }
    // A compacted topic's last segments roll (segment.ms, at a retention check) and are
    // cleaned before the final read, so that it reads every key's latest record from cleaned
    // segments too (a cleaner that loses or replaces it is seen).
    if let Some(compaction) = &options.compaction {
        let settle = compaction.segment_ms
            + options.trimming.retention_check_ms
            + compaction.cleaner_backoff_ms
            + compaction.min_compaction_lag_ms
            + 2_000;
        trace.line(&format!(
            "{:>7} client waits {settle} ms for the cleaner",
            sim_ms()
        ));
        sleep_ms(settle).await;
        stop_all(&stop_readers, &mut readers).await?;
    }
    // acks=1 writes may be lost, offsets and all: only acks=all ones must be read.
    let acknowledged = history.lock().expect("not poisoned").highest_acknowledged();
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let partitions: Vec<(&str, i32)> = (0..options.partitions).map(|p| (TOPIC, p)).collect();
    consumer.assign(&partitions);
    // A compacted topic's checker needs where each partition's read began (its log start)
    // and when the read began and ended.
    let mut starts: BTreeMap<i32, i64> = BTreeMap::new();
    if options.compaction.is_some() {
        for partition in 0..options.partitions {
            loop {
                match consumer.beginning_offset(TOPIC, partition).await {
                    Ok(start) => {
                        starts.insert(partition, start);
                        break;
                    }
                    Err(e) => {
                        trace.line(&format!(
                            "{:>7} client log start {partition}: {e}",
                            sim_ms()
                        ));
                        // ListOffsets does not refresh the client's metadata itself: a
                        // leader that moved would answer NOT_LEADER_OR_FOLLOWER forever.
                        let _ = client.refresh_metadata(&[TOPIC]).await;
                        sleep_ms(100).await;
                    }
                }
            }
        }
    }
    let began_ms = sim_ms();
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
            // A partition whose position fell below the log start (retention or a late
            // DeleteRecords moved it) is read again from there: the final read of a partition
            // is one dense run from its log start.
            for (_, partition, from) in consumer.take_resets() {
                trace.line(&format!(
                    "{:>7} client final read of {partition} reset from {from}",
                    sim_ms()
                ));
                history.reads.remove(&partition);
            }
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
    if options.compaction.is_some() {
        history.lock().expect("not poisoned").finish_final_read_at(
            options.partitions,
            began_ms,
            sim_ms(),
            |partition| starts.get(&partition).copied(),
        );
    } else {
        history
            .lock()
            .expect("not poisoned")
            .finish_final_read(options.partitions, |partition| {
                consumer.position(TOPIC, partition)
            });
    }
    trace.line(&format!("{:>7} client final read done", sim_ms()));
    // The group must read every acknowledged write too (it may be slower: rebalances), except
    // what retention removes meanwhile: below the log start offset, which is asked each round.
    let mut starts: BTreeMap<i32, i64> = history.lock().expect("not poisoned").final_starts.clone();
    let mut observed: BTreeMap<i32, i64> = BTreeMap::new();
    loop {
        if options.trimming.retention() {
            for (partition, start) in starts.iter_mut() {
                if let Ok(now) = consumer.beginning_offset(TOPIC, *partition).await {
                    observed.insert(*partition, now);
                    *start = (*start).max(now);
                }
            }
        }
        let caught_up = history
            .lock()
            .expect("not poisoned")
            .unread_by_group(&starts)
            .next()
            .is_none();
        if caught_up {
            break;
        }
        sleep_ms(200).await;
    }
    // The log starts as last seen (the checker holds them to the final read's).
    history.lock().expect("not poisoned").group_starts = observed;
    stop_group.store(true, Ordering::SeqCst);
    group
        .await
        .map_err(|e| format!("the group task failed: {e}"))?;
    history.lock().expect("not poisoned").group.finished = true;
    if let Some(transactions) = transactions {
        transactions
            .await
            .map_err(|e| format!("the transactional workload failed: {e}"))??;
    }
    trace.line(&format!("{:>7} client done", sim_ms()));
    Ok(())
}

/// Stops the readers and waits for each to end.
async fn stop_all(stop: &AtomicBool, readers: &mut tokio::task::JoinSet<()>) -> Result<(), String> {
    stop.store(true, Ordering::SeqCst);
    while let Some(result) = readers.join_next().await {
        result.map_err(|e| format!("a reader task failed: {e}"))?;
    }
    Ok(())
}
