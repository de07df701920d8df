//! The log cleaner's scheduling (Kafka's `LogCleaner` thread): one compacted partition at a
//! time, off the produce and fetch paths, its IO throttled.
//!
//! Every `[log] cleaner_backoff_ms`, for the partitions of compacted topics this node hosts
//! (leader or follower: each replica cleans its own log, see docs/ARCHITECTURE.md), it first
//! rolls the active segments older than the topic's `segment.ms` (for `compact` alone;
//! retention rolls those of `compact,delete` topics), so that closed segments exist to clean;
//! then asks the disk writer what each log holds (`storage::CleanStats`) and picks the
//! partition whose dirty part is the largest fraction of its closed segments, among those at
//! or past the topic's `min.cleanable.dirty.ratio`, or whose oldest dirty segment is older
//! than `max.compaction.lag.ms` (those first). Its pass cleans below the partition's last
//! stable offset and the `min.compaction.lag.ms` horizon, with the topic's
//! `delete.retention.ms`, and runs on the writer a step (one segment) at a time: after each
//! step the task sleeps as long as its bytes take at `cleaner_io_bytes_per_second`, and
//! group commits go on between steps. Right after a pass it looks again at once.

use std::collections::BTreeMap;
use std::time::Duration;

use oxbow_core::clean::{txns_max, OffsetMap};
use oxbow_core::ids::GroupId;
#[cfg(test)]
use oxbow_core::ids::Offset;
use oxbow_core::metadata::{is_internal, TopicMeta};
use slog::{debug, info, warn, Logger};
use tokio::sync::watch;

use super::env::Clock;
use super::writer::Writer;
use super::CoreHandle;
use crate::config::Config;
use crate::storage::{CleanOptions, CleanPass, CleanStats, RetentionPolicy};

/// What a compacted topic asks of its partitions' cleaning.
#[derive(Clone, Debug)]
struct Policy {
    topic: String,
    partition: usize,
    min_dirty_ratio: f64,
    min_lag_ms: i64,
    max_lag_ms: i64,
    delete_retention_ms: i64,
    segment_ms: i64,
    compact_only: bool,
}

/// Runs the cleaner until shutdown.
pub(super) async fn run(
    config: Config,
    core: CoreHandle,
    writer: Writer,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let backoff = Duration::from_millis(config.log.cleaner_backoff_ms);
    let mut map = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        loop {
            let Some(cleaned) = round(
                &config,
                &core,
                &writer,
                &clock,
                &mut map,
                &mut shutdown,
                &logger,
            )
            .await
            else {
                return; // the node is stopping
            };
            if !cleaned {
                break;
            }
        }
    }
}

/// The cleaning policies of the compacted partitions hosted here.
fn policies(config: &Config, core: &CoreHandle) -> BTreeMap<GroupId, Policy> {
    let metadata = core.metadata();
    let mut policies = BTreeMap::new();
    for topic in metadata.topics().values() {
        // The internal topics are command logs, compacted into their coordinators' state.
        if is_internal(&topic.name) || !topic.cleanup().compact {
            continue;
        }
        let number = |key| config.topic_value(topic, key).0.parse::<i64>().ok();
        let policy = Policy {
            topic: topic.name.clone(),
            partition: 0,
            min_dirty_ratio: config
                .topic_value(topic, "min.cleanable.dirty.ratio")
                .0
                .parse()
                .unwrap_or(0.5),
            min_lag_ms: number("min.compaction.lag.ms").unwrap_or(0),
            max_lag_ms: number("max.compaction.lag.ms").unwrap_or(i64::MAX),
            delete_retention_ms: number("delete.retention.ms").unwrap_or(86_400_000),
            segment_ms: number("segment.ms").unwrap_or(config.log.segment_ms),
            compact_only: topic.cleanup().compact_only(),
        };
        hosted(config, topic, &policy, &mut policies);
    }
    policies
}

