//! End-to-end: transactional producers' first step against real `oxbow node` processes.
//! FindCoordinator with key type 1 creates `__transaction_state` and names the leader of the
//! transactional id's partition; InitProducerId with a transactional id bumps the epoch on
//! every call (fencing the previous instance), answers a KIP-360 retry and fences an unknown
//! epoch, and keeps all of it across a SIGKILL of the coordinator; DescribeTransactions and
//! ListTransactions show it; librdkafka's `init_transactions()` succeeds. librdkafka's
//! transactions commit and abort, read_committed consumers read only what committed, and a
//! newer instance fences the older. DescribeProducers shows a transaction open in a partition,
//! and no longer once it ends.

use std::time::{Duration, Instant};

use kafka_protocol::messages::describe_producers_request::TopicRequest as DescribeProducersTopic;
use kafka_protocol::messages::describe_producers_response::PartitionResponse as DescribedPartition;
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

mod common;
use common::{call, Cluster, PARTITIONS, TOPIC};

const PRODUCER_FENCED: i16 = 90;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;

/// The node index (0-based) whose Kafka port coordinates `transactional_id`, asking every
/// running node until one names a running coordinator (the first asks create the topic).
fn coordinator(cluster: &Cluster, transactional_id: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = |i: &usize| cluster.nodes[*i].is_some();
    loop {
        for i in (0..cluster.kafka.len()).filter(running) {
            let port = cluster.kafka[i];
            let mut request = FindCoordinatorRequest::default();
            request.key_type = 1;
            request.coordinator_keys = vec![StrBytes::from_string(transactional_id.into())];
            let response: FindCoordinatorResponse =
                call(port, ApiKey::FindCoordinator, 4, &request);
            let found = &response.coordinators[0];
            if found.error_code == 0 {
                let port = found.port as u16;
                let node = cluster
                    .kafka
                    .iter()
                    .position(|p| *p == port)
                    .expect("a node of the cluster");
                if running(&node) {
                    return node;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no transaction coordinator in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// InitProducerId v`version` for `transactional_id`, with the producer id and epoch an
/// instance had (KIP-360) or -1.
fn init(
    port: u16,
    version: i16,
    transactional_id: &str,
    timeout_ms: i32,
    had: (i64, i16),
) -> InitProducerIdResponse {
    let mut request = InitProducerIdRequest::default();
    request.transactional_id = Some(TransactionalId(StrBytes::from_string(
        transactional_id.into(),
    )));
    request.transaction_timeout_ms = timeout_ms;
    request.producer_id = ProducerId(had.0);
    request.producer_epoch = had.1;
    call(port, ApiKey::InitProducerId, version, &request)
}

/// InitProducerId until the coordinator answers something other than "look again" (it may
/// be moving), within 30 s.
fn init_settled(
    cluster: &Cluster,
    version: i16,
    transactional_id: &str,
    had: (i64, i16),
) -> InitProducerIdResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let node = coordinator(cluster, transactional_id);
        let response = init(cluster.kafka[node], version, transactional_id, 60_000, had);
        // NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS,
        // CONCURRENT_TRANSACTIONS: retriable.
        if ![16, 15, 14, 51].contains(&response.error_code) {
            return response;
        }
        assert!(Instant::now() < deadline, "still {response:?} after 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn init_producer_id_bumps_the_epoch_fences_and_survives_the_coordinators_crash() {
    let mut cluster = Cluster::start();

    // A new transactional id: a producer id of the coordinator's own range, epoch 0.
    let first = init_settled(&cluster, 4, "t-1", (-1, -1));
    assert_eq!(first.error_code, 0, "{first:?}");
    assert_eq!(first.producer_epoch, 0);
    let id = first.producer_id.0;
    assert!(
        id >= 1 << 62,
        "{id} is of a transaction coordinator's range"
    );

    // A new instance: the same producer id, the next epoch.
    let second = init_settled(&cluster, 4, "t-1", (-1, -1));
    assert_eq!((second.error_code, second.producer_id.0), (0, id));
    assert_eq!(second.producer_epoch, 1);

    // KIP-360: the instance at epoch 1 asks again: epoch 2. Its retry (with epoch 1) gets
    // the same answer; an epoch the coordinator never handed out is fenced.
    let third = init_settled(&cluster, 4, "t-1", (id, 1));
    assert_eq!((third.error_code, third.producer_epoch), (0, 2));
    let retry = init_settled(&cluster, 4, "t-1", (id, 1));
    assert_eq!((retry.error_code, retry.producer_epoch), (0, 2));
    let fenced = init_settled(&cluster, 4, "t-1", (id, 7));
    assert_eq!(fenced.error_code, PRODUCER_FENCED);
    let fenced_v3 = init_settled(&cluster, 3, "t-1", (id, 7));
    assert_eq!(fenced_v3.error_code, INVALID_PRODUCER_EPOCH);

    // A timeout over `[transactions] max_timeout_ms` (15 minutes).
    let node = coordinator(&cluster, "t-1");
    let too_long = init(cluster.kafka[node], 4, "t-1", 900_001, (-1, -1));
    assert_eq!(too_long.error_code, INVALID_TRANSACTION_TIMEOUT);

    // DescribeTransactions on the coordinator; ListTransactions across the nodes.
    let describe = |port: u16, transactional_id: &'static str| {
        let mut request = DescribeTransactionsRequest::default();
        request.transactional_ids =
            vec![TransactionalId(StrBytes::from_static_str(transactional_id))];
        let mut response: DescribeTransactionsResponse =
            call(port, ApiKey::DescribeTransactions, 0, &request);
        response.transaction_states.remove(0)
    };
    let t1 = describe(cluster.kafka[node], "t-1");
    assert_eq!(t1.error_code, 0, "{t1:?}");
    assert_eq!(t1.transaction_state.as_str(), "Empty");
    assert_eq!((t1.producer_id.0, t1.producer_epoch), (id, 2));
    assert_eq!(t1.transaction_timeout_ms, 60_000);
    let elsewhere = (node + 1) % 3;
    let not_here = describe(cluster.kafka[elsewhere], "t-1");
    let others = coordinator(&cluster, "never-initialised");
    let never = describe(cluster.kafka[others], "never-initialised");
    // TRANSACTIONAL_ID_NOT_FOUND on its coordinator; NOT_COORDINATOR on another node (unless
    // the leadership moved there meanwhile).
    assert_eq!(never.error_code, 105, "{never:?}");
    assert!([16, 0].contains(&not_here.error_code), "{not_here:?}");
    let mut listed = Vec::new();
    for port in cluster.kafka.iter().copied() {
        let mut request = ListTransactionsRequest::default();
        request.state_filters = vec![StrBytes::from_static_str("Empty")];
        let response: ListTransactionsResponse = call(port, ApiKey::ListTransactions, 1, &request);
        assert_eq!(response.error_code, 0);
        listed.extend(
            response
                .transaction_states
                .iter()
                .map(|t| (t.transactional_id.0.to_string(), t.producer_id.0)),
        );
        let mut unknown = ListTransactionsRequest::default();
        unknown.state_filters = vec![StrBytes::from_static_str("Nonsense")];
        let response: ListTransactionsResponse = call(port, ApiKey::ListTransactions, 0, &unknown);
        assert_eq!(response.unknown_state_filters.len(), 1);
        assert!(response.transaction_states.is_empty());
    }
    assert_eq!(listed, vec![("t-1".to_string(), id)]);

    // The coordinator is SIGKILLed: another node takes over with the stored epoch.
    cluster.kill9(node);
    let after = init_settled(&cluster, 4, "t-1", (-1, -1));
    assert_eq!((after.error_code, after.producer_id.0), (0, id));
    assert_eq!(after.producer_epoch, 3, "the epoch after the crash");
    cluster.start_node(node);

    // librdkafka's transactional producer gets through init_transactions().
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("transactional.id", "rdkafka-1")
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    // And so does a second instance of it.
    let again: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("transactional.id", "rdkafka-1")
        .create()
        .expect("producer");
    again
        .init_transactions(Duration::from_secs(30))
        .expect("the second instance's init_transactions");
    let stored = init_settled(&cluster, 4, "rdkafka-1", (-1, -1));
    assert_eq!(stored.producer_epoch, 2, "two instances came before");
    cluster.wait_for_leaders();
}

/// Sends `value` to `partition` of the test topic, waiting for room in the queue.
fn send(producer: &BaseProducer, partition: i32, value: &str) {
    loop {
        let record = BaseRecord::<str, str>::to(TOPIC)
            .partition(partition)
            .key(value)
            .payload(value);
        match producer.send(record) {
            Ok(()) => return,
            Err(_) => {
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// The values an `isolation.level` consumer reads from every partition of the test topic
/// within `wait`, until `enough` of them are read.
fn read_values(cluster: &Cluster, isolation: &str, enough: usize, wait: Duration) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", format!("reader-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut values = Vec::new();
    let deadline = Instant::now() + wait;
    while values.len() < enough && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value = message.payload().expect("a value");
            values.push(String::from_utf8_lossy(value).into_owned());
        }
    }
    values.sort();
    values
}

#[test]
fn librdkafka_commits_and_aborts_and_read_committed_reads_only_what_committed() {
    let cluster = Cluster::start();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("transactional.id", "e2e-txn")
        .create()
        .expect("producer");
    let timeout = Duration::from_secs(30);
    producer
        .init_transactions(timeout)
        .expect("init_transactions");
    let mut committed = Vec::new();
    let mut all = Vec::new();
    for (round, commit) in [("first", true), ("aborted", false), ("last", true)] {
        producer.begin_transaction().expect("begin");
        for i in 0..12 {
            let value = format!("{round}-{i:02}");
            send(&producer, i % PARTITIONS, &value);
            all.push(value.clone());
            if commit {
                committed.push(value);
            }
        }
        if commit {
            producer.commit_transaction(timeout).expect("commit");
        } else {
            // The records reach the partitions before the abort.
            producer.flush(timeout).expect("flush");
            producer.abort_transaction(timeout).expect("abort");
        }
    }
    committed.sort();
    all.sort();
    // read_committed: only the committed transactions' records, each once (it waits for the
    // markers, which the coordinator writes after the commit's answer).
    let read = read_values(&cluster, "read_committed", committed.len(), timeout);
    assert_eq!(read, committed);
    // Nothing more arrives: the aborted records stay invisible.
    let again = read_values(
        &cluster,
        "read_committed",
        usize::MAX,
        Duration::from_secs(3),
    );
    assert_eq!(again, committed);
    // read_uncommitted reads every record, the aborted ones too.
    let read = read_values(&cluster, "read_uncommitted", all.len(), timeout);
    assert_eq!(read, all);

    // DescribeProducers: the producer's transaction open in partition 0 shows with its first
    // offset, the high watermark before it, and is gone once aborted.
    let before = wait_until_described(&cluster, 0, |p| {
        p.active_producers.len() == 1 && p.active_producers[0].current_txn_start_offset == -1
    });
    let watermarks: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .create()
        .expect("consumer");
    let (_, high_watermark) = watermarks
        .fetch_watermarks(TOPIC, 0, timeout)
        .expect("watermarks");
    let sent_after_ms = unix_ms();
    producer.begin_transaction().expect("begin");
    send(&producer, 0, "open");
    producer.flush(timeout).expect("flush");
    let open = wait_until_described(&cluster, 0, |_| true);
    let was = &before.active_producers[0];
    assert_eq!(open.active_producers.len(), 1, "{open:?}");
    let state = &open.active_producers[0];
    assert_eq!(
        (state.producer_id, state.producer_epoch),
        (was.producer_id, was.producer_epoch),
        "the same instance"
    );
    assert_eq!(
        state.last_sequence,
        was.last_sequence + 1,
        "one more record"
    );
    assert_eq!(state.current_txn_start_offset, high_watermark, "{state:?}");
    assert_eq!(state.coordinator_epoch, -1);
    assert!(
        (sent_after_ms..=unix_ms()).contains(&state.last_timestamp),
        "the append time of the send: {state:?}"
    );
    producer.abort_transaction(timeout).expect("abort");
    let ended = wait_until_described(&cluster, 0, |p| {
        p.active_producers[0].current_txn_start_offset == -1
    });
    assert_eq!(ended.active_producers[0].producer_id, state.producer_id);

    // A second instance of the transactional id fences the first: its next transaction fails.
    let newer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("transactional.id", "e2e-txn")
        .create()
        .expect("producer");
    newer
        .init_transactions(timeout)
        .expect("the newer instance");
    producer.begin_transaction().expect("begin (local)");
    send(&producer, 0, "fenced");
    let error = producer
        .commit_transaction(timeout)
        .expect_err("the fenced instance cannot commit");
    assert!(
        error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fenced)
            || error.to_string().to_lowercase().contains("fenced"),
        "{error}"
    );
}

/// Now, in Unix milliseconds (the nodes stamp appends with their wall clock).
fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(now.expect("after 1970").as_millis()).expect("in range")
}

/// DescribeProducers v0 of one partition of the test topic, from its leader, until `done`
/// holds of the answer (within 30 s), after checking that a follower refuses it
/// (NOT_LEADER_OR_FOLLOWER) and that an unknown partition is UNKNOWN_TOPIC_OR_PARTITION.
fn wait_until_described(
    cluster: &Cluster,
    partition: i32,
    done: impl Fn(&DescribedPartition) -> bool,
) -> DescribedPartition {
    let ask = |node: usize, partition: i32| {
        let mut topic = DescribeProducersTopic::default();
        topic.name = TopicName(StrBytes::from_static_str(TOPIC));
        topic.partition_indexes = vec![partition];
        let mut request = DescribeProducersRequest::default();
        request.topics = vec![topic];
        let response: DescribeProducersResponse =
            call(cluster.kafka[node], ApiKey::DescribeProducers, 0, &request);
        response.topics[0].partitions[0].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leaders().get(&partition).copied();
        let leader = leader.and_then(|id| cluster.ids.iter().position(|i| *i as i32 == id));
        if let Some(leader) = leader {
            let answer = ask(leader, partition);
            if answer.error_code == 0 && done(&answer) {
                let follower = (leader + 1) % cluster.kafka.len();
                assert_eq!(ask(follower, partition).error_code, 6, "a follower refuses");
                assert_eq!(ask(leader, PARTITIONS).error_code, 3, "no such partition");
                return answer;
            }
        }
        assert!(
            Instant::now() < deadline,
            "DescribeProducers not settled in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The values a read_committed (or not) `oxbow-client` consumer reads from every partition of
/// the test topic within `wait`, until `enough` of them are read.
async fn client_read(
    client: &oxbow_client::Client,
    read_committed: bool,
    enough: usize,
    wait: Duration,
) -> Vec<String> {
    let config = oxbow_client::ConsumerConfig {
        read_committed,
        ..oxbow_client::ConsumerConfig::default()
    };
    let mut consumer = oxbow_client::Consumer::new(client.clone(), config);
    let assigned: Vec<(&str, i32)> = (0..PARTITIONS).map(|p| (TOPIC, p)).collect();
    consumer.assign(&assigned);
    let mut values = Vec::new();
    let deadline = Instant::now() + wait;
    while values.len() < enough && Instant::now() < deadline {
        let polled = consumer.poll(Duration::from_millis(200)).await;
        for record in polled.unwrap_or_default() {
            let value = record.value.expect("a value");
            values.push(String::from_utf8_lossy(&value).into_owned());
        }
    }
    values.sort();
    values
}

#[test]
fn the_rust_clients_transactions_survive_a_coordinator_kill_and_fence_older_instances() {
    use oxbow_client::{
        Client, ClientConfig as OxbowConfig, ProducerConfig, ProducerRecord, TransactionError,
        TransactionalProducer,
    };
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new(OxbowConfig::new(&cluster.bootstrap())).expect("client");
    let config = ProducerConfig {
        transactional_id: Some("rust-txn".into()),
        ..ProducerConfig::default()
    };
    let producer = TransactionalProducer::new(client.clone(), config.clone()).expect("producer");
    runtime
        .block_on(producer.init_transactions())
        .expect("init_transactions");
    let mut committed = Vec::new();
    let mut all = Vec::new();
    for (round, commit) in [("first", true), ("aborted", false), ("last", true)] {
        if round == "aborted" {
            // The coordinator dies between transactions; the next ones find its successor.
            let node = coordinator(&cluster, "rust-txn");
            cluster.kill9(node);
        }
        runtime.block_on(async {
            producer.begin().await.expect("begin");
            let mut deliveries = Vec::new();
            for i in 0..12 {
                let value = format!("{round}-{i:02}");
                let record = ProducerRecord::new(TOPIC, value.clone()).partition(i % PARTITIONS);
                deliveries.push(producer.send(record).await.expect("send"));
                all.push(value.clone());
                if commit {
                    committed.push(value);
                }
            }
            for delivery in deliveries {
                delivery.await.expect("written");
            }
            if commit {
                producer.commit().await.expect("commit");
            } else {
                producer.abort().await.expect("abort");
            }
        });
    }
    committed.sort();
    all.sort();
    let wait = Duration::from_secs(30);
    let read = runtime.block_on(client_read(&client, true, committed.len(), wait));
    assert_eq!(read, committed);
    let again = runtime.block_on(client_read(
        &client,
        true,
        usize::MAX,
        Duration::from_secs(3),
    ));
    assert_eq!(again, committed, "the aborted records stay invisible");
    let read = runtime.block_on(client_read(&client, false, all.len(), wait));
    assert_eq!(read, all);

    // A newer instance fences this one: its next transaction fails for good.
    let newer = TransactionalProducer::new(client.clone(), config).expect("producer");
    runtime
        .block_on(newer.init_transactions())
        .expect("the newer instance");
    let fenced = runtime.block_on(async {
        producer.begin().await?;
        let record = ProducerRecord::new(TOPIC, "fenced").partition(0);
        producer.send(record).await?;
        producer.commit().await
    });
    assert!(
        matches!(fenced, Err(TransactionError::Fatal(_))),
        "{fenced:?}"
    );
}

/// The SIGKILL of a transactional id's coordinator a third of the way through a loop, and its
/// restart two thirds of the way.
struct Chaos {
    transactional_id: &'static str,
    total: usize,
    killed: Option<usize>,
    done: bool,
}

impl Chaos {
    fn new(transactional_id: &'static str, total: usize) -> Self {
        Self {
            transactional_id,
            total,
            killed: None,
            done: false,
        }
    }

    /// `processed` of the total are done: kill or restart when due.
    fn step(&mut self, cluster: &mut Cluster, processed: usize) {
        if processed >= self.total / 3 && self.killed.is_none() && !self.done {
            let node = coordinator(cluster, self.transactional_id);
            cluster.kill9(node);
            self.killed = Some(node);
        }
        if processed >= 2 * self.total / 3 {
            self.finish(cluster);
        }
    }

    /// The killed node is running again.
    fn finish(&mut self, cluster: &mut Cluster) {
        if let Some(node) = self.killed.take() {
            cluster.start_node(node);
            self.done = true;
        }
    }
}

/// The output topic of the consume-transform-produce tests.
const OUTPUT: &str = "ctp-out";
const OUTPUT_PARTITIONS: i32 = 3;

/// librdkafka's consume-transform-produce loop, exactly once: a read_committed consumer of
/// the input (assigned, with the group's offsets), a transactional producer that writes each
/// input's output and the consumer's position in one transaction, while the transaction
/// coordinator's leader is SIGKILLed and restarted. A transaction that fails is aborted and
/// the consumer goes back to the group's committed offsets, as librdkafka's example does.
#[test]
fn librdkafka_consume_transform_produce_is_exactly_once_across_a_coordinator_kill() {
    let extra = format!(
        "[[topics]]\nname = \"{OUTPUT}\"\npartitions = {OUTPUT_PARTITIONS}\nreplication_factor = 3\n"
    );
    let mut cluster = Cluster::start_with(&extra);
    let timeout = Duration::from_secs(30);
    const INPUTS: usize = 300;
    let seed: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for i in 0..INPUTS {
        send(
            &seed,
            (i % PARTITIONS as usize) as i32,
            &format!("in-{i:03}"),
        );
    }
    seed.flush(timeout).expect("inputs written");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "ctp")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Stored)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("transactional.id", "ctp-1")
        .create()
        .expect("producer");
    producer.init_transactions(timeout).expect("init");

    let started = Instant::now();
    let mut processed = 0;
    let mut chaos = Chaos::new("ctp-1", INPUTS);
    let mut aborted = 0;
    while processed < INPUTS {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stuck at {processed}"
        );
        chaos.step(&mut cluster, processed);
        let mut batch = Vec::new();
        while batch.len() < 20 {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let value = String::from_utf8_lossy(message.payload().expect("a value"));
                    batch.push(value.into_owned());
                }
                Some(Err(error)) => panic!("consume: {error}"),
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let outcome = (|| {
            producer.begin_transaction()?;
            for (i, value) in batch.iter().enumerate() {
                let out = format!("out-{value}");
                let record = BaseRecord::<str, str>::to(OUTPUT)
                    .partition(i as i32 % OUTPUT_PARTITIONS)
                    .payload(&out);
                producer.send(record).map_err(|(e, _)| e)?;
            }
            let positions = consumer.position()?;
            let metadata = consumer.group_metadata().expect("a group");
            producer.send_offsets_to_transaction(&positions, &metadata, timeout)?;
            producer.commit_transaction(timeout)
        })();
        match outcome {
            Ok(()) => processed += batch.len(),
            Err(error) => {
                let abortable = matches!(&error, rdkafka::error::KafkaError::Transaction(e)
                    if e.txn_requires_abort() || e.is_retriable());
                assert!(abortable, "a fatal error: {error}");
                aborted += 1;
                while let Err(error) = producer.abort_transaction(timeout) {
                    assert!(
                        matches!(&error, rdkafka::error::KafkaError::Transaction(e) if e.is_retriable()),
                        "abort: {error}"
                    );
                }
                // Back to the group's committed offsets: the batch is read again.
                let committed = consumer.committed(timeout).expect("committed offsets");
                for element in committed.elements() {
                    let offset = match element.offset() {
                        Offset::Offset(o) => Offset::Offset(o),
                        _ => Offset::Beginning,
                    };
                    consumer
                        .seek(element.topic(), element.partition(), offset, timeout)
                        .expect("seek");
                }
            }
        }
    }
    chaos.finish(&mut cluster);

    // Every input's output exactly once to read_committed, and the group's offsets at the end.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "ctp-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut outputs = TopicPartitionList::new();
    for p in 0..OUTPUT_PARTITIONS {
        outputs
            .add_partition_offset(OUTPUT, p, Offset::Beginning)
            .expect("assign");
    }
    reader.assign(&outputs).expect("assign");
    let mut read = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let value = message.payload().expect("a value");
                read.push(String::from_utf8_lossy(value).into_owned());
            }
            Some(Err(error)) => panic!("read: {error}"),
            None if read.len() >= INPUTS => break,
            None => {}
        }
    }
    read.sort();
    let expected: Vec<String> = (0..INPUTS).map(|i| format!("out-in-{i:03}")).collect();
    assert_eq!(read, expected, "{aborted} transactions aborted");
    let committed = consumer.committed(timeout).expect("committed offsets");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(
        total, INPUTS as i64,
        "the group's offsets moved with the transactions"
    );
}

