//! A reader: polls every partition of the topic (assigned, from the start) while the producers
//! run and faults hit, and records every poll that returned records or reset a position.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_client::{Consumer, ConsumerConfig};
use oxbow_jepsen::history::{History, Poll};

use super::{client, value_of, Clock, Stats};

/// Polls until `stop`.
#[allow(clippy::too_many_arguments)]
pub async fn read_during_run(
    reader: usize,
    bootstrap: String,
    topic: String,
    partitions: i32,
    history: Arc<Mutex<History>>,
    stats: Arc<Stats>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut consumer = Consumer::new(client(&bootstrap)?, ConsumerConfig::default());
    let assigned: Vec<(&str, i32)> = (0..partitions).map(|p| (topic.as_str(), p)).collect();
    consumer.assign(&assigned);
    while !stop.load(Ordering::SeqCst) {
        let invoked_ms = clock.ms();
        let polled = consumer.poll(Duration::from_millis(200)).await;
        let failed = polled.is_err();
        // Positions out of range went back to the log start offset.
        let resets: Vec<(i32, i64)> = consumer
            .take_resets()
            .into_iter()
            .map(|(_, partition, from)| (partition, from))
            .collect();
        let at_ms = clock.ms();
        let records: Vec<(i32, i64, u64)> = match polled {
            Ok(records) => records
                .iter()
                .map(|r| (r.partition, r.offset, value_of(r)))
                .collect(),
            Err(_) => {
                stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
        };
        if !records.is_empty() || !resets.is_empty() {
            stats.polls.fetch_add(1, Ordering::Relaxed);
            stats
                .polled
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            history.lock().expect("not poisoned").polls.push(Poll {
                reader,
                invoked_ms: Some(invoked_ms),
                repositioned: false,
                at_ms,
                records,
                resets,
            });
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
