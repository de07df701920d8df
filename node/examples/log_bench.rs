//! The disk-resident log's benchmark (issue: the log lives on disk): real `oxbow` processes,
//! third-party client (librdkafka through rdkafka), numbers measured from outside.
//!
//! `store`: produce `--gib` GiB of `--size`-byte records to `oxbow dev` (three nodes, one
//! process), then kill it (SIGKILL) and start it again, and read everything back from offset 0.
//! Prints produce throughput, the process's peak resident memory while producing and while
//! restarting, the time until the restarted process serves a fetch from offset 0, and the
//! consumer's rate. With `--baseline PATH` it first runs the same on `--baseline-gib` GiB with
//! another `oxbow` binary (an older build) and prints the ratio of the throughputs.
//!
//! `catch-up`: three `oxbow node` processes; node 3 is stopped while `--gib` GiB go in, then
//! started again; prints how fast its data directory grows back to the leader's size (fed from
//! the leader's files).
//!
//! Build first: `cargo build --release -p oxbow-node --bin oxbow --example log_bench`, then e.g.
//! `target/release/examples/log_bench store --gib 10` (see docs/performance.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

#[derive(Parser)]
#[command(about = "Benchmarks of oxbow's disk-resident log with real processes and librdkafka")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce to `oxbow dev`, kill and restart it, read everything back.
    Store {
        #[command(flatten)]
        common: Common,
        /// One record per batch (linger.ms=0, batch.num.messages=1) instead of the client's
        /// default batching.
        #[arg(long)]
        one_per_batch: bool,
        /// Another oxbow binary to measure first, as the baseline.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// GiB produced to the baseline.
        #[arg(long, default_value_t = 2.0)]
        baseline_gib: f64,
    },
    /// Stop a follower while data goes in, start it again, and time its catch-up.
    CatchUp {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The oxbow binary.
    #[arg(long, default_value = "target/release/oxbow")]
    oxbow: PathBuf,
    /// GiB of record values to produce.
    #[arg(long, default_value_t = 1.0)]
    gib: f64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Data directory (emptied first).
    #[arg(long, default_value = "/tmp/oxbow-log-bench")]
    data_dir: PathBuf,
    /// Kafka port of the first node.
    #[arg(long, default_value_t = 39_400)]
    port: u16,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
}

const TOPIC: &str = "bench";

fn main() {
    let args = Args::parse();
    match args.command {
        Cmd::Store {
            common,
            one_per_batch,
            baseline,
            baseline_gib,
        } => {
            let base = baseline.map(|binary| {
                let mut c = common.clone();
                c.oxbow = binary;
                c.gib = baseline_gib;
                println!("== baseline: {} on {baseline_gib} GiB", c.oxbow.display());
                store(&c, one_per_batch)
            });
            println!("== {} on {} GiB", common.oxbow.display(), common.gib);
            let ours = store(&common, one_per_batch);
            if let Some(base) = base {
                println!(
                    "produce throughput against the baseline: {:.2}x ({:.1} against {:.1} MB/s)",
                    ours / base,
                    ours,
                    base
                );
            }
        }
        Cmd::CatchUp { common } => catch_up(&common),
    }
}

