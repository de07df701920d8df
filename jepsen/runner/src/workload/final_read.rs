//! The final read (Jepsen's final polls): after healing, a new consumer reads every partition
//! from its start until it has passed the highest acknowledged offset of each and nothing new
//! came for a while, or until a deadline; then the run was not live (`finished` stays false,
//! which the checker reports as liveness).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxbow_client::{Consumer, ConsumerConfig};
use oxbow_jepsen::history::History;

use super::{client, value_of, Clock};

/// Reads every partition back into `history.reads`; sets `finished` when it caught up.
pub async fn final_read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    history: Arc<Mutex<History>>,
    clock: Clock,
    timeout: Duration,
) -> Result<(), String> {
    // acks=1 writes may be lost, offsets and all: only acks=all ones must be read.
    let acknowledged = history.lock().expect("not poisoned").highest_acknowledged();
    let mut consumer = Consumer::new(client(bootstrap)?, ConsumerConfig::default());
    let assigned: Vec<(&str, i32)> = (0..partitions).map(|p| (topic, p)).collect();
    consumer.assign(&assigned);
    let deadline = Instant::now() + timeout;
    let mut quiet_since = clock.ms();
    let mut last_error = None;
    loop {
        if Instant::now() > deadline {
            println!(
                "the final read did not catch up within {timeout:?} (positions {:?}, acknowledged up to {acknowledged:?}; last error: {})",
                (0..partitions)
                    .map(|p| consumer.position(topic, p))
                    .collect::<Vec<_>>(),
                last_error.as_deref().unwrap_or("none")
            );
            return Ok(());
        }
        let records = match consumer.poll(Duration::from_millis(500)).await {
            Ok(records) => records,
            Err(e) => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !records.is_empty() {
            quiet_since = clock.ms();
        }
        {
            let mut history = history.lock().expect("not poisoned");
            // A position below the log start is read again from there: the final read of a
            // partition is one dense run from its log start.
            for (_, partition, _) in consumer.take_resets() {
                history.reads.remove(&partition);
            }
            for record in &records {
                history
                    .reads
                    .entry(record.partition)
                    .or_default()
                    .push((record.offset, value_of(record)));
            }
        }
        let caught_up = acknowledged.iter().all(|(p, highest)| {
            consumer
                .position(topic, *p)
                .is_some_and(|position| position > *highest)
        });
        if caught_up && clock.ms() - quiet_since >= 2_000 {
            break;
        }
    }
    history
        .lock()
        .expect("not poisoned")
        .finish_final_read(partitions, |partition| consumer.position(topic, partition));
    Ok(())
}
