//! The client against a fake cluster (`fake/`) whose brokers can be made stuck, on tokio's
//! paused clock: what a poll returns while one leader does not answer, how a producer waits
//! for a topic with no leader, and how it fails the records behind a batch that outlived the
//! delivery timeout.

mod fake;

use std::time::Duration;

use fake::{Fake, Partition, Topic};
use kafka_protocol::messages::ApiKey;
use oxbow_client::{
    Consumer, ConsumerConfig, ConsumerRecord, Error, Producer, ProducerConfig, ProducerRecord, Seek,
};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(5);

fn values(records: &[ConsumerRecord], partition: i32) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.partition == partition)
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_string())
        .collect()
}

/// A paused (stuck) leader holds back only its own partitions: a poll returns the other
/// leader's records at once, the stuck leader's fetch is not written again while it is
/// outstanding, it is abandoned after the request timeout (its connection closed and a new one
/// opened), and once the leader answers again its records come, each once.
#[tokio::test(start_paused = true)]
async fn a_stuck_leader_holds_back_only_its_own_partitions() {
    let fake = Fake::new(&[1, 2]);
    fake.set_topic(
        "t",
        Topic::Ready(vec![
            Partition {
                leader: 1,
                log: Vec::new(),
            },
            Partition {
                leader: 2,
                log: Vec::new(),
            },
        ]),
    );
    fake.append("t", 0, &["a0"]);
    fake.append("t", 1, &["b0"]);
    let mut consumer = Consumer::new(fake.client(TIMEOUT), ConsumerConfig::default());
    consumer.assign(&[("t", 0), ("t", 1)]);
    for p in [0, 1] {
        consumer.seek("t", p, Seek::Offset(0)).expect("assigned");
    }
    // Both leaders answer: both partitions' records.
    let mut read = Vec::new();
    while read.len() < 2 {
        read.extend(consumer.poll(Duration::from_secs(1)).await.expect("polls"));
    }
    assert_eq!(values(&read, 0), ["a0"]);
    assert_eq!(values(&read, 1), ["b0"]);

    // Broker 2 stops answering with a fetch of partition 1 outstanding or about to be written.
    fake.stick(2, true);
    let fetches_before = fake.requests(2, ApiKey::Fetch);
    fake.append("t", 0, &["a1"]);
    fake.append("t", 1, &["b1"]);
    let start = Instant::now();
    let records = consumer.poll(Duration::from_secs(1)).await.expect("polls");
    assert_eq!(values(&records, 0), ["a1"], "{records:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the poll waited {:?} for the stuck leader",
        start.elapsed()
    );
    // More polls within the request timeout read partition 0 and write no new fetch to broker 2.
    let mut read = Vec::new();
    for i in 0..8 {
        fake.append("t", 0, &[&format!("a{}", i + 2)]);
        let start = Instant::now();
        read.extend(
            consumer
                .poll(Duration::from_millis(400))
                .await
                .expect("polls"),
        );
        assert!(start.elapsed() <= Duration::from_millis(400));
    }
    let expected: Vec<String> = (2..10).map(|i| format!("a{i}")).collect();
    assert_eq!(values(&read, 0), expected);
    assert!(values(&read, 1).is_empty());
    let outstanding = fake.requests(2, ApiKey::Fetch);
    assert!(
        outstanding <= fetches_before + 1,
        "fetches written to the stuck broker: {} before, {outstanding} after",
        fetches_before
    );
    // Past the request timeout the fetch is abandoned, its connection closed (as Kafka's
    // consumer disconnects on a request timeout), and a new connection opened.
    let connections = fake.connections(2);
    let mut waited = Duration::ZERO;
    while fake.connections(2) == connections {
        assert!(
            waited < TIMEOUT * 2,
            "no new connection after the request timeout"
        );
        consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("polls");
        waited += Duration::from_millis(500);
    }
    // Released, broker 2 answers every fetch it read; partition 1's records come once each.
    fake.append("t", 1, &["b2"]);
    fake.stick(2, false);
    let mut read = Vec::new();
    for _ in 0..10 {
        read.extend(
            consumer
                .poll(Duration::from_millis(500))
                .await
                .expect("polls"),
        );
    }
    assert_eq!(values(&read, 1), ["b1", "b2"]);
    assert_eq!(consumer.position("t", 1), Some(3));
}

fn one_partition(leader: i32) -> Topic {
    Topic::Ready(vec![Partition {
        leader,
        log: Vec::new(),
    }])
}

