//! End-to-end: a partition whose producer table is full, with raw requests and rdkafka
//! (librdkafka) against real `oxbow node` processes. New producer ids are refused with
//! POLICY_VIOLATION, which librdkafka fails at once as a permanent error and goes on from; the
//! producers the table holds keep their duplicates; expired producers make room.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

mod common;
use common::{batch, produce_raw, records, Cluster, TOPIC};

/// Kafka's POLICY_VIOLATION.
const POLICY_VIOLATION: i16 = 44;

/// Collects the outcome of each delivery.
struct Outcomes(std::sync::Mutex<Vec<Result<i64, RDKafkaErrorCode>>>);

impl ClientContext for Outcomes {}

impl ProducerContext for Outcomes {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let outcome = match result {
            Ok(message) => Ok(rdkafka::Message::offset(message)),
            Err((KafkaError::MessageProduction(code), _)) => Err(*code),
            Err((other, _)) => panic!("unexpected delivery error {other:?}"),
        };
        self.0.lock().expect("not poisoned").push(outcome);
    }
}

/// The first producer id the raw requests use. Nodes hand out `node_id << 40 | counter` and
/// this cluster's node ids are 1 to 3, so ids below `1 << 40` (node 0's) are never handed out:
/// librdkafka's id, from whichever node it asks, cannot be one of these.
const RAW_PRODUCER: i64 = 1_000;

/// A batch of one record from idempotent producer `id` (epoch 0) at `sequence`.
fn idempotent(id: i64, sequence: i32) -> bytes::Bytes {
    let mut records = records(1, 8);
    records[0].producer_id = id;
    records[0].producer_epoch = 0;
    records[0].sequence = sequence;
    batch(&records, kafka_protocol::records::Compression::None).freeze()
}

/// Sends one record to partition 0 and waits for its outcome.
fn send_one(producer: &BaseProducer<Outcomes>, value: &str) -> Result<i64, RDKafkaErrorCode> {
    let before = producer.context().0.lock().expect("not poisoned").len();
    producer
        .send(BaseRecord::<(), str>::to(TOPIC).partition(0).payload(value))
        .map_err(|(e, _)| e)
        .expect("queued");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        producer.poll(Duration::from_millis(50));
        let outcomes = producer.context().0.lock().expect("not poisoned");
        if outcomes.len() > before {
            return outcomes[before];
        }
    }
    panic!("no outcome for {value:?} within 20 s");
}

#[test]
fn a_full_producer_table_refuses_new_ids_and_librdkafka_goes_on_once_producers_expire() {
    let mut cluster =
        Cluster::start_with("[producers]\nexpiration_ms = 4000\nper_partition_max = 2\n");
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[leader as usize - 1];
    // Two producers fill partition 0's table.
    let first = produce_raw(port, idempotent(RAW_PRODUCER, 0)).expect("answered");
    assert_eq!(first.error_code, 0);
    let second = produce_raw(port, idempotent(RAW_PRODUCER + 1, 0)).expect("answered");
    assert_eq!(second.error_code, 0);
    let third = produce_raw(port, idempotent(RAW_PRODUCER + 2, 0)).expect("answered");
    assert_eq!(third.error_code, POLICY_VIOLATION, "{third:?}");

    // librdkafka's idempotent producer gets a new id: refused at once, not after its
    // delivery timeout, as a permanent error.
    let producer: BaseProducer<Outcomes> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create_with_context(Outcomes(Default::default()))
        .expect("producer");
    let started = Instant::now();
    assert_eq!(
        send_one(&producer, "refused"),
        Err(RDKafkaErrorCode::PolicyViolation)
    );
    println!(
        "librdkafka reported the refusal after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusal took {:?}",
        started.elapsed()
    );
    // The producers the table holds are untouched: a retry is still a duplicate.
    let retry = produce_raw(port, idempotent(RAW_PRODUCER, 0)).expect("answered");
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (0, first.base_offset)
    );

    // Once the two have not written for the expiration, the same librdkafka producer gets in
    // and goes on.
    std::thread::sleep(Duration::from_millis(4_500));
    let offset = send_one(&producer, "admitted").expect("admitted after the expiry");
    assert!(offset > first.base_offset, "{offset}");
    let next = send_one(&producer, "next").expect("the producer goes on");
    assert_eq!(next, offset + 1);
    producer.flush(Duration::from_secs(5)).expect("flushed");
    drop(producer);
    cluster.wait_for_leaders();
}
