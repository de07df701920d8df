//! Transactional against non-transactional produce throughput with the oxbow client, in one
//! run against a running cluster: for `--seconds` each, an idempotent producer (acks=all)
//! sends as fast as it can, and a transactional producer sends the same way and commits every
//! `--commit-ms`; the two alternate for `--rounds` rounds (the order swapped each round), so
//! drift in the machine hits both. Prints records/s and MB/s of each, the ratio
//! transactional/non-transactional, and the commit latency percentiles (p50, p99, max).
//!
//! Start a cluster (`cargo run --release -p oxbow-node --bin oxbow -- dev`), then:
//! `cargo run --release -p oxbow-client --example txn_bench -- --seconds 10 --size 100`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::Parser;
use oxbow_client::producer::DeliveryFuture;
use oxbow_client::{
    Client, ClientConfig, Producer, ProducerConfig, ProducerRecord, TransactionalProducer,
};

/// Transactional throughput (a commit every --commit-ms) beside non-transactional idempotent
/// throughput, measured in alternating rounds of the same run; acks=all.
#[derive(Parser)]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic (must exist); both producers use it.
    #[arg(long, default_value = "events")]
    topic: String,
    /// Seconds each producer sends for, per round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds; each runs both producers, the first one alternating.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Milliseconds between the transactional producer's commits (each transaction sends
    /// this long, then commits).
    #[arg(long, default_value_t = 100)]
    commit_ms: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Most records sent but not yet acknowledged.
    #[arg(long, default_value_t = 100_000)]
    in_flight: usize,
    /// The transactional id (a new one each run by default: `txn-bench-<pid>`).
    #[arg(long)]
    transactional_id: Option<String>,
}

/// One producer's round.
#[derive(Default)]
struct Round {
    /// Records acknowledged (in committed transactions, for the transactional producer).
    records: u64,
    /// From the first send to the last acknowledgement (or commit).
    seconds: f64,
    /// Records whose delivery failed.
    failed: u64,
    /// Commit latencies in microseconds: from `commit()` to its return, which waits for the
    /// transaction's records to be acknowledged and then for EndTxn.
    commits: Vec<u64>,
    /// Per transaction, the microseconds its `send` calls waited longer than a millisecond
    /// (each partition's first record waits for AddPartitionsToTxn; a full queue waits too).
    blocked: Vec<u64>,
    /// Per transaction, the microseconds its first `send` took: AddPartitionsToTxn, which
    /// the coordinator answers CONCURRENT_TRANSACTIONS (and the client asks again 20 ms later)
    /// until the previous transaction's markers are written.
    first_sends: Vec<u64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Waits for the oldest deliveries until at most `keep` are waiting; counts them.
async fn settle(waiting: &mut VecDeque<DeliveryFuture>, keep: usize, round: &mut Round) {
    while waiting.len() > keep {
        match waiting.pop_front().expect("non-empty").await {
            Ok(_) => round.records += 1,
            Err(_) => round.failed += 1,
        }
    }
}

async fn plain(
    producer: &Producer,
    args: &Args,
    value: &bytes::Bytes,
) -> Result<Round, Box<dyn std::error::Error>> {
    let mut round = Round::default();
    let mut waiting = VecDeque::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        settle(&mut waiting, args.in_flight.max(1) - 1, &mut round).await;
        let record = ProducerRecord::new(&args.topic, value.clone());
        waiting.push_back(producer.send(record).await?);
    }
    settle(&mut waiting, 0, &mut round).await;
    round.seconds = start.elapsed().as_secs_f64();
    Ok(round)
}

async fn transactional(
    producer: &TransactionalProducer,
    args: &Args,
    value: &bytes::Bytes,
) -> Result<Round, Box<dyn std::error::Error>> {
    let mut round = Round::default();
    let mut waiting = VecDeque::new();
    let every = Duration::from_millis(args.commit_ms);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        let began = Instant::now();
        producer.begin().await?;
        let mut in_transaction = Round::default();
        let mut blocked = Duration::ZERO;
        while began.elapsed() < every && Instant::now() < end {
            settle(&mut waiting, args.in_flight.max(1) - 1, &mut in_transaction).await;
            let record = ProducerRecord::new(&args.topic, value.clone());
            let sending = Instant::now();
            waiting.push_back(producer.send(record).await?);
            let took = sending.elapsed();
            if round.first_sends.len() == round.commits.len() {
                round.first_sends.push(took.as_micros() as u64);
            }
            if took > Duration::from_millis(1) {
                blocked += took;
            }
        }
        round.blocked.push(blocked.as_micros() as u64);
        let committing = Instant::now();
        producer.commit().await?;
        round.commits.push(committing.elapsed().as_micros() as u64);
        // The commit waited for every record of the transaction: these are resolved.
        settle(&mut waiting, 0, &mut in_transaction).await;
        round.records += in_transaction.records;
        round.failed += in_transaction.failed;
    }
    round.seconds = start.elapsed().as_secs_f64();
    Ok(round)
}

