//! Produce benchmark with the oxbow client against a running cluster: records/s, MB/s and
//! acknowledgement latency percentiles (p50, p99, p999), acks=all with idempotence.
//!
//! Start a cluster (`cargo run --release -p oxbow-node --bin oxbow -- dev`), then:
//! `cargo run --release -p oxbow-client --example produce_bench -- --records 500000 --size 100`
//! and, for latency, `... -- --records 5000 --in-flight 1 --linger-ms 0`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::Parser;
use oxbow_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};

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
    /// Linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Most records sent but not yet acknowledged. `--in-flight 1 --linger-ms 0` measures
    /// single-record acknowledgement latency.
    #[arg(long, default_value_t = 200_000)]
    in_flight: usize,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
    let producer = Producer::new(client, config)?;
    let value = bytes::Bytes::from(vec![b'x'; args.size]);
    let mut waiting = VecDeque::new();
    let mut micros = Vec::with_capacity(args.records as usize);
    let mut failed = 0u64;
    let start = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..args.records {
        while waiting.len() >= args.in_flight.max(1) {
            let (sent, wait): (Instant, _) = waiting.pop_front().expect("non-empty");
            match wait.await {
                Ok(_) => micros.push(sent.elapsed().as_micros() as u64),
                Err(_) => failed += 1,
            }
        }
        let record = ProducerRecord::new(&args.topic, value.clone());
        waiting.push_back((Instant::now(), producer.send(record).await?));
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("{i} records sent, {} acknowledged", micros.len());
            last_report = Instant::now();
        }
    }
    for (sent, wait) in waiting {
        match wait.await {
            Ok(_) => micros.push(sent.elapsed().as_micros() as u64),
            Err(_) => failed += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    micros.sort_unstable();
    let acked = micros.len() as f64;
    println!(
        "records {} size {} B in-flight {} linger {} ms: {:.0} records/s, {:.1} MB/s, ack latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms, failed {}",
        args.records,
        args.size,
        args.in_flight,
        args.linger_ms,
        acked / elapsed,
        acked * args.size as f64 / elapsed / 1e6,
        percentile(&micros, 0.5) as f64 / 1e3,
        percentile(&micros, 0.99) as f64 / 1e3,
        percentile(&micros, 0.999) as f64 / 1e3,
        micros.last().copied().unwrap_or(0) as f64 / 1e3,
        failed
    );
    Ok(())
}