/// Runs the store benchmark; returns the produce throughput (MB/s).
fn store(c: &Common, one_per_batch: bool) -> f64 {
    let _ = std::fs::remove_dir_all(&c.data_dir);
    let bootstrap = format!("127.0.0.1:{}", c.port);
    let mut process = start_dev(c);
    let rss = RssSampler::start(process.id());
    wait_serving(&bootstrap);
    let produced = produce(&bootstrap, c, one_per_batch);
    let peak_producing = rss.peak_mib();
    println!(
        "produce: {:.1} MB/s ({:.0} records/s), peak resident memory {:.0} MiB",
        produced.0, produced.1, peak_producing
    );
    rss.stop();
    kill(&mut process);
    let on_disk = dir_bytes(&c.data_dir);
    println!("on disk: {:.2} GiB", on_disk as f64 / (1u64 << 30) as f64);
    // Restart: time until a fetch from offset 0 returns a record.
    let restarted = Instant::now();
    let mut process = start_dev(c);
    let rss = RssSampler::start(process.id());
    let consumer = reader(&bootstrap, c.partitions);
    let mut first = None;
    let mut bytes = 0u64;
    let mut records = 0u64;
    let wanted = (c.gib * (1u64 << 30) as f64) as u64 / c.size as u64 * c.size as u64;
    let mut read_started = Instant::now();
    let mut last_progress = Instant::now();
    let mut consumer_errors = 0u64;
    while bytes < wanted {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if first.is_none() {
                    let took = restarted.elapsed();
                    println!(
                        "restart: serving a fetch from offset 0 after {:.2} s ({consumer_errors} \
                         client errors while it started)",
                        took.as_secs_f64()
                    );
                    first = Some(took);
                    read_started = Instant::now();
                }
                bytes += message.payload().map_or(0, |p| p.len() as u64);
                records += 1;
                if last_progress.elapsed() > Duration::from_secs(10) {
                    eprintln!("  read {:.2} GiB", bytes as f64 / (1u64 << 30) as f64);
                    last_progress = Instant::now();
                }
            }
            // Expected while the restarted nodes start; counted, not printed.
            Some(Err(_)) => consumer_errors += 1,
            None => {
                if restarted.elapsed() > Duration::from_secs(600) && first.is_none() {
                    panic!("the restarted cluster served nothing in 10 minutes");
                }
            }
        }
    }
    let read_secs = read_started.elapsed().as_secs_f64();
    println!(
        "consume from offset 0 after the restart: {records} records, {:.1} MB/s; peak resident \
         memory since the restart {:.0} MiB",
        bytes as f64 / read_secs / 1e6,
        rss.peak_mib()
    );
    rss.stop();
    kill(&mut process);
    produced.0
}

fn start_dev(c: &Common) -> Child {
    Command::new(&c.oxbow)
        .args([
            "--log-level",
            "warning",
            "dev",
            "--port",
            &c.port.to_string(),
        ])
        .arg("--data-dir")
        .arg(&c.data_dir)
        .args(["--topic", &format!("{TOPIC}:{}", c.partitions)])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it first)", c.oxbow.display()))
}

fn kill(process: &mut Child) {
    let _ = process.kill();
    let _ = process.wait();
}