/// A topic that exists but has no leader (the metadata answers LEADER_NOT_AVAILABLE, as after
/// every node was killed) is waited for up to the delivery timeout, past the request timeout.
#[tokio::test(start_paused = true)]
async fn a_send_waits_for_a_leader_up_to_the_delivery_timeout() {
    let fake = Fake::new(&[1]);
    fake.set_topic("t", Topic::Unavailable(fake::LEADER_NOT_AVAILABLE));
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(20),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(fake.client(TIMEOUT), config).expect("producer");
    let leader_comes = async {
        tokio::time::sleep(TIMEOUT + Duration::from_secs(3)).await;
        fake.set_topic("t", one_partition(1));
    };
    let start = Instant::now();
    let (queued, ()) = tokio::join!(producer.send(ProducerRecord::new("t", "v")), leader_comes);
    let delivered = queued
        .expect("queued once the topic has a leader")
        .await
        .expect("written");
    assert!(start.elapsed() >= TIMEOUT + Duration::from_secs(3));
    assert_eq!((delivered.partition, delivered.offset), (0, 0));
    assert_eq!(fake.log("t", 0), ["v"]);
}

/// A topic the broker that answers does not know yet (just created, and the creation has not
/// reached it) is asked for again until it appears, as Kafka's producer waits up to
/// `max.block.ms`, instead of failing the send as "no topic".
#[tokio::test(start_paused = true)]
async fn a_send_to_a_topic_not_yet_known_waits_for_it() {
    let fake = Fake::new(&[1]);
    let producer =
        Producer::new(fake.client(TIMEOUT), ProducerConfig::default()).expect("producer");
    let created = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        fake.set_topic("t", one_partition(1));
    };
    let start = Instant::now();
    let (queued, ()) = tokio::join!(producer.send(ProducerRecord::new("t", "v")), created);
    let delivered = queued
        .expect("queued once the topic is known")
        .await
        .expect("written");
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!((delivered.partition, delivered.offset), (0, 0));
    assert_eq!(fake.log("t", 0), ["v"]);
}

