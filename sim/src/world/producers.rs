//! The producers on the client host: each sends records of its delivery kind until the safety
//! phase ends, and records every send and its outcome in the history.

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
    let mut deliveries = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    while sim_ms() < options.safety_ms {
        let value = ((index as u64) << 40) | sequence;
        sequence += 1;
        let key = rng.below(options.keys);
        // On a compacted topic, some sends delete their key: a null value, and the send's id
        // in a header (drawn only there, so other seeds' streams stay as they were).
        let tombstone = options
            .compaction
            .is_some_and(|c| rng.chance(c.tombstone_per_million));
        let invoked_ms = sim_ms();
        {
            let mut locked = history.lock().expect("not poisoned");
            if tombstone {
                locked.tombstones.insert(value);
            }
            locked.sends.insert(
                value,
                SendOp {
                    producer: index,
                    kind,
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
            trace.line(&format!(
                "{invoked_ms:>7} client p{index} send {value} key {key} (tombstone)"
            ));
            let id = Bytes::copy_from_slice(&id_header_value(value));
            (None, vec![(ID_HEADER.to_string(), Some(id))])
        } else {
            trace.line(&format!(
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
        let queued = producer.send(record).await;
        let history = history.clone();
        let trace = trace.clone();
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
        sleep_ms(rng.between(options.send_every_ms.0, options.send_every_ms.1)).await;
    }
    producer.flush().await;
    while let Some(result) = deliveries.join_next().await {
        result.map_err(|e| format!("a delivery task failed: {e}"))?;
    }
    Ok(())
}
