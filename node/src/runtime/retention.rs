//! Retention, as Kafka's log cleaner deletes: every `log.retention_check_interval_ms`, for each
//! partition this node leads, the disk writer says where the log start may move by the topic's
//! `retention.ms` and `retention.bytes` (whole closed segments: see
//! `storage::SegmentLog::retention`), and the node proposes that through the partition's Raft
//! log, as DeleteRecords does. Every replica then applies the same log start and deletes its
//! own files below it; the log start never moves back after a leader change. Topics whose
//! `cleanup.policy` is `compact` alone are skipped; `compact,delete` ones are not.

use std::collections::BTreeMap;
use std::time::Duration;

use oxbow_core::ids::GroupId;
use oxbow_core::io::{DeleteRecordsRequest, Request, Response};
use oxbow_core::metadata::is_internal;
use slog::{debug, info, Logger};
use tokio::sync::watch;

use super::env::Clock;
use super::writer::Writer;
use super::CoreHandle;
use crate::config::Config;
use crate::storage::RetentionPolicy;

/// Checks retention every `log.retention_check_interval_ms` until shutdown.
pub(super) async fn run(
    config: Config,
    core: CoreHandle,
    writer: Writer,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let interval = Duration::from_millis(config.log.retention_check_interval_ms);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if check(&config, &core, &writer, &clock, &logger)
            .await
            .is_none()
        {
            return; // the node is stopping
        }
    }
}

/// One round; `None` when the node is stopping.
async fn check(
    config: &Config,
    core: &CoreHandle,
    writer: &Writer,
    clock: &Clock,
    logger: &Logger,
) -> Option<()> {
    let metadata = core.metadata();
    let mut policies: BTreeMap<GroupId, (RetentionPolicy, String, usize)> = BTreeMap::new();
    for topic in metadata.topics().values() {
        // The internal topics are command logs: compacted by key, never by retention; so are
        // topics whose cleanup policy lacks delete (Kafka's `LogManager` skips them too).
        if is_internal(&topic.name) || !topic.cleanup().delete {
            continue;
        }
        let policy = config.retention(topic);
        if policy.retention_ms < 0 && policy.retention_bytes < 0 {
            continue;
        }
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.replicas.contains(&config.node()) {
                policies.insert(partition.group, (policy, topic.name.clone(), index));
            }
        }
    }
    if policies.is_empty() {
        return Some(());
    }
    // Only the leader decides; its followers apply what it proposes.
    let groups: Vec<GroupId> = policies.keys().copied().collect();
    let statuses = core.status(groups.clone()).await?;
    let led: BTreeMap<GroupId, RetentionPolicy> = groups
        .iter()
        .zip(statuses)
        .filter_map(|(group, status)| {
            let status = status.filter(|s| s.serving)?;
            let policy = RetentionPolicy {
                log_end: Some(status.high_watermark),
                ..policies[group].0
            };
            Some((*group, policy))
        })
        .collect();
    if led.is_empty() {
        return Some(());
    }
    let now_ms = clock.now().wall_ms;
    for (group, offset) in writer.retention(led, now_ms).await? {
        let (_, topic, partition) = &policies[&group];
        let request = Request::DeleteRecords(DeleteRecordsRequest {
            group,
            offset: Some(offset),
            timeout_ms: 30_000,
        });
        match core.request(request).await? {
            Response::DeleteRecords(Ok(log_start)) if log_start == offset => {
                info!(logger, "retention moved the log start";
                    "topic" => topic, "partition" => partition, "log_start_offset" => offset.0);
            }
            // Already there, or leadership moved: the next round looks again.
            other => debug!(logger, "retention: log start not moved";
                "topic" => topic, "partition" => partition, "answer" => ?other),
        }
    }
    Some(())
}