/// When the leader never comes, the send fails after the delivery timeout with the cause:
/// LEADER_NOT_AVAILABLE, not "no topic".
#[tokio::test(start_paused = true)]
async fn a_send_to_a_topic_without_a_leader_fails_with_the_cause() {
    let fake = Fake::new(&[1]);
    fake.set_topic("t", Topic::Unavailable(fake::LEADER_NOT_AVAILABLE));
    let delivery_timeout = Duration::from_secs(12);
    let config = ProducerConfig {
        delivery_timeout,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(fake.client(TIMEOUT), config).expect("producer");
    let start = Instant::now();
    let error = match producer.send(ProducerRecord::new("t", "v")).await {
        Ok(_) => panic!("queued to a topic without a leader"),
        Err(error) => error,
    };
    assert!(
        start.elapsed() >= delivery_timeout,
        "gave up after {:?}: {error}",
        start.elapsed()
    );
    assert!(
        matches!(error, Error::Broker { code, .. } if code == fake::LEADER_NOT_AVAILABLE),
        "{error}"
    );
    assert!(error.to_string().contains("no leader"), "{error}");
    // A topic the cluster does not have is asked for until max.block (it may have been just
    // created), then fails as "no topic".
    let start = Instant::now();
    let error = match producer.send(ProducerRecord::new("missing", "v")).await {
        Ok(_) => panic!("queued to a missing topic"),
        Err(error) => error,
    };
    let waited = start.elapsed();
    assert!(
        waited >= delivery_timeout.min(ProducerConfig::default().max_block)
            && waited < delivery_timeout + TIMEOUT,
        "{waited:?}"
    );
    assert!(error.to_string().contains("no topic"), "{error}");
}

/// A batch sent to a leader that never answers outlives the delivery timeout: it may be in the
/// log (MaybeWritten, the timeout's message), and the records behind it, which no request ever
/// carried, fail as not written with a message that says they were never sent. Both where they
/// wait: still open (not batched yet), and sealed into batches the in-flight window held back.
#[tokio::test(start_paused = true)]
async fn records_behind_a_timed_out_batch_fail_as_never_sent() {
    for batch_bytes in [16 * 1024, 1] {
        let fake = Fake::new(&[1]);
        fake.set_topic("t", one_partition(1));
        let config = ProducerConfig {
            delivery_timeout: Duration::from_secs(3),
            max_in_flight: 1,
            batch_bytes,
            ..ProducerConfig::default()
        };
        let producer =
            Producer::new(fake.client(Duration::from_secs(1)), config).expect("producer");
        let send =
            |value: &str| producer.send(ProducerRecord::new("t", value.to_string()).partition(0));
        // A first record takes the producer id and opens the connection.
        send("v0").await.expect("queued").await.expect("written");
        fake.stick(1, true);
        let ahead = send("v1").await.expect("queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let behind = [
            send("v2").await.expect("queued"),
            send("v3").await.expect("queued"),
        ];
        match ahead.await {
            Err(oxbow_client::SendError::MaybeWritten(Error::Timeout)) => {}
            other => panic!("batch_bytes {batch_bytes}: the batch ahead: {other:?}"),
        }
        for delivery in behind {
            match delivery.await {
                Err(oxbow_client::SendError::NotWritten(error)) => {
                    let message = error.to_string();
                    assert!(
                        message.contains("never sent"),
                        "batch_bytes {batch_bytes}: {message}"
                    );
                    assert!(
                        !message.contains("may have taken effect"),
                        "batch_bytes {batch_bytes}: {message}"
                    );
                }
                other => panic!("batch_bytes {batch_bytes}: a record behind: {other:?}"),
            }
        }
        assert_eq!(fake.log("t", 0), ["v0"]);
    }
}

/// A record whose partition has no leader for the whole delivery timeout was never sent: it
/// fails as not written, naming the last attempt's error.
#[tokio::test(start_paused = true)]
async fn a_record_no_leader_took_in_time_fails_as_never_sent() {
    let fake = Fake::new(&[1]);
    fake.set_topic("t", one_partition(-1));
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(3),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(fake.client(TIMEOUT), config).expect("producer");
    let delivery = producer
        .send(ProducerRecord::new("t", "v").partition(0))
        .await
        .expect("queued: the topic has its partition, without a leader");
    match delivery.await {
        Err(oxbow_client::SendError::NotWritten(error)) => {
            let message = error.to_string();
            assert!(message.contains("never sent"), "{message}");
            assert!(message.contains("LEADER_NOT_AVAILABLE"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// After the leader of a partition moves, `end_offset` and `beginning_offset` ask the new one:
/// the old leader's NOT_LEADER_OR_FOLLOWER refreshes the metadata and asks again, as Kafka's
/// `endOffsets` does, instead of failing on every call after the move.
#[tokio::test(start_paused = true)]
async fn offsets_follow_a_moved_leader() {
    let fake = Fake::new(&[1, 2]);
    fake.set_topic("t", one_partition(1));
    fake.append("t", 0, &["a", "b"]);
    let consumer = Consumer::new(fake.client(TIMEOUT), ConsumerConfig::default());
    assert_eq!(consumer.end_offset("t", 0).await.expect("end"), 2);
    fake.set_topic("t", one_partition(2));
    fake.append("t", 0, &["c"]);
    assert_eq!(
        consumer
            .end_offset("t", 0)
            .await
            .expect("end after the move"),
        1
    );
    assert_eq!(consumer.beginning_offset("t", 0).await.expect("start"), 0);
    assert!(fake.requests(2, ApiKey::ListOffsets) >= 2);
}

/// A broker that went away without a FIN (a power cut) leaves its connection silent: the
/// request timeout closes that connection, as Kafka's clients do, and the send goes through a
/// new one, instead of every retry waiting on the silent connection until the delivery
/// timeout.
#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_replaced_after_a_request_timeout() {
    let fake = Fake::new(&[1]);
    fake.set_topic("t", one_partition(1));
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(fake.client(TIMEOUT), config).expect("producer");
    let first = producer
        .send(ProducerRecord::new("t", "a"))
        .await
        .expect("queued");
    first.await.expect("written");
    let before = fake.connections(1);
    fake.silence_connections(1);
    let start = Instant::now();
    let second = producer
        .send(ProducerRecord::new("t", "b"))
        .await
        .expect("queued");
    let delivered = second.await.expect("written through a new connection");
    assert_eq!(delivered.offset, 1);
    assert!(fake.connections(1) > before, "a new connection was opened");
    assert!(
        start.elapsed() < TIMEOUT * 3,
        "took {:?}: it waited on the silent connection",
        start.elapsed()
    );
    // A consumer's fetch on a silent connection is abandoned and its connection closed too.
    let mut consumer = Consumer::new(fake.client(TIMEOUT), ConsumerConfig::default());
    consumer.assign(&[("t", 0)]);
    consumer.seek("t", 0, Seek::Offset(0)).expect("assigned");
    let read = consumer.poll(Duration::from_secs(1)).await.expect("polled");
    assert_eq!(values(&read, 0), ["a", "b"]);
    fake.silence_connections(1);
    fake.append("t", 0, &["c"]);
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < TIMEOUT * 4 {
        got = consumer
            .poll(Duration::from_secs(1))
            .await
            .unwrap_or_default();
    }
    assert_eq!(values(&got, 0), ["c"]);
}