/// The same loop with the Rust client: a `GroupConsumer` (read_committed) and a
/// `TransactionalProducer` sending the member's positions with each transaction, while the
/// transaction coordinator's leader is SIGKILLed and restarted.
#[test]
fn the_rust_clients_consume_transform_produce_is_exactly_once_across_a_coordinator_kill() {
    use oxbow_client::{
        Client, ClientConfig as OxbowConfig, GroupConfig, GroupConsumer, Producer, ProducerConfig,
        ProducerRecord, TransactionError, TransactionalProducer,
    };
    let extra = format!(
        "[[topics]]\nname = \"{OUTPUT}\"\npartitions = {OUTPUT_PARTITIONS}\nreplication_factor = 3\n"
    );
    let mut cluster = Cluster::start_with(&extra);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    const INPUTS: usize = 300;
    let client = Client::new(OxbowConfig::new(&cluster.bootstrap())).expect("client");
    runtime.block_on(async {
        let seed = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
        let mut deliveries = Vec::new();
        for i in 0..INPUTS {
            let record = ProducerRecord::new(TOPIC, format!("in-{i:03}"))
                .partition((i % PARTITIONS as usize) as i32);
            deliveries.push(seed.send(record).await.expect("send"));
        }
        for delivery in deliveries {
            delivery.await.expect("input written");
        }
    });
    let mut config = GroupConfig::new("rust-ctp");
    config.consumer.read_committed = true;
    let mut input = GroupConsumer::new(client.clone(), config, &[TOPIC]);
    let producer = TransactionalProducer::new(
        client.clone(),
        ProducerConfig {
            transactional_id: Some("rust-ctp-1".into()),
            ..ProducerConfig::default()
        },
    )
    .expect("producer");
    runtime
        .block_on(producer.init_transactions())
        .expect("init_transactions");
    let started = Instant::now();
    let mut processed = 0;
    let mut chaos = Chaos::new("rust-ctp-1", INPUTS);
    let mut aborted = 0;
    while processed < INPUTS {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stuck at {processed}"
        );
        chaos.step(&mut cluster, processed);
        let done = runtime.block_on(async {
            let records = input.poll(Duration::from_millis(300)).await.expect("poll");
            if records.is_empty() {
                return Ok(0);
            }
            producer.begin().await?;
            let mut deliveries = Vec::new();
            for (i, record) in records.iter().enumerate() {
                let value = String::from_utf8_lossy(record.value.as_deref().expect("a value"));
                let out = ProducerRecord::new(OUTPUT, format!("out-{value}"))
                    .partition(i as i32 % OUTPUT_PARTITIONS);
                deliveries.push(producer.send(out).await?);
            }
            for delivery in deliveries {
                delivery
                    .await
                    .map_err(|e| TransactionError::Abortable(e.error().clone()))?;
            }
            producer
                .send_offsets_to_transaction(&input.positions(), &input.group_metadata())
                .await?;
            producer.commit().await?;
            Ok::<usize, TransactionError>(records.len())
        });
        match done {
            Ok(n) => processed += n,
            Err(TransactionError::Fatal(e)) => panic!("fatal: {e}"),
            Err(_) => {
                aborted += 1;
                runtime.block_on(async {
                    while let Err(error) = producer.abort().await {
                        assert!(
                            matches!(error, TransactionError::Retriable(_)),
                            "abort: {error}"
                        );
                    }
                });
                input.rewind();
            }
        }
    }
    chaos.finish(&mut cluster);
    let mut read = Vec::new();
    runtime.block_on(async {
        let config = oxbow_client::ConsumerConfig {
            read_committed: true,
            ..oxbow_client::ConsumerConfig::default()
        };
        let mut reader = oxbow_client::Consumer::new(client.clone(), config);
        let assigned: Vec<(&str, i32)> = (0..OUTPUT_PARTITIONS).map(|p| (OUTPUT, p)).collect();
        reader.assign(&assigned);
        let deadline = Instant::now() + Duration::from_secs(30);
        while read.len() < INPUTS && Instant::now() < deadline {
            for record in reader
                .poll(Duration::from_millis(200))
                .await
                .unwrap_or_default()
            {
                let value = record.value.expect("a value");
                read.push(String::from_utf8_lossy(&value).into_owned());
            }
        }
        // Nothing more arrives.
        for record in reader
            .poll(Duration::from_secs(2))
            .await
            .unwrap_or_default()
        {
            let value = record.value.expect("a value");
            read.push(String::from_utf8_lossy(&value).into_owned());
        }
    });
    read.sort();
    let expected: Vec<String> = (0..INPUTS).map(|i| format!("out-in-{i:03}")).collect();
    assert_eq!(read, expected, "{aborted} transactions aborted");
}
