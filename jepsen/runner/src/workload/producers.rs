//! A producer: sends globally unique values with keys until told to stop, and records each
//! send (invoke, then ok with its partition and offset, fail, or info) in the history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oxbow_client::error::codes;
use oxbow_client::{Acks, Error, Producer, ProducerConfig, ProducerRecord, SendError};
use oxbow_jepsen::history::{queue_payload, Delivery, History, Outcome, SendOp};

use super::{client, Clock, Stats};
use crate::rng::Stream;

/// What one producer needs.
pub struct ProducerTask {
    /// Its index (the history's process).
    pub index: usize,
    /// Idempotent or at least once (both acks=all).
    pub kind: Delivery,
    /// The cluster.
    pub bootstrap: String,
    /// The topic.
    pub topic: String,
    /// Keys to draw from.
    pub keys: u64,
    /// Mean milliseconds between its sends.
    pub interval_ms: u64,
    /// The run's seed.
    pub seed: u64,
    /// The producer's delivery timeout.
    pub delivery_timeout: Duration,
}

/// How a failed send is recorded: definite errors are fail, anything that may have been
/// written is info. NOT_LEADER_OR_FOLLOWER after a send is taken as indeterminate, as
/// Jepsen's Kafka client does (KAFKA-13574), whatever the client decided.
fn outcome_of(error: SendError) -> Outcome {
    match error {
        SendError::MaybeWritten(e) => Outcome::Info(e.to_string()),
        SendError::NotWritten(Error::Broker { code, message })
            if code == codes::NOT_LEADER_OR_FOLLOWER =>
        {
            Outcome::Info(Error::Broker { code, message }.to_string())
        }
        SendError::NotWritten(e) => Outcome::Fail(e.to_string()),
    }
}

/// Sends until `stop`, then waits for every send to resolve (at most the delivery timeout and
/// a margin: a send still pending then stays pending, which the checker reports).
pub async fn produce(
    task: ProducerTask,
    history: Arc<Mutex<History>>,
    stats: Arc<Stats>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let index = task.index;
    let config = ProducerConfig {
        acks: Acks::All,
        idempotent: task.kind == Delivery::Idempotent,
        linger: Duration::from_millis(2),
        delivery_timeout: task.delivery_timeout,
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client(&task.bootstrap)?, config)
        .map_err(|e| format!("producer {index}: {e}"))?;
    let mut rng = Stream::new(task.seed, &format!("producer-{index}"));
    let mut deliveries = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let value = ((index as u64) << 40) | sequence;
        sequence += 1;
        let key = rng.below(task.keys);
        history.lock().expect("not poisoned").sends.insert(
            value,
            SendOp {
                producer: index,
                kind: task.kind,
                key,
                value,
                invoked_ms: clock.ms(),
                outcome: Outcome::Pending,
                completed_ms: 0,
                op: None,
            },
        );
        stats.sent.fetch_add(1, Ordering::Relaxed);
        let record = ProducerRecord {
            topic: task.topic.clone(),
            partition: None,
            key: Some(Bytes::from(format!("key-{key}"))),
            value: Some(Bytes::from(queue_payload(value))),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let queued = producer.send(record).await;
        let history = history.clone();
        let stats = stats.clone();
        deliveries.spawn(async move {
            let outcome = match queued {
                Err(e) => Outcome::Fail(e.to_string()),
                Ok(delivery) => match delivery.await {
                    Ok(delivered) => Outcome::Ok {
                        partition: delivered.partition,
                        offset: delivered.offset,
                    },
                    Err(e) => outcome_of(e),
                },
            };
            let counter = match outcome {
                Outcome::Ok { .. } => &stats.ok,
                Outcome::Fail(_) => &stats.fail,
                _ => &stats.info,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut history = history.lock().expect("not poisoned");
            let send = history.sends.get_mut(&value).expect("invoked");
            send.outcome = outcome;
            send.completed_ms = clock.ms();
        });
        let interval = task.interval_ms.max(1);
        tokio::time::sleep(Duration::from_millis(
            rng.between(interval / 2, interval + interval / 2),
        ))
        .await;
    }
    let flushed = tokio::time::timeout(task.delivery_timeout + Duration::from_secs(30), async {
        producer.flush().await;
        while let Some(result) = deliveries.join_next().await {
            if let Err(e) = result {
                return Err(format!("producer {index}: a delivery task failed: {e}"));
            }
        }
        Ok(())
    })
    .await;
    match flushed {
        Ok(result) => result,
        Err(_) => {
            println!(
                "producer {index}: sends still unresolved {:?} after the faults stopped (left pending)",
                task.delivery_timeout + Duration::from_secs(30)
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definite_errors_are_failures() {
        let not_leader = Error::Broker {
            code: codes::NOT_LEADER_OR_FOLLOWER,
            message: None,
        };
        assert!(matches!(
            outcome_of(SendError::NotWritten(not_leader)),
            Outcome::Info(_)
        ));
        assert!(matches!(
            outcome_of(SendError::MaybeWritten(Error::Timeout)),
            Outcome::Info(_)
        ));
        let refused = Error::Broker {
            code: 10, // MESSAGE_TOO_LARGE
            message: None,
        };
        assert!(matches!(
            outcome_of(SendError::NotWritten(refused)),
            Outcome::Fail(_)
        ));
    }
}
