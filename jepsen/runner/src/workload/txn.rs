//! The transactional workload (`--workload txn`), the simulator's consume-transform-produce
//! workload (sim/src/world/transactions.rs) against real processes: a seeder writes unique
//! inputs to an input topic; transformers (each a read_committed member of one consumer group
//! and a transactional producer with its own transactional id) turn each input into copies on
//! several partitions of the output topic and commit them with the group's offsets, one
//! transaction per poll; some transactions are aborted on purpose, and now and then a new
//! instance of a transactional id fences the running one, which then tries one more
//! transaction (a zombie's, which must fail). An instance that got a fatal error, or whose
//! transaction outlived its deadline, is replaced by a new one (which fences it). Readers of
//! both isolation levels poll the output, a watcher fetches the group's committed offsets,
//! and after healing the transformers catch up with every input and every output partition
//! is read back with read_committed. All of it goes into a [`TxnHistory`], which
//! `oxbow_jepsen::txn::check` judges.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oxbow_client::{
    Admin, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer, Producer,
    ProducerConfig, ProducerRecord, TransactionError, TransactionalProducer,
};
use oxbow_jepsen::history::queue_payload;
use oxbow_jepsen::txn::{
    InputId, InputRecord, InstanceId, Isolation, OutputRecord, TxnHistory, TxnOp, TxnOutcome,
};

use super::{client, value_of, Clock};
use crate::rng::Stream;

/// Input values are `1 << 48 | n`, output values `2 << 48 | n`: unique in the run.
const INPUT_TAG: u64 = 1 << 48;
const OUTPUT_TAG: u64 = 2 << 48;

/// The workload's shape and shared state: every task of the workload holds one.
pub struct Txn {
    /// The cluster.
    pub bootstrap: String,
    /// The input topic.
    pub input: String,
    /// The output topic.
    pub output: String,
    /// The transformers' consumer group.
    pub group: String,
    /// Partitions of each topic.
    pub partitions: i32,
    /// Outputs per input.
    pub copies: u32,
    /// Chance per transaction (parts per million) of an abort on purpose.
    pub abort_ppm: u64,
    /// Chance per transaction (parts per million) of fencing on purpose, while faults last.
    pub fence_ppm: u64,
    /// Inputs per second.
    pub rate: u64,
    /// The run's seed.
    pub seed: u64,
    /// The producers' delivery timeout.
    pub delivery_timeout: Duration,
    /// The transactional producers' transaction timeout.
    pub transaction_timeout: Duration,
    /// The run's clock.
    pub clock: Clock,
    /// What the clients observed.
    pub history: Arc<Mutex<TxnHistory>>,
    /// Counts for the progress line.
    pub stats: TxnStats,
    /// The next instance id (unique over every transformer).
    instances: AtomicU32,
    /// The next output value's number.
    values: AtomicU64,
    /// Set when the faults stop: no more fencing on purpose.
    pub stop_faults: AtomicBool,
    /// Set when the seeder must stop.
    pub stop_inputs: AtomicBool,
    /// Set when the transformers must stop.
    pub stop_transformers: AtomicBool,
    /// Set when the readers and the offset watcher must stop.
    pub stop_readers: AtomicBool,
}

/// Running counts for the progress line and the report.
#[derive(Debug, Default)]
pub struct TxnStats {
    /// Inputs sent.
    pub inputs_sent: AtomicU64,
    /// Inputs acknowledged.
    pub inputs_ok: AtomicU64,
    /// Inputs whose send failed (or may have: each is written again as a new input).
    pub inputs_failed: AtomicU64,
    /// Producer instances initialized.
    pub instances: AtomicU64,
    /// Attempts committed (acknowledged).
    pub committed: AtomicU64,
    /// Attempts aborted.
    pub aborted: AtomicU64,
    /// Attempts with an unknown outcome.
    pub indeterminate: AtomicU64,
    /// Attempts fenced.
    pub fenced: AtomicU64,
    /// Non-empty polls of the output readers.
    pub polls: AtomicU64,
}

