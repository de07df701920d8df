//! The transactional workload on the client host (in the seeds whose options have one):
//! consume-transform-produce with Kafka transactions. A seeder writes unique inputs to an
//! input topic; a transformer (a read_committed group member and a transactional producer)
//! turns each input into copies on the output topic's partitions and commits them with the
//! group's offsets, one transaction per poll; some transactions are aborted on purpose, and
//! now and then a new instance of the transactional id fences the running one, which then
//! tries one more transaction (a zombie's, which must fail). Readers of both isolation levels
//! poll the output, a watcher fetches the group's committed offsets, and after healing every
//! output partition is read back with read_committed. All of it goes into a
//! [`TxnHistory`], which `oxbow_jepsen::txn::check` judges.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oxbow_client::{
    Admin, Client, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, NewTopic, Producer,
    ProducerConfig, ProducerRecord, TransactionError, TransactionalProducer,
};
use oxbow_jepsen::txn::{
    InputId, InputRecord, InstanceId, Isolation, OutputRecord, TxnHistory, TxnOp, TxnOutcome,
};

use super::{client_config, create_topic, sim_ms, sleep_ms, value_of, Trace, WorldOptions};
use crate::rng::Stream;

/// The input topic.
pub const INPUT: &str = "sim-in";
/// The output topic.
pub const OUTPUT: &str = "sim-out";
/// The transformer's consumer group.
const GROUP: &str = "sim-txn-group";
/// The transformer's transactional id.
const TRANSACTIONAL_ID: &str = "sim-txn";

/// The shape of a seed's transactional workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnOptions {
    /// Inputs written during the safety phase.
    pub inputs: u64,
    /// Partitions of the input topic.
    pub input_partitions: i32,
    /// Partitions of the output topic.
    pub output_partitions: i32,
    /// Outputs per input (each to its own partition when there are enough).
    pub copies: u32,
    /// Chance per transaction (parts per million) that the transformer aborts it on purpose.
    pub abort_ppm: u64,
    /// Chance per transaction (parts per million) that a new instance fences the running one.
    pub fence_ppm: u64,
}

impl TxnOptions {
    /// The transactional workload of `seed`, if it has one (half the seeds), from its own
    /// stream so that drawing it shifts no other option.
    pub fn from_seed(seed: u64) -> Option<Self> {
        let mut rng = Stream::new(seed, "world-txn");
        rng.chance(500_000).then(|| Self {
            inputs: rng.between(40, 120),
            input_partitions: rng.between(1, 3) as i32,
            output_partitions: rng.between(2, 3) as i32,
            copies: rng.between(1, 2) as u32,
            abort_ppm: rng.between(50_000, 200_000),
            fence_ppm: rng.between(30_000, 120_000),
        })
    }
}

fn payload(value: u64) -> Bytes {
    Bytes::from(value.to_be_bytes().to_vec())
}

/// The transactional workload, from creating its topics to the final read.
pub(super) async fn run_transactions(
    options: WorldOptions,
    txn: TxnOptions,
    bootstrap: String,
    history: Arc<Mutex<TxnHistory>>,
    trace: Trace,
) -> Result<(), String> {
    let client = Client::new(client_config(bootstrap.clone())).map_err(|e| e.to_string())?;
    let admin = Admin::new(client.clone());
    let input = NewTopic::new(INPUT, txn.input_partitions, options.replication);
    create_topic(&admin, input, &trace).await;
    let output = NewTopic::new(OUTPUT, txn.output_partitions, options.replication);
    create_topic(&admin, output, &trace).await;
    trace.line(&format!("{:>7} client txn topics created", sim_ms()));
    let stop = Arc::new(AtomicBool::new(false));
    let seeder = tokio::spawn(seed_inputs(
        options.clone(),
        txn,
        client.clone(),
        trace.clone(),
    ));
    let mut watchers = tokio::task::JoinSet::new();
    for (reader, isolation) in [Isolation::ReadCommitted, Isolation::ReadUncommitted]
        .into_iter()
        .enumerate()
    {
        watchers.spawn(read_output(
            reader,
            isolation,
            txn,
            client.clone(),
            history.clone(),
            stop.clone(),
        ));
    }
    watchers.spawn(watch_offsets(admin.clone(), history.clone(), stop.clone()));
    transform(&options, txn, &client, &history, &trace).await;
    seeder
        .await
        .map_err(|e| format!("the seeder failed: {e}"))?;
    stop.store(true, Ordering::SeqCst);
    while let Some(result) = watchers.join_next().await {
        result.map_err(|e| format!("a transactional reader failed: {e}"))?;
    }
    final_read(&options, txn, &client, &history, &trace).await;
    trace.line(&format!("{:>7} client txn done", sim_ms()));
    Ok(())
}