/// Waits until the cluster answers Metadata for the topic with a leader for every partition.
fn wait_serving(bootstrap: &str) {
    let consumer = consumer(bootstrap);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(metadata) = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(2)) {
            let led = metadata.topics().iter().all(|t| {
                !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if led {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the cluster did not serve within 60 s");
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "log-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .expect("consumer");
    consumer
}

/// A consumer of every partition of the topic from offset 0.
fn reader(bootstrap: &str, partitions: u32) -> BaseConsumer {
    let consumer = consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .expect("add");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

struct Acked(Arc<AtomicU64>, Arc<AtomicU64>);

impl ClientContext for Acked {}

impl ProducerContext for Acked {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.1.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Produces `c.gib` GiB; returns (MB/s, records/s).
fn produce(bootstrap: &str, c: &Common, one_per_batch: bool) -> (f64, f64) {
    let (acked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "300000");
    if one_per_batch {
        config.set("linger.ms", "0").set("batch.num.messages", "1");
    }
    let producer: BaseProducer<Acked> = config
        .create_with_context(Acked(acked.clone(), failed.clone()))
        .expect("producer");
    let records = (c.gib * (1u64 << 30) as f64) as u64 / c.size as u64;
    let value = vec![b'x'; c.size];
    let start = Instant::now();
    let mut last = Instant::now();
    for i in 0..records {
        let key = (i % 1024).to_string();
        while let Err((_, _)) = producer.send(
            BaseRecord::<String, [u8]>::to(TOPIC)
                .key(&key)
                .payload(&value[..]),
        ) {
            producer.poll(Duration::from_millis(1));
        }
        if i % 1_000 == 0 {
            producer.poll(Duration::ZERO);
        }
        if last.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:.2} GiB acknowledged, {:.0} s",
                acked.load(Ordering::Relaxed) as f64 * c.size as f64 / (1u64 << 30) as f64,
                start.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} records failed");
    let acked = acked.load(Ordering::Relaxed) as f64;
    (acked * c.size as f64 / secs / 1e6, acked / secs)
}

/// Samples a process's resident memory every 100 ms and keeps the peak.
struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, done) = (peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { peak_kib, stop }
    }

    fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Three `oxbow node` processes: stop node 3, produce, start it, time its catch-up.
fn catch_up(c: &Common) {
    let _ = std::fs::remove_dir_all(&c.data_dir);
    std::fs::create_dir_all(&c.data_dir).expect("data dir");
    let configs: Vec<PathBuf> = (1..=3u16).map(|n| write_config(c, n)).collect();
    let mut nodes: Vec<Child> = configs.iter().map(|f| start_node(c, f)).collect();
    let bootstrap = format!("127.0.0.1:{}", c.port);
    wait_serving(&bootstrap);
    // A leader on every partition that is not node 3 is what this wants: node 3 is stopped,
    // so the others lead.
    kill(&mut nodes[2]);
    let produced = produce(&bootstrap, c, false);
    println!("produced while node 3 was down: {:.1} MB/s", produced.0);
    let leader_dir = c.data_dir.join("node-1");
    let follower_dir = c.data_dir.join("node-3");
    let target = dir_bytes(&leader_dir);
    let before = dir_bytes(&follower_dir);
    let started = Instant::now();
    nodes[2] = start_node(c, &configs[2]);
    let mut last = Instant::now();
    loop {
        let now = dir_bytes(&follower_dir);
        if now + (target / 100) >= target {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "catch-up: {:.2} GiB in {secs:.1} s, {:.1} MB/s (data directory of node 3 against node 1's)",
                (now - before) as f64 / (1u64 << 30) as f64,
                (now - before) as f64 / secs / 1e6
            );
            break;
        }
        if last.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  node 3 at {:.2} of {:.2} GiB",
                now as f64 / (1u64 << 30) as f64,
                target as f64 / (1u64 << 30) as f64
            );
            last = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(1_800) {
            panic!("node 3 did not catch up in 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in &mut nodes {
        kill(node);
    }
}

fn write_config(c: &Common, node: u16) -> PathBuf {
    let peers: String = (1..=3u16)
        .filter(|p| *p != node)
        .map(|p| {
            format!(
                "[[peers]]\nid = {p}\npeer_address = \"127.0.0.1:{}\"\nkafka_address = \"127.0.0.1:{}\"\n\n",
                c.port + 100 + p,
                c.port + p - 1
            )
        })
        .collect();
    let text = format!(
        "node_id = {node}\ndata_dir = \"{}\"\nkafka_listen = \"127.0.0.1:{}\"\npeer_listen = \"127.0.0.1:{}\"\npeer_secret = \"the log benchmark's cluster\"\n\n{peers}[[topics]]\nname = \"{TOPIC}\"\npartitions = {}\nreplication_factor = 3\n",
        c.data_dir.join(format!("node-{node}")).display(),
        c.port + node - 1,
        c.port + 100 + node,
        c.partitions
    );
    let path = c.data_dir.join(format!("node-{node}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_node(c: &Common, config: &Path) -> Child {
    // Its warnings (peers down while node 3 is stopped) go next to its configuration.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .expect("log file");
    Command::new(&c.oxbow)
        .args(["--log-level", "warning", "node", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it first)", c.oxbow.display()))
}