impl TxnStats {
    /// `inputs N (ok N, failed N) | instances N | txns committed N aborted N ...`.
    pub fn line(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "inputs {} (ok {}, failed {}) | instances {} | txns committed {} aborted {} indeterminate {} fenced {} | output polls {}",
            get(&self.inputs_sent),
            get(&self.inputs_ok),
            get(&self.inputs_failed),
            get(&self.instances),
            get(&self.committed),
            get(&self.aborted),
            get(&self.indeterminate),
            get(&self.fenced),
            get(&self.polls),
        )
    }
}

impl Txn {
    /// The workload on `topic`-in and `topic`-out, nothing recorded yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        copies: u32,
        (abort, fence): (f64, f64),
        rate: u64,
        seed: u64,
        (delivery_timeout, transaction_timeout): (Duration, Duration),
        clock: Clock,
    ) -> Self {
        let ppm = |p: f64| (p * 1_000_000.0).round() as u64;
        Self {
            bootstrap: bootstrap.to_string(),
            input: format!("{topic}-in"),
            output: format!("{topic}-out"),
            group: format!("{topic}-transformers"),
            partitions,
            copies,
            abort_ppm: ppm(abort),
            fence_ppm: ppm(fence),
            rate,
            seed,
            delivery_timeout,
            transaction_timeout,
            clock,
            history: Arc::default(),
            stats: TxnStats::default(),
            instances: AtomicU32::new(0),
            values: AtomicU64::new(0),
            stop_faults: AtomicBool::new(false),
            stop_inputs: AtomicBool::new(false),
            stop_transformers: AtomicBool::new(false),
            stop_readers: AtomicBool::new(false),
        }
    }

    /// The transactional id of transformer `index`.
    pub fn transactional_id(&self, index: usize) -> String {
        format!("{}-tx-{index}", self.output)
    }

    /// How long one attempt may take before it is given up as indeterminate.
    fn attempt_deadline(&self) -> Duration {
        self.transaction_timeout + self.delivery_timeout
    }

    fn now(&self) -> String {
        format!("[{:>6.1}s]", self.clock.ms() as f64 / 1000.0)
    }
}

