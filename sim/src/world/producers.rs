//! The producers on the client host: each sends records of its delivery kind until the safety
//! phase ends (on a compacted topic about half the keys are retired on the way, each deleted
//! by the first producer), and records every send and its outcome in the history.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oxbow_client::{Acks, Client, Producer, ProducerConfig, ProducerRecord, SendError};
use oxbow_jepsen::history::{
    id_header_value, queue_payload, Delivery, History, Outcome, SendOp, ID_HEADER,
};

use super::{sim_ms, sleep_ms, Trace, WorldOptions, TOPIC};
use crate::rng::Stream;

pub(super) async fn produce(
    index: usize,
    kind: Delivery,
    options: WorldOptions,
    client: Client,
    history: Arc<Mutex<History>>,
    trace: Trace,
) -> Result<(), String> {
    let config = ProducerConfig {
        acks: if kind == Delivery::LeaderOnly {
            Acks::Leader
        } else {
            Acks::All
        },
        idempotent: kind == Delivery::Idempotent,
        linger: Duration::from_millis(2),
        delivery_timeout: Duration::from_secs(20),
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config).map_err(|e| e.to_string())?;
    let mut rng = Stream::new(options.seed, &format!("world-producer-{index}"));
    let sender = Sender {
        index,
        kind,
        producer: &producer,
        history: &history,
        trace: &trace,
    };
    let mut deliveries = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    // On a compacted topic, about half the keys are retired during the run: from a time of
    // its own, a retired key is written no more, and the first producer deletes it, so its
    // tombstone stays its latest while the other keys' writes keep the log dirty and cleaned.
    let retire_at = retirements(&options);
    let mut retired = vec![false; retire_at.len()];
    while sim_ms() < options.safety_ms {
        if index == 0 {
            for (key, at) in retire_at.iter().enumerate() {
                if at.is_some_and(|at| sim_ms() >= at) && !retired[key] {
                    retired[key] = true;
                    sender.trace.line(&format!(
                        "{:>7} client p{index} retires key {key}",
                        sim_ms()
                    ));
                    let value = ((index as u64) << 40) | sequence;
                    sequence += 1;
                    sender.send(value, key as u64, true, &mut deliveries).await;
                }
            }
        }
        let value = ((index as u64) << 40) | sequence;
        sequence += 1;
        let mut key = rng.below(options.keys);
        // A retired key's sends go to the next key that is not.
        while retire_at
            .get(key as usize)
            .copied()
            .flatten()
            .is_some_and(|at| sim_ms() >= at)
        {
            key = (key + 1) % options.keys;
        }
        // On a compacted topic, some sends delete their key: a null value, and the send's id
        // in a header (drawn only there, so other seeds' streams stay as they were).
        let tombstone = options
            .compaction
            .is_some_and(|c| rng.chance(c.tombstone_per_million));
        sender.send(value, key, tombstone, &mut deliveries).await;
        sleep_ms(rng.between(options.send_every_ms.0, options.send_every_ms.1)).await;
    }
    producer.flush().await;
    while let Some(result) = deliveries.join_next().await {
        result.map_err(|e| format!("a delivery task failed: {e}"))?;
    }
    Ok(())
}

/// When each key is retired (`None`: never): on a compacted topic, about half the keys, at
/// times of the fault phase drawn from a stream of their own (the same for every producer),
/// but only a key whose partition keeps another key written, so that its tombstone's segment
/// is cleaned while the tombstone is young.
fn retirements(options: &WorldOptions) -> Vec<Option<u64>> {
    if options.compaction.is_none() {
        return Vec::new();
    }
    let partition_of = |key: u64| {
        let bytes = format!("key-{key}");
        (oxbow_client::producer::murmur2(bytes.as_bytes()) & 0x7fff_ffff) % options.partitions
    };
    let mut live: std::collections::BTreeMap<i32, u64> = std::collections::BTreeMap::new();
    for key in 0..options.keys {
        *live.entry(partition_of(key)).or_default() += 1;
    }
    let mut rng = Stream::new(options.seed, "world-retired-keys");
    (0..options.keys)
        .map(|key| {
            let at = rng.between(5_000, options.safety_ms.saturating_sub(5_000).max(5_001));
            let others = live.get_mut(&partition_of(key)).expect("counted");
            (rng.chance(500_000) && *others >= 2).then(|| {
                *others -= 1;
                at
            })
        })
        .collect()
}

/// One producer's sends: each is recorded in the history, traced, and its outcome recorded
/// by a task of `deliveries` when it resolves.
struct Sender<'a> {
    index: usize,
    kind: Delivery,
    producer: &'a Producer,
    history: &'a Arc<Mutex<History>>,
    trace: &'a Trace,
}

impl Sender<'_> {
    /// Sends `value` under `key` (a tombstone carries the value in its id header).
    async fn send(
        &self,
        value: u64,
        key: u64,
        tombstone: bool,
        deliveries: &mut tokio::task::JoinSet<()>,
    ) {
        let index = self.index;
        let invoked_ms = sim_ms();
        {
            let mut locked = self.history.lock().expect("not poisoned");
            if tombstone {
                locked.tombstones.insert(value);
            }
            locked.sends.insert(
                value,
                SendOp {
                    producer: index,
                    kind: self.kind,
                    key,
                    value,
                    invoked_ms,
                    outcome: Outcome::Pending,
                    completed_ms: 0,
                    op: None,
                },
            );
        }
        let (payload, headers) = if tombstone {
            self.trace.line(&format!(
                "{invoked_ms:>7} client p{index} send {value} key {key} (tombstone)"
            ));
            let id = Bytes::copy_from_slice(&id_header_value(value));
            (None, vec![(ID_HEADER.to_string(), Some(id))])
        } else {
            self.trace.line(&format!(
                "{invoked_ms:>7} client p{index} send {value} key {key}"
            ));
            (Some(Bytes::from(queue_payload(value))), Vec::new())
        };
        let record = ProducerRecord {
            topic: TOPIC.into(),
            partition: None,
            key: Some(Bytes::from(format!("key-{key}"))),
            value: payload,
            headers,
            timestamp_ms: None,
        };
        let queued = self.producer.send(record).await;
        let history = self.history.clone();
        let trace = self.trace.clone();
        deliveries.spawn(async move {
            let outcome = match queued {
                Err(e) => Outcome::Fail(e.to_string()),
                Ok(delivery) => match delivery.await {
                    Ok(delivered) => Outcome::Ok {
                        partition: delivered.partition,
                        offset: delivered.offset,
                    },
                    Err(SendError::NotWritten(e)) => Outcome::Fail(e.to_string()),
                    Err(SendError::MaybeWritten(e)) => Outcome::Info(e.to_string()),
                },
            };
            let now = sim_ms();
            trace.line(&format!("{now:>7} client p{index} {value} -> {outcome:?}"));
            let mut history = history.lock().expect("not poisoned");
            let send = history.sends.get_mut(&value).expect("invoked");
            send.outcome = outcome;
            send.completed_ms = now;
        });
    }
}