/// p50, p99 and max of microseconds, in milliseconds.
fn spread(micros: &[u64]) -> String {
    let mut sorted = micros.to_vec();
    sorted.sort_unstable();
    let ms = |p| percentile(&sorted, p) as f64 / 1e3;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        sorted.last().copied().unwrap_or(0) as f64 / 1e3
    )
}

/// Where a transactional round's time went.
fn waits(round: &Round) -> String {
    format!(
        "{} transactions ({:.0} records each): commit {}; first send {}; all sends waiting over 1 ms, per transaction, {}",
        round.commits.len(),
        round.records as f64 / round.commits.len().max(1) as f64,
        spread(&round.commits),
        spread(&round.first_sends),
        spread(&round.blocked),
    )
}

fn line(name: &str, round: &Round, size: usize) -> String {
    format!(
        "{name}: {:.0} records/s, {:.1} MB/s ({} records in {:.2} s, failed {})",
        round.rate(),
        round.rate() * size as f64 / 1e6,
        round.records,
        round.seconds,
        round.failed
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = Client::new(ClientConfig::new(&args.bootstrap))?;
    let config = ProducerConfig {
        linger: Duration::from_millis(args.linger_ms),
        batch_bytes: args.batch_bytes,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config.clone())?;
    let transactional_id = args
        .transactional_id
        .clone()
        .unwrap_or_else(|| format!("txn-bench-{}", std::process::id()));
    let txn_producer = TransactionalProducer::new(
        client,
        ProducerConfig {
            transactional_id: Some(transactional_id),
            ..config
        },
    )?;
    txn_producer.init_transactions().await?;
    let value = bytes::Bytes::from(vec![b'x'; args.size]);

    // Warm-up: connections, producer ids, every partition's leader known to both.
    for _ in 0..1_000 {
        producer
            .send(ProducerRecord::new(&args.topic, value.clone()))
            .await?
            .await?;
    }
    txn_producer.begin().await?;
    for _ in 0..1_000 {
        txn_producer
            .send(ProducerRecord::new(&args.topic, value.clone()))
            .await?;
    }
    txn_producer.commit().await?;

    println!(
        "{} rounds of {} s each, {} B records, commit every {} ms, linger {} ms, batches of {} B, up to {} records in flight",
        args.rounds, args.seconds, args.size, args.commit_ms, args.linger_ms, args.batch_bytes, args.in_flight
    );
    let mut plains = Vec::new();
    let mut txns = Vec::new();
    for r in 0..args.rounds {
        let plain_first = r % 2 == 0;
        for first in [true, false] {
            if first == plain_first {
                let round = plain(&producer, &args, &value).await?;
                println!(
                    "round {}: {}",
                    r + 1,
                    line("non-transactional", &round, args.size)
                );
                plains.push(round);
            } else {
                let round = transactional(&txn_producer, &args, &value).await?;
                println!(
                    "round {}: {}",
                    r + 1,
                    line("transactional", &round, args.size)
                );
                println!("round {}: {}", r + 1, waits(&round));
                txns.push(round);
            }
        }
        let ratio = txns.last().map_or(0.0, Round::rate) / plains.last().map_or(1.0, Round::rate);
        println!(
            "round {}: transactional/non-transactional {ratio:.2}",
            r + 1
        );
    }

    let total = |rounds: &[Round]| Round {
        records: rounds.iter().map(|r| r.records).sum(),
        seconds: rounds.iter().map(|r| r.seconds).sum(),
        failed: rounds.iter().map(|r| r.failed).sum(),
        commits: rounds.iter().flat_map(|r| r.commits.clone()).collect(),
        blocked: rounds.iter().flat_map(|r| r.blocked.clone()).collect(),
        first_sends: rounds.iter().flat_map(|r| r.first_sends.clone()).collect(),
    };
    let (plain_total, txn_total) = (total(&plains), total(&txns));
    println!(
        "all rounds: {}",
        line("non-transactional", &plain_total, args.size)
    );
    println!(
        "all rounds: {}",
        line("transactional", &txn_total, args.size)
    );
    println!("all rounds: {}", waits(&txn_total));
    println!(
        "all rounds: transactional/non-transactional {:.2}",
        txn_total.rate() / plain_total.rate()
    );
    Ok(())
}