/// Writes inputs at `rate` until `stop_inputs`, each a unique value, to partition
/// `value % partitions`; a send that failed (or may have) is written again as a new input, so
/// no input is ever in the topic twice (the producer is idempotent).
pub async fn seed_inputs(txn: Arc<Txn>) -> Result<(), String> {
    let config = ProducerConfig {
        linger: Duration::from_millis(2),
        delivery_timeout: txn.delivery_timeout,
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client(&txn.bootstrap)?, config)
        .map_err(|e| format!("the input producer: {e}"))?;
    let mut rng = Stream::new(txn.seed, "txn-inputs");
    let interval = (1000 / txn.rate.max(1)).max(1);
    let mut deliveries = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while !txn.stop_inputs.load(Ordering::SeqCst) {
        let input = INPUT_TAG | next;
        next += 1;
        let record = ProducerRecord {
            topic: txn.input.clone(),
            partition: Some((input % txn.partitions as u64) as i32),
            key: None,
            value: Some(Bytes::from(queue_payload(input))),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        txn.stats.inputs_sent.fetch_add(1, Ordering::Relaxed);
        let queued = producer.send(record).await;
        let txn2 = txn.clone();
        deliveries.spawn(async move {
            let delivered = match queued {
                Ok(delivery) => delivery.await.is_ok(),
                Err(_) => false,
            };
            let counter = if delivered {
                &txn2.stats.inputs_ok
            } else {
                &txn2.stats.inputs_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        tokio::time::sleep(Duration::from_millis(
            rng.between(interval / 2, interval + interval / 2),
        ))
        .await;
    }
    let _ = tokio::time::timeout(txn.delivery_timeout + Duration::from_secs(30), async {
        producer.flush().await;
        while deliveries.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// One instance of a transactional id: its producer and its id in the history.
struct Instance {
    id: InstanceId,
    producer: TransactionalProducer,
    attempts: u32,
}

/// Makes and initializes a new instance of `transactional_id` (fencing every earlier one);
/// retries until one is initialized, or `None` once the transformers must stop.
async fn new_instance(txn: &Txn, transactional_id: &str) -> Result<Option<Instance>, String> {
    let config = ProducerConfig {
        transactional_id: Some(transactional_id.to_string()),
        transaction_timeout_ms: txn.transaction_timeout.as_millis() as i32,
        linger: Duration::from_millis(2),
        delivery_timeout: txn.delivery_timeout,
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    let mut last = String::new();
    while !txn.stop_transformers.load(Ordering::SeqCst) {
        let producer = TransactionalProducer::new(client(&txn.bootstrap)?, config.clone())
            .map_err(|e| format!("a transactional producer of {transactional_id}: {e}"))?;
        let invoked = txn.clock.ms();
        match tokio::time::timeout(txn.attempt_deadline(), producer.init_transactions()).await {
            Ok(Ok(())) => {
                let id = InstanceId(txn.instances.fetch_add(1, Ordering::SeqCst));
                let completed = txn.clock.ms();
                txn.history.lock().expect("not poisoned").instance(
                    id,
                    transactional_id,
                    invoked,
                    completed,
                );
                txn.stats.instances.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(Instance {
                    id,
                    producer,
                    attempts: 0,
                }));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {:?}", txn.attempt_deadline()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !last.is_empty() {
        println!(
            "{} {transactional_id}: no new instance before the end (last: {last})",
            txn.now()
        );
    }
    Ok(None)
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

/// Transformer `index`: one transaction per poll of the input, until `stop_transformers`.
pub async fn transform(txn: Arc<Txn>, index: usize) -> Result<(), String> {
    let transactional_id = txn.transactional_id(index);
    let mut rng = Stream::new(txn.seed, &format!("transformer-{index}"));
    let mut config = GroupConfig::new(&txn.group);
    config.session_timeout_ms = 6_000;
    config.rebalance_timeout_ms = 10_000;
    config.heartbeat_interval = Duration::from_millis(500);
    config.consumer.read_committed = true;
    let mut input = GroupConsumer::new(client(&txn.bootstrap)?, config, &[&txn.input]);
    let Some(mut instance) = new_instance(&txn, &transactional_id).await? else {
        return Ok(());
    };
    while !txn.stop_transformers.load(Ordering::SeqCst) {
        let records = match input.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        let fence = !txn.stop_faults.load(Ordering::SeqCst) && rng.chance(txn.fence_ppm, 1_000_000);
        let abort = rng.chance(txn.abort_ppm, 1_000_000);
        let ended = attempt(&txn, &mut instance, &input, &records, abort).await;
        let gone = matches!(ended, Ended::InstanceGone);
        if !matches!(ended, Ended::Committed) {
            input.rewind();
        }
        if gone || fence {
            let Some(newer) = new_instance(&txn, &transactional_id).await? else {
                break;
            };
            let mut zombie = std::mem::replace(&mut instance, newer);
            if fence && !gone {
                // The fenced instance tries once more: everything it does must fail.
                if let Ok(records) = input.poll(Duration::from_millis(200)).await {
                    if !records.is_empty() {
                        attempt(&txn, &mut zombie, &input, &records, false).await;
                        input.rewind();
                    }
                }
            }
        }
    }
    // Leaving at once lets the others take its partitions without waiting for its session.
    let _ = tokio::time::timeout(Duration::from_secs(5), input.leave()).await;
    Ok(())
}

/// One transaction of `instance` over `records`: their outputs, the group's offsets, and a
/// commit (or an abort on purpose); recorded in the history however it ends. One that takes
/// longer than the attempt deadline is given up: indeterminate, and the instance is gone.
async fn attempt(
    txn: &Txn,
    instance: &mut Instance,
    input: &GroupConsumer,
    records: &[ConsumerRecord],
    abort: bool,
) -> Ended {
    let number = instance.attempts;
    instance.attempts += 1;
    let mut op = TxnOp::new(txn.clock.ms());
    let run = run_attempt(txn, &instance.producer, input, records, abort, &mut op);
    let (outcome, ended) = tokio::time::timeout(txn.attempt_deadline(), run)
        .await
        .unwrap_or((TxnOutcome::Indeterminate, Ended::InstanceGone));
    let op = op.ended(outcome, txn.clock.ms());
    let counter = match outcome {
        TxnOutcome::Committed => &txn.stats.committed,
        TxnOutcome::Aborted => &txn.stats.aborted,
        TxnOutcome::Indeterminate => &txn.stats.indeterminate,
        TxnOutcome::Fenced => &txn.stats.fenced,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    txn.history
        .lock()
        .expect("not poisoned")
        .txn(instance.id, number, op);
    ended
}

/// The body of [`attempt`], recording into `op` as it goes (so that what it did is kept
/// if the deadline cuts it short).
async fn run_attempt(
    txn: &Txn,
    producer: &TransactionalProducer,
    input: &GroupConsumer,
    records: &[ConsumerRecord],
    abort: bool,
    op: &mut TxnOp,
) -> (TxnOutcome, Ended) {
    let sent: Result<(), TransactionError> = async {
        producer.begin().await?;
        let mut deliveries = Vec::new();
        for record in records {
            let id = value_of(record);
            op.consumed.push(InputRecord {
                partition: record.partition,
                offset: record.offset,
                input: InputId(id),
            });
            for copy in 0..txn.copies {
                let value = OUTPUT_TAG | txn.values.fetch_add(1, Ordering::SeqCst);
                let partition = ((id + u64::from(copy)) % txn.partitions as u64) as i32;
                op.produced.push(OutputRecord {
                    partition,
                    input: InputId(id),
                    copy,
                    value,
                });
                let out = ProducerRecord {
                    topic: txn.output.clone(),
                    partition: Some(partition),
                    key: None,
                    value: Some(Bytes::from(queue_payload(value))),
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
            .filter(|(topic, _, _)| *topic == txn.input)
            .collect();
        for (_, partition, next) in &positions {
            op.offsets.insert(*partition, *next);
        }
        producer
            .send_offsets_to_transaction(&positions, &input.group_metadata())
            .await
    }
    .await;
    match sent {
        Err(TransactionError::Fatal(_)) => (TxnOutcome::Fenced, Ended::InstanceGone),
        Err(_) => abort_now(producer).await,
        Ok(()) if abort => abort_now(producer).await,
        Ok(()) => {
            op.commit_sent_ms = Some(txn.clock.ms());
            commit(producer).await
        }
    }
}

/// Aborts the open transaction: aborted once acknowledged; an instance that cannot abort
/// is gone (its transaction never committed: the commit was not sent).
async fn abort_now(producer: &TransactionalProducer) -> (TxnOutcome, Ended) {
    for _ in 0..3 {
        match producer.abort().await {
            Ok(()) => return (TxnOutcome::Aborted, Ended::Aborted),
            Err(TransactionError::Fatal(_)) => return (TxnOutcome::Fenced, Ended::InstanceGone),
            Err(_) => {}
        }
    }
    (TxnOutcome::Aborted, Ended::InstanceGone)
}

/// Commits the open transaction, asking again while the answer is unknown; after that the
/// outcome stays unknown and the instance is dropped.
async fn commit(producer: &TransactionalProducer) -> (TxnOutcome, Ended) {
    for _ in 0..3 {
        match producer.commit().await {
            Ok(()) => return (TxnOutcome::Committed, Ended::Committed),
            Err(TransactionError::Retriable(_)) => {}
            Err(TransactionError::Fatal(_)) => return (TxnOutcome::Fenced, Ended::InstanceGone),
            Err(TransactionError::Abortable(_)) => {
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

/// A reader of the output topic at `isolation`, polling every partition from the start
/// until `stop_readers`.
pub async fn read_output(txn: Arc<Txn>, reader: usize, isolation: Isolation) -> Result<(), String> {
    let config = ConsumerConfig {
        read_committed: isolation == Isolation::ReadCommitted,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client(&txn.bootstrap)?, config);
    let partitions: Vec<(&str, i32)> = (0..txn.partitions)
        .map(|p| (txn.output.as_str(), p))
        .collect();
    consumer.assign(&partitions);
    while !txn.stop_readers.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) if !records.is_empty() => {
                let records = records
                    .iter()
                    .map(|r| (r.partition, r.offset, value_of(r)))
                    .collect();
                txn.stats.polls.fetch_add(1, Ordering::Relaxed);
                txn.history.lock().expect("not poisoned").poll(
                    reader,
                    isolation,
                    txn.clock.ms(),
                    records,
                );
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

/// Fetches the group's committed offsets (OffsetFetch, not requiring stable offsets) every
/// 400 ms until `stop_readers`.
pub async fn watch_offsets(txn: Arc<Txn>) -> Result<(), String> {
    let admin = Admin::new(client(&txn.bootstrap)?);
    while !txn.stop_readers.load(Ordering::SeqCst) {
        let invoked = txn.clock.ms();
        let fetched = tokio::time::timeout(
            Duration::from_secs(10),
            admin.list_group_offsets(&txn.group, false),
        )
        .await;
        if let Ok(Ok(offsets)) = fetched {
            let offsets: Vec<(i32, i64)> = offsets
                .into_iter()
                .filter(|(topic, _, _)| *topic == txn.input)
                .map(|(_, partition, offset)| (partition, offset))
                .collect();
            txn.history.lock().expect("not poisoned").offset_fetch(
                invoked,
                txn.clock.ms(),
                &offsets,
            );
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    Ok(())
}

/// After the inputs stopped and the faults healed: waits until the group's committed offsets
/// (stable ones) reach the end of every input partition, or `timeout`; says whether they did.
pub async fn wait_caught_up(txn: &Txn, timeout: Duration) -> Result<bool, String> {
    let admin = Admin::new(client(&txn.bootstrap)?);
    let ends = Consumer::new(client(&txn.bootstrap)?, ConsumerConfig::default());
    let deadline = Instant::now() + timeout;
    let mut behind = String::from("no answer yet");
    while Instant::now() < deadline {
        let mut end = BTreeMap::new();
        for p in 0..txn.partitions {
            if let Ok(offset) = ends.end_offset(&txn.input, p).await {
                end.insert(p, offset);
            }
        }
        if let Ok(Ok(offsets)) = tokio::time::timeout(
            Duration::from_secs(10),
            admin.list_group_offsets(&txn.group, true),
        )
        .await
        {
            let committed: BTreeMap<i32, i64> = offsets
                .into_iter()
                .filter(|(topic, _, _)| *topic == txn.input)
                .map(|(_, p, o)| (p, o))
                .collect();
            let lagging: Vec<String> = end
                .iter()
                .filter(|(p, e)| **e > 0 && committed.get(p).is_none_or(|c| c < *e))
                .map(|(p, e)| format!("{p}: {} of {e}", committed.get(p).copied().unwrap_or(0)))
                .collect();
            if end.len() == txn.partitions as usize && lagging.is_empty() {
                return Ok(true);
            }
            behind = lagging.join(", ");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "{} the transformers did not catch up with the inputs within {timeout:?} (committed offsets behind: {behind})",
        txn.now()
    );
    Ok(false)
}

/// After the transformers stopped: every output partition read with read_committed from its
/// start until its position reaches the high watermark (no transaction open), or `timeout`
/// (then the final read is unfinished).
pub async fn final_read(txn: &Txn, timeout: Duration) -> Result<(), String> {
    let committed = ConsumerConfig {
        read_committed: true,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client(&txn.bootstrap)?, committed);
    let ends = Consumer::new(client(&txn.bootstrap)?, ConsumerConfig::default());
    let partitions: Vec<(&str, i32)> = (0..txn.partitions)
        .map(|p| (txn.output.as_str(), p))
        .collect();
    consumer.assign(&partitions);
    let mut read: BTreeMap<i32, Vec<(i64, u64)>> =
        (0..txn.partitions).map(|p| (p, Vec::new())).collect();
    let deadline = Instant::now() + timeout;
    let mut finished = false;
    let mut last_error = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(300)).await {
            Ok(records) => {
                for r in &records {
                    read.entry(r.partition)
                        .or_default()
                        .push((r.offset, value_of(r)));
                }
            }
            Err(e) => last_error = Some(e.to_string()),
        }
        let mut at_end = true;
        for p in 0..txn.partitions {
            let end = ends.end_offset(&txn.output, p).await;
            let position = consumer.position(&txn.output, p).unwrap_or(0);
            at_end &= end.is_ok_and(|end| position >= end);
        }
        if at_end {
            finished = true;
            break;
        }
    }
    if !finished {
        println!(
            "{} the final read did not reach the end of the output within {timeout:?} (positions {:?}; last error: {})",
            txn.now(),
            (0..txn.partitions)
                .map(|p| consumer.position(&txn.output, p))
                .collect::<Vec<_>>(),
            last_error.as_deref().unwrap_or("none")
        );
    }
    let mut history = txn.history.lock().expect("not poisoned");
    history.final_read.partitions = read;
    history.final_read.finished = finished;
    history.final_read.completed_ms = txn.clock.ms();
    Ok(())
}