/// Writes the inputs through the safety phase, each a unique value; one whose send may have
/// failed is written again as a new input, so no input is ever in the topic twice.
async fn seed_inputs(options: WorldOptions, txn: TxnOptions, client: Client, trace: Trace) {
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(10),
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    let Ok(producer) = Producer::new(client, config) else {
        return;
    };
    let every = (options.safety_ms / txn.inputs.max(1)).max(1);
    let mut next = 0u64;
    let mut written = 0u64;
    while written < txn.inputs && sim_ms() < options.safety_ms + 10_000 {
        let input = (1 << 48) | next;
        next += 1;
        let record = ProducerRecord {
            topic: INPUT.into(),
            partition: Some((input % txn.input_partitions as u64) as i32),
            key: None,
            value: Some(payload(input)),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let delivered = match producer.send(record).await {
            Ok(delivery) => delivery.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match delivered {
            Ok(_) => written += 1,
            Err(e) => trace.line(&format!("{:>7} client input {input}: {e}", sim_ms())),
        }
        sleep_ms(every).await;
    }
}

/// One instance of the transactional id: its producer and its id in the history.
struct Instance {
    id: InstanceId,
    producer: TransactionalProducer,
    attempts: u32,
}

/// Makes and initializes a new instance (fencing every earlier one); retries until one is
/// initialized or the run's time is up.
async fn new_instance(
    client: &Client,
    count: &mut u32,
    history: &Mutex<TxnHistory>,
    trace: &Trace,
    deadline: u64,
) -> Option<Instance> {
    let config = ProducerConfig {
        transactional_id: Some(TRANSACTIONAL_ID.into()),
        transaction_timeout_ms: 8_000,
        delivery_timeout: Duration::from_secs(10),
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    while sim_ms() < deadline {
        let producer = TransactionalProducer::new(client.clone(), config.clone()).ok()?;
        let invoked = sim_ms();
        match producer.init_transactions().await {
            Ok(()) => {
                let id = InstanceId(*count);
                *count += 1;
                let completed = sim_ms();
                history.lock().expect("not poisoned").instance(
                    id,
                    TRANSACTIONAL_ID,
                    invoked,
                    completed,
                );
                trace.line(&format!("{completed:>7} client txn instance {id} ready"));
                return Some(Instance {
                    id,
                    producer,
                    attempts: 0,
                });
            }
            Err(e) => trace.line(&format!("{:>7} client txn init: {e}", sim_ms())),
        }
        sleep_ms(200).await;
    }
    None
}

/// How an attempt went, for what the transformer does next.
enum Ended {
    /// Committed: the consumer goes on.
    Committed,
    /// Aborted: the consumer goes back to the committed offsets.
    Aborted,
    /// The instance cannot go on (fenced, or its last transaction's fate is unknown).
    InstanceGone,
}

/// The transformer: one transaction per poll of the input, until every input is processed
/// after the safety phase (or the run's time is up).
async fn transform(
    options: &WorldOptions,
    txn: TxnOptions,
    client: &Client,
    history: &Mutex<TxnHistory>,
    trace: &Trace,
) {
    let deadline = options.safety_ms + options.liveness_ms.saturating_sub(12_000);
    let mut rng = Stream::new(options.seed, "world-txn-transformer");
    let mut config = GroupConfig::new(GROUP);
    config.session_timeout_ms = 6_000;
    config.rebalance_timeout_ms = 10_000;
    config.heartbeat_interval = Duration::from_millis(500);
    config.consumer.read_committed = true;
    let mut input = GroupConsumer::new(client.clone(), config, &[INPUT]);
    let mut instances = 0u32;
    let mut next_value = 0u64;
    let mut quiet_since = sim_ms();
    let Some(mut instance) = new_instance(client, &mut instances, history, trace, deadline).await
    else {
        return;
    };
    while sim_ms() < deadline {
        let records = match input.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(e) => {
                trace.line(&format!("{:>7} client txn poll: {e}", sim_ms()));
                sleep_ms(100).await;
                continue;
            }
        };
        if records.is_empty() {
            // Done once the inputs are all written and nothing came for a while.
            if sim_ms() > options.safety_ms + 10_000 && sim_ms() - quiet_since > 3_000 {
                break;
            }
            continue;
        }
        quiet_since = sim_ms();
        let fence = sim_ms() < options.safety_ms && rng.chance(txn.fence_ppm);
        let abort = rng.chance(txn.abort_ppm);
        let ended = attempt(
            &mut instance,
            &mut input,
            records,
            (txn, abort),
            &mut next_value,
            history,
            trace,
        )
        .await;
        let gone = matches!(ended, Ended::InstanceGone);
        if !matches!(ended, Ended::Committed) {
            input.rewind();
        }
        if gone || fence {
            let Some(newer) = new_instance(client, &mut instances, history, trace, deadline).await
            else {
                return;
            };
            let zombie = std::mem::replace(&mut instance, newer);
            if fence && !gone {
                // The fenced instance tries once more: everything it does must fail.
                let mut zombie = zombie;
                if let Ok(records) = input.poll(Duration::from_millis(200)).await {
                    if !records.is_empty() {
                        attempt(
                            &mut zombie,
                            &mut input,
                            records,
                            (txn, false),
                            &mut next_value,
                            history,
                            trace,
                        )
                        .await;
                        input.rewind();
                    }
                }
            }
        }
    }
}

/// One transaction of `instance` over `records`: their outputs, the group's offsets, and a
/// commit (or an abort on purpose); recorded in the history however it ends.
async fn attempt(
    instance: &mut Instance,
    input: &mut GroupConsumer,
    records: Vec<oxbow_client::ConsumerRecord>,
    (txn, abort): (TxnOptions, bool),
    next_value: &mut u64,
    history: &Mutex<TxnHistory>,
    trace: &Trace,
) -> Ended {
    let number = instance.attempts;
    instance.attempts += 1;
    let name = format!("{}#{number}", instance.id);
    let producer = &instance.producer;
    let mut op = TxnOp::new(sim_ms());
    let sent: Result<(), TransactionError> = async {
        producer.begin().await?;
        let mut deliveries = Vec::new();
        for record in &records {
            let id = value_of(record);
            op.consumed.push(InputRecord {
                partition: record.partition,
                offset: record.offset,
                input: InputId(id),
            });
            for copy in 0..txn.copies {
                let value = (2 << 48) | *next_value;
                *next_value += 1;
                let partition = ((id + u64::from(copy)) % txn.output_partitions as u64) as i32;
                op.produced.push(OutputRecord {
                    partition,
                    input: InputId(id),
                    copy,
                    value,
                });
                let out = ProducerRecord {
                    topic: OUTPUT.into(),
                    partition: Some(partition),
                    key: None,
                    value: Some(payload(value)),
                    headers: Vec::new(),
                    timestamp_ms: None,
                };
                deliveries.push(producer.send(out).await?);
            }
        }
        for delivery in deliveries {
            delivery
                .await
                .map_err(|e| TransactionError::Abortable(e.error().clone()))?;
        }
        let positions: Vec<(String, i32, i64)> = input
            .positions()
            .into_iter()
            .filter(|(topic, _, _)| topic == INPUT)
            .collect();
        for (_, partition, next) in &positions {
            op.offsets.insert(*partition, *next);
        }
        producer
            .send_offsets_to_transaction(&positions, &input.group_metadata())
            .await
    }
    .await;
    let (outcome, ended) = match sent {
        Err(TransactionError::Fatal(e)) => {
            trace.line(&format!(
                "{:>7} client txn {name} fenced before its commit: {e}",
                sim_ms()
            ));
            (TxnOutcome::Fenced, Ended::InstanceGone)
        }
        Err(e) => {
            trace.line(&format!("{:>7} client txn {name} failed: {e}", sim_ms()));
            abort_now(producer, &name, trace).await
        }
        Ok(()) if abort => abort_now(producer, &name, trace).await,
        Ok(()) => {
            op.commit_sent_ms = Some(sim_ms());
            commit(producer, &name, trace).await
        }
    };
    let op = op.ended(outcome, sim_ms());
    trace.line(&format!(
        "{:>7} client txn {name} {outcome:?}: {} inputs, {} outputs, offsets {:?}",
        op.completed_ms,
        op.consumed.len(),
        op.produced.len(),
        op.offsets
    ));
    history
        .lock()
        .expect("not poisoned")
        .txn(instance.id, number, op);
    ended
}

/// Aborts the open transaction: aborted once acknowledged; an instance that cannot abort
/// is gone (its transaction never committed: the commit was not sent).
async fn abort_now(
    producer: &TransactionalProducer,
    name: &str,
    trace: &Trace,
) -> (TxnOutcome, Ended) {
    for _ in 0..3 {
        match producer.abort().await {
            Ok(()) => return (TxnOutcome::Aborted, Ended::Aborted),
            Err(TransactionError::Fatal(e)) => {
                trace.line(&format!("{:>7} client txn {name} abort: {e}", sim_ms()));
                return (TxnOutcome::Fenced, Ended::InstanceGone);
            }
            Err(e) => trace.line(&format!("{:>7} client txn {name} abort: {e}", sim_ms())),
        }
    }
    (TxnOutcome::Aborted, Ended::InstanceGone)
}

/// Commits the open transaction, asking again while the answer is unknown; after that the
/// outcome stays unknown and the instance is dropped.
async fn commit(
    producer: &TransactionalProducer,
    name: &str,
    trace: &Trace,
) -> (TxnOutcome, Ended) {
    for _ in 0..3 {
        match producer.commit().await {
            Ok(()) => return (TxnOutcome::Committed, Ended::Committed),
            Err(TransactionError::Retriable(e)) => {
                trace.line(&format!("{:>7} client txn {name} commit: {e}", sim_ms()));
            }
            Err(TransactionError::Fatal(e)) => {
                trace.line(&format!("{:>7} client txn {name} commit: {e}", sim_ms()));
                return (TxnOutcome::Fenced, Ended::InstanceGone);
            }
            Err(TransactionError::Abortable(e)) => {
                trace.line(&format!("{:>7} client txn {name} commit: {e}", sim_ms()));
                // The commit was refused: aborting settles it, if the coordinator agrees.
                return match producer.abort().await {
                    Ok(()) => (TxnOutcome::Aborted, Ended::Aborted),
                    Err(_) => (TxnOutcome::Indeterminate, Ended::InstanceGone),
                };
            }
        }
    }
    (TxnOutcome::Indeterminate, Ended::InstanceGone)
}

/// A reader of the output topic at `isolation`, polling every partition from the start.
async fn read_output(
    reader: usize,
    isolation: Isolation,
    txn: TxnOptions,
    client: Client,
    history: Arc<Mutex<TxnHistory>>,
    stop: Arc<AtomicBool>,
) {
    let config = ConsumerConfig {
        read_committed: isolation == Isolation::ReadCommitted,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    let partitions: Vec<(&str, i32)> = (0..txn.output_partitions).map(|p| (OUTPUT, p)).collect();
    consumer.assign(&partitions);
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) if !records.is_empty() => {
                let records = records
                    .iter()
                    .map(|r| (r.partition, r.offset, value_of(r)))
                    .collect();
                history
                    .lock()
                    .expect("not poisoned")
                    .poll(reader, isolation, sim_ms(), records);
            }
            Ok(_) => {}
            Err(_) => sleep_ms(100).await,
        }
    }
}