fn hosted(
    config: &Config,
    topic: &TopicMeta,
    policy: &Policy,
    out: &mut BTreeMap<GroupId, Policy>,
) {
    for (index, partition) in topic.partitions.iter().enumerate() {
        if partition.replicas.contains(&config.node()) {
            let policy = Policy {
                partition: index,
                ..policy.clone()
            };
            out.insert(partition.group, policy);
        }
    }
}

/// Whether a cleaned batch of the log holds tombstones whose delete horizon has passed.
fn tombstones_due(stats: &CleanStats, now_ms: i64) -> bool {
    stats
        .delete_horizon_ms
        .is_some_and(|horizon| now_ms >= horizon)
}

/// Which partition to clean, of those `stats` describe: one past `max.compaction.lag.ms`, or
/// with tombstones past their delete horizon, first; else the one with the largest dirty
/// ratio at or past its topic's minimum.
fn choose(
    policies: &BTreeMap<GroupId, Policy>,
    stats: &BTreeMap<GroupId, CleanStats>,
    now_ms: i64,
) -> Option<GroupId> {
    let mut best: Option<(bool, f64, GroupId)> = None;
    for (group, stats) in stats {
        let policy = &policies[group];
        if stats.closed_bytes == 0 {
            continue;
        }
        let ratio = stats.dirty_bytes as f64 / stats.closed_bytes.max(1) as f64;
        let overdue = stats.dirty_bytes > 0
            && stats
                .dirty_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) > policy.max_lag_ms);
        // KIP-534: tombstones past their delete horizon are due to go, dirty or not.
        let due = overdue || tombstones_due(stats, now_ms);
        if !due && (stats.dirty_bytes == 0 || ratio < policy.min_dirty_ratio) {
            continue;
        }
        if best.is_none_or(|(d, r, _)| (due, ratio) > (d, r)) {
            best = Some((due, ratio, *group));
        }
    }
    best.map(|(_, _, group)| group)
}

