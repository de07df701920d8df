//! Produce benchmark with librdkafka (rdkafka) against a running cluster: records/s, MB/s and
//! acknowledgement latency percentiles, acks=all with idempotence.
//!
//! Start a cluster (`cargo run --release -p oxbow-node --bin oxbow -- dev`), then:
//! `cargo run --release -p oxbow-node --example produce_bench -- --records 500000 --size 100`
//! and, for latency, `... -- --records 5000 --in-flight 1 --linger-ms 0`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

/// Produce benchmark: acks=all, idempotent, batching producer.
#[derive(Parser)]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic (must exist).
    #[arg(long, default_value = "events")]
    topic: String,
    /// Records to send.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// librdkafka linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Most records sent but not yet acknowledged (0: no limit). `--in-flight 1 --linger-ms 0`
    /// measures single-record acknowledgement latency.
    #[arg(long, default_value_t = 0)]
    in_flight: u64,
}

struct Latencies {
    micros: Mutex<Vec<u64>>,
    failed: Mutex<u64>,
}

struct Context(Arc<Latencies>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(_) => self
                .0
                .micros
                .lock()
                .expect("lock")
                .push(sent.elapsed().as_micros() as u64),
            Err(_) => *self.0.failed.lock().expect("lock") += 1,
        }
    }
}

/// Records acknowledged or failed so far.
fn done(latencies: &Latencies) -> u64 {
    latencies.micros.lock().expect("lock").len() as u64 + *latencies.failed.lock().expect("lock")
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let latencies = Arc::new(Latencies {
        micros: Mutex::new(Vec::with_capacity(args.records as usize)),
        failed: Mutex::new(0),
    });
    let producer: BaseProducer<Context> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create_with_context(Context(latencies.clone()))
        .expect("producer");
    let value = vec![b'x'; args.size];
    eprintln!(
        "producing {} records of {} bytes to {} at {}",
        args.records, args.size, args.topic, args.bootstrap
    );
    let start = Instant::now();
    for i in 0..args.records {
        // Wait until fewer than `in_flight` records are unacknowledged.
        while args.in_flight > 0 && i - done(&latencies) >= args.in_flight {
            producer.poll(Duration::from_micros(50));
        }
        let key = (i % 1024).to_string();
        let mut opaque = Box::new(Instant::now());
        loop {
            match producer.send(
                BaseRecord::with_opaque_to(&args.topic, opaque)
                    .key(&key)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err((_, record)) => {
                    opaque = record.delivery_opaque;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        if i % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
        if i > 0 && i % (args.records / 10).max(1) == 0 {
            eprintln!("  {i} sent, {:.1} s", start.elapsed().as_secs_f64());
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let elapsed = start.elapsed().as_secs_f64();
    let mut micros = latencies.micros.lock().expect("lock").clone();
    micros.sort_unstable();
    let acknowledged = micros.len() as f64;
    println!(
        "records: {} acknowledged, {} failed, in {elapsed:.2} s",
        micros.len(),
        latencies.failed.lock().expect("lock")
    );
    println!(
        "throughput: {:.0} records/s, {:.1} MB/s of values",
        acknowledged / elapsed,
        acknowledged * args.size as f64 / elapsed / 1e6
    );
    println!(
        "ack latency (ms): p50 {:.2}  p99 {:.2}  p999 {:.2}  max {:.2}",
        percentile(&micros, 50.0),
        percentile(&micros, 99.0),
        percentile(&micros, 99.9),
        percentile(&micros, 100.0)
    );
}