/// Fetches the group's committed offsets now and then.
async fn watch_offsets(admin: Admin, history: Arc<Mutex<TxnHistory>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let invoked = sim_ms();
        if let Ok(offsets) = admin.list_group_offsets(GROUP, false).await {
            let offsets: Vec<(i32, i64)> = offsets
                .into_iter()
                .filter(|(topic, _, _)| topic == INPUT)
                .map(|(_, partition, offset)| (partition, offset))
                .collect();
            history
                .lock()
                .expect("not poisoned")
                .offset_fetch(invoked, sim_ms(), &offsets);
        }
        sleep_ms(400).await;
    }
}

/// After healing: every output partition read with read_committed from its start until its
/// position reaches the high watermark (no transaction open), or the time is up (unfinished).
async fn final_read(
    options: &WorldOptions,
    txn: TxnOptions,
    client: &Client,
    history: &Mutex<TxnHistory>,
    trace: &Trace,
) {
    let deadline = options.safety_ms + options.liveness_ms.saturating_sub(3_000);
    let committed = ConsumerConfig {
        read_committed: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), committed);
    let ends = Consumer::new(client.clone(), ConsumerConfig::default());
    let partitions: Vec<(&str, i32)> = (0..txn.output_partitions).map(|p| (OUTPUT, p)).collect();
    consumer.assign(&partitions);
    let mut read: std::collections::BTreeMap<i32, Vec<(i64, u64)>> = (0..txn.output_partitions)
        .map(|p| (p, Vec::new()))
        .collect();
    let mut finished = false;
    while sim_ms() < deadline {
        if let Ok(records) = consumer.poll(Duration::from_millis(300)).await {
            for r in &records {
                read.entry(r.partition)
                    .or_default()
                    .push((r.offset, value_of(r)));
            }
        }
        let mut at_end = true;
        for p in 0..txn.output_partitions {
            let end = ends.end_offset(OUTPUT, p).await;
            let position = consumer.position(OUTPUT, p).unwrap_or(0);
            at_end &= end.is_ok_and(|end| position >= end);
        }
        if at_end {
            finished = true;
            break;
        }
    }
    trace.line(&format!(
        "{:>7} client txn final read {}: {:?}",
        sim_ms(),
        if finished { "done" } else { "unfinished" },
        read.iter().map(|(p, r)| (*p, r.len())).collect::<Vec<_>>()
    ));
    let mut history = history.lock().expect("not poisoned");
    history.final_read.partitions = read;
    history.final_read.finished = finished;
    history.final_read.completed_ms = sim_ms();
}
