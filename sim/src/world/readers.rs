//! The readers on the client host: each polls every partition from the start while the
//! producers run and faults hit, and records every poll in the history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_client::{Client, Consumer, ConsumerConfig};
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
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) if !records.is_empty() => {
                let records: Vec<(i32, i64, u64)> = records
                    .iter()
                    .map(|r| (r.partition, r.offset, value_of(r)))
                    .collect();
                let at_ms = sim_ms();
                trace.line(&format!(
                    "{at_ms:>7} client r{reader} polled {} records, first {:?}",
                    records.len(),
                    records.first()
                ));
                history.lock().expect("not poisoned").polls.push(Poll {
                    reader,
                    at_ms,
                    records,
                });
            }
            Ok(_) => {}
            Err(e) => {
                trace.line(&format!("{:>7} client r{reader} poll: {e}", sim_ms()));
                sleep_ms(100).await;
            }
        }
    }
}