/// One look, and a pass over the partition it picks; `Some(true)` if it cleaned one,
/// `None` when the node is stopping.
async fn round(
    config: &Config,
    core: &CoreHandle,
    writer: &Writer,
    clock: &Clock,
    map: &mut Option<OffsetMap>,
    shutdown: &mut watch::Receiver<bool>,
    logger: &Logger,
) -> Option<bool> {
    let policies = policies(config, core);
    // Below the disk reserve a pass, which writes a segment's copy before it frees anything,
    // could fill the disk, and a failed write stops the node: it waits for room.
    if policies.is_empty() || writer.disk_low() {
        return Some(false);
    }
    let now_ms = clock.now().wall_ms;
    // Roll old active segments of compact-only topics (retention asks nothing else of them).
    let rolls: BTreeMap<GroupId, RetentionPolicy> = policies
        .iter()
        .filter(|(_, p)| p.compact_only)
        .map(|(group, p)| {
            let roll = RetentionPolicy {
                retention_ms: -1,
                retention_bytes: -1,
                segment_ms: p.segment_ms,
                log_end: None,
            };
            (*group, roll)
        })
        .collect();
    writer.retention(rolls, now_ms).await?;
    let lags = policies.iter().map(|(g, p)| (*g, p.min_lag_ms)).collect();
    let stats = writer.clean_stats(lags, now_ms).await?;
    let Some(group) = choose(&policies, &stats, now_ms) else {
        return Some(false);
    };
    let status = core.status(vec![group]).await?.pop().flatten();
    let Some(status) = status else {
        return Some(false); // no longer hosted here
    };
    let policy = &policies[&group];
    let options = CleanOptions {
        upper: status.last_stable_offset.min(stats[&group].lag_upper),
        now_ms,
        delete_retention_ms: policy.delete_retention_ms,
        decompressed_max: config.log.decompressed_batch_bytes_max as usize,
        txns_max: txns_max(config.log.cleaner_dedupe_buffer_bytes as usize),
    };
    if options.upper <= stats[&group].clean_offset && !tombstones_due(&stats[&group], now_ms) {
        // Its dirty part is all above the last stable offset or the lag horizon for now.
        debug!(logger, "log cleaner: nothing cleanable below the last stable offset and the \
            min.compaction.lag.ms horizon"; "topic" => &policy.topic, "partition" => policy.partition);
        return Some(false);
    }
    let memory = map
        .take()
        .unwrap_or_else(|| OffsetMap::new(config.log.cleaner_dedupe_buffer_bytes as usize));
    let mut pass = Box::new(CleanPass::new(group, options, memory));
    let rate = config.log.cleaner_io_bytes_per_second.max(1) as f64;
    let report = loop {
        let (back, step) = writer.clean_step(pass).await?;
        pass = back;
        if let Some(through) = step.rewritten_through {
            core.evict_cleaned(group, through).await?;
        }
        if let Some(report) = step.finished {
            break report;
        }
        // Throttle: the step's bytes at the configured rate.
        let pause = Duration::from_secs_f64(step.bytes as f64 / rate);
        tokio::select! {
            biased;
            _ = shutdown.changed() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
    };
    *map = Some(pass.into_map());
    match report {
        Some(report) if report.segments_rewritten > 0 => {
            info!(logger, "log cleaner cleaned a partition";
                "topic" => &policy.topic, "partition" => policy.partition,
                "clean_to" => report.clean_to.0, "segments" => report.segments_rewritten,
                "bytes_before" => report.bytes_before, "bytes_after" => report.bytes_after,
                "records_dropped" => report.records_dropped);
            if report.batches_undecodable > 0 {
                warn!(logger, "log cleaner kept batches it could not decode within \
                    log.decompressed_batch_bytes_max";
                    "topic" => &policy.topic, "partition" => policy.partition,
                    "batches" => report.batches_undecodable);
            }
            Some(true)
        }
        // The checkpoint moved (or nothing was cleanable): nothing shrank, look again later.
        _ => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_dirty_ratio: f64, max_lag_ms: i64) -> Policy {
        Policy {
            topic: "t".into(),
            partition: 0,
            min_dirty_ratio,
            min_lag_ms: 0,
            max_lag_ms,
            delete_retention_ms: 0,
            segment_ms: 1,
            compact_only: true,
        }
    }

    fn stats(closed_bytes: u64, dirty_bytes: u64, dirty_since_ms: i64) -> CleanStats {
        CleanStats {
            clean_offset: Offset(0),
            closed_bytes,
            dirty_bytes,
            dirty_since_ms: Some(dirty_since_ms),
            lag_upper: Offset(i64::MAX),
            delete_horizon_ms: None,
        }
    }

    /// The dirtiest partition past its ratio is cleaned first, one overdue by
    /// `max.compaction.lag.ms` before any, and one under its ratio not at all.
    #[test]
    fn the_dirtiest_or_the_overdue_partition_is_chosen() {
        let policies: BTreeMap<GroupId, Policy> = [
            (GroupId(1), policy(0.5, i64::MAX)),
            (GroupId(2), policy(0.5, i64::MAX)),
            (GroupId(3), policy(0.9, 1_000)),
        ]
        .into();
        let mut all: BTreeMap<GroupId, CleanStats> = [
            (GroupId(1), stats(100, 60, 0)),
            (GroupId(2), stats(100, 80, 0)),
            (GroupId(3), stats(100, 10, 5_000)),
        ]
        .into();
        assert_eq!(choose(&policies, &all, 5_500), Some(GroupId(2)));
        assert_eq!(choose(&policies, &all, 7_000), Some(GroupId(3)), "overdue");
        all.get_mut(&GroupId(2)).expect("held").dirty_bytes = 40;
        all.get_mut(&GroupId(1)).expect("held").dirty_bytes = 40;
        assert_eq!(choose(&policies, &all, 5_500), None, "under every ratio");
        // Tombstones past their horizon make a clean log due, dirty or not.
        let clean = all.get_mut(&GroupId(1)).expect("held");
        clean.dirty_bytes = 0;
        clean.delete_horizon_ms = Some(6_000);
        assert_eq!(choose(&policies, &all, 5_500), None, "before the horizon");
        assert_eq!(
            choose(&policies, &all, 6_000),
            Some(GroupId(1)),
            "at the horizon"
        );
    }
}
