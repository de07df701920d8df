//! The readers on the client host: each polls every partition from the start while the
//! producers run and faults hit, and records every poll (and every reset to the log start
//! offset) in the history. On a compacted topic, reader 0 goes back to the log start every
//! `CompactionOptions::rewind_every_ms`, so that reads from the start meet tombstones
//! younger than `delete.retention.ms`, which must still be there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_client::{Client, Consumer, ConsumerConfig, Seek};
use oxbow_jepsen::history::{History, Poll};

use super::{client_config, sim_ms, sleep_ms, value_of, Trace, WorldOptions, TOPIC};

/// A reader polling every partition from the start while the producers run and faults hit.
pub(super) async fn read_during_run(
    reader: usize,
    options: WorldOptions,
    bootstrap: String,
    history: Arc<Mutex<History>>,
    trace: Trace,
    stop: Arc<AtomicBool>,
) {
    let Ok(client) = Client::new(client_config(bootstrap)) else {
        return;
    };
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    let partitions: Vec<(&str, i32)> = (0..options.partitions).map(|p| (TOPIC, p)).collect();
    consumer.assign(&partitions);
    let rewind_every = options
        .compaction
        .as_ref()
        .filter(|_| reader == 0)
        .map(|c| c.rewind_every_ms);
    let mut next_rewind = rewind_every.map(|every| sim_ms() + every);
    while !stop.load(Ordering::SeqCst) {
        // Back to the log start: the next poll is repositioned, and each partition's reads
        // begin at the log start (recorded as a reset to it, from where the reader was).
        let mut repositioned = false;
        let mut rewound: Vec<(i32, i64)> = Vec::new();
        if let (Some(at), Some(every)) = (next_rewind, rewind_every) {
            if sim_ms() >= at {
                for &(topic, partition) in &partitions {
                    let from = consumer.position(topic, partition).unwrap_or(-1);
                    consumer
                        .seek(topic, partition, Seek::Earliest)
                        .expect("assigned");
                    rewound.push((partition, from));
                }
                repositioned = true;
                next_rewind = Some(sim_ms() + every);
                trace.line(&format!("{:>7} client r{reader} rewinds", sim_ms()));
            }
        }
        let polled = consumer.poll(Duration::from_millis(200)).await;
        let failed = polled.is_err();
        // Positions below the log start (or past the end) went back to the log start.
        let mut resets: Vec<(i32, i64)> = consumer
            .take_resets()
            .into_iter()
            .map(|(_, partition, from)| (partition, from))
            .collect();
        let at_ms = sim_ms();
        if !resets.is_empty() {
            trace.line(&format!("{at_ms:>7} client r{reader} reset {resets:?}"));
        }
        resets.extend(rewound);
        let records: Vec<(i32, i64, u64)> = match polled {
            Ok(records) => records
                .iter()
                .map(|r| (r.partition, r.offset, value_of(r)))
                .collect(),
            Err(e) => {
                trace.line(&format!("{:>7} client r{reader} poll: {e}", sim_ms()));
                Vec::new()
            }
        };
        if !records.is_empty() {
            trace.line(&format!(
                "{at_ms:>7} client r{reader} polled {} records, first {:?}",
                records.len(),
                records.first()
            ));
        }
        if !records.is_empty() || !resets.is_empty() || repositioned {
            history.lock().expect("not poisoned").polls.push(Poll {
                reader,
                invoked_ms: None,
                at_ms,
                records,
                resets,
                repositioned,
            });
        }
        if failed {
            sleep_ms(100).await;
        }
    }
}
