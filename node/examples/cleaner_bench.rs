//! The log cleaner's benchmark (issue 19, compacted topics): produce latency while the cleaner
//! works on a compacted topic beside the same figures without it, in the same run, with real
//! `oxbow node` processes and librdkafka. A check as well as a benchmark: it exits non-zero
//! when the p99 with the cleaner exceeds `--max-p99-ratio` (2) times the p99 without.
//!
//! Three `oxbow node` processes (logging at info into `<data-dir>/node-N.log`), a compacted
//! topic `compacted` (`--segment-bytes`) and a topic `latency` (one partition), 3 replicas
//! each. Each round:
//! 1. fill: `--fill-mib` MiB of updates over `--keys` keys into `compacted`, with its
//!    `min.compaction.lag.ms` at a day, so that the cleaner may not touch them yet;
//! 2. without the cleaner: `--seconds` of single-record produce to `latency` (acks=all,
//!    idempotent, one record in flight, so it measures latency, not throughput), while the
//!    dirty records are held back;
//! 3. with the cleaner: `min.compaction.lag.ms` goes to 0 (AlterConfigs), and once the
//!    cleaner has had `--cleaner-backoff-ms` to start, the same measurement again;
//! 4. the cleaner finishes (a `log cleaner cleaned a partition` line from every node for every
//!    partition) and the lag goes back to a day.
//!
//! That the cleaner works during the with-cleaner measurements and rests during the others is
//! checked from outside: the bytes the node processes read (`rchar` in /proc/PID/io; the
//! cleaner reads every dirty segment twice, producing reads nothing), the node logs' pass lines
//! and the data directories' bytes. A round that shows otherwise makes the run invalid (exit 3).
//!
//! Build first: `cargo build --release -p oxbow-node --bin oxbow --example cleaner_bench`, then
//! `target/release/examples/cleaner_bench` (see docs/performance.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// Produce latency while the log cleaner cleans a compacted topic, against the same without
/// it, in alternating rounds of one run; fails if p99 with it exceeds twice p99 without.
#[derive(Parser)]
struct Args {
    /// The oxbow binary.
    #[arg(long, default_value = "target/release/oxbow")]
    oxbow: PathBuf,
    /// Data directory (emptied first; the nodes' logs go there too).
    #[arg(long, default_value = "/tmp/oxbow-cleaner-bench")]
    data_dir: PathBuf,
    /// Kafka port of the first node (the others use the next two; peer ports are 100 higher).
    /// Below the ephemeral range (32768 up), where outgoing connections could hold it.
    #[arg(long, default_value_t = 21_500)]
    port: u16,
    /// Rounds; each measures once without the cleaner and once with it.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Seconds of each measurement.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// MiB of record values put into the compacted topic before each round.
    #[arg(long, default_value_t = 768)]
    fill_mib: u64,
    /// Bytes per value of the compacted topic's records.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Distinct keys of the compacted topic's records.
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Partitions of the compacted topic.
    #[arg(long, default_value_t = 1)]
    compacted_partitions: i32,
    /// The compacted topic's `segment.bytes` (a cleaning step rewrites one segment).
    #[arg(long, default_value_t = 16 << 20)]
    segment_bytes: u64,
    /// The nodes' `[log] cleaner_io_bytes_per_second`, in MiB.
    #[arg(long, default_value_t = 32)]
    cleaner_io_mib: u64,
    /// The nodes' `[log] cleaner_backoff_ms`.
    #[arg(long, default_value_t = 1_000)]
    cleaner_backoff_ms: u64,
    /// Bytes per value of the latency records.
    #[arg(long, default_value_t = 100)]
    latency_value_bytes: usize,
    /// Fail (exit 1) if p99 with the cleaner exceeds this many times p99 without.
    #[arg(long, default_value_t = 2.0)]
    max_p99_ratio: f64,
}

const COMPACTED: &str = "compacted";
const LATENCY: &str = "latency";
/// The compacted topic's `min.compaction.lag.ms` while its records are held back (a day).
const HOLD_MS: u64 = 86_400_000;
const PASS_LINE: &str = "log cleaner cleaned a partition";

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.data_dir);
    std::fs::create_dir_all(&args.data_dir).expect("data dir");
    let mut cluster = Cluster::start(&args);
    let bootstrap = format!("127.0.0.1:{}", args.port);
    wait_ready(&bootstrap);
    create_topics(&bootstrap, &args);
    let admin = admin(&bootstrap);
    wait_led(&bootstrap, COMPACTED);
    wait_led(&bootstrap, LATENCY);
    let latency = LatencyProducer::new(&bootstrap, args.latency_value_bytes);
    // Warm up the connection and the partition, then measure.
    latency.measure(Duration::from_secs(2));
    let mut without_all = Vec::new();
    let mut with_all = Vec::new();
    let mut rows = Vec::new();
    let mut valid = true;
    for round in 1..=args.rounds {
        let started = Instant::now();
        eprintln!(
            "round {round}: filling {} MiB into {COMPACTED}",
            args.fill_mib
        );
        let rate = fill(&bootstrap, &args, round);
        eprintln!(
            "round {round}: filled in {:.1} s ({rate:.0} MB/s); measuring without the cleaner",
            started.elapsed().as_secs_f64()
        );
        // Let the fill's last acknowledgements and replication settle.
        std::thread::sleep(Duration::from_secs(2));
        let before = cluster.activity();
        let without = latency.measure(Duration::from_secs(args.seconds));
        let idle = cluster.activity().since(&before);
        // The cleaner reads at up to `--cleaner-io-mib` on each node; replication and the
        // clients' requests read far less.
        let quiet = args.cleaner_io_mib as f64 / 4.0;
        let idle_ok = idle.passes == 0 && idle.read_mib_s < quiet;
        print_round(round, "without the cleaner", &without, &idle);
        if !idle_ok {
            println!("  INVALID: the cleaner was not idle during this measurement");
            valid = false;
        }
        set_lag(&admin, &args, 0);
        // The change goes through the metadata log; the cleaner looks every backoff.
        std::thread::sleep(Duration::from_millis(args.cleaner_backoff_ms + 1_000));
        let passes_expected = cluster.passes_per_node();
        let before = cluster.activity();
        let with = latency.measure(Duration::from_secs(args.seconds));
        let busy = cluster.activity().since(&before);
        print_round(round, "with the cleaner", &with, &busy);
        let still_busy = cluster
            .passes_per_node()
            .iter()
            .zip(&passes_expected)
            .filter(|(now, was)| **now < **was + args.compacted_partitions as usize)
            .count();
        println!("  nodes still cleaning at the measurement's end: {still_busy} of 3");
        if busy.read_mib_s < quiet && busy.passes == 0 {
            println!("  INVALID: the cleaner did not work during this measurement");
            valid = false;
        } else if still_busy == 0 {
            println!(
                "  note: every node finished cleaning before the measurement ended (raise --fill-mib)"
            );
        }
        rows.push((
            round,
            Summary::of(&without),
            Summary::of(&with),
            idle.clone(),
            busy.clone(),
        ));
        without_all.extend(without);
        with_all.extend(with);
        // Let the cleaner finish, then hold the next round's records back again.
        let waited = Instant::now();
        let target: Vec<usize> = passes_expected
            .iter()
            .map(|p| p + args.compacted_partitions as usize)
            .collect();
        while cluster
            .passes_per_node()
            .iter()
            .zip(&target)
            .any(|(now, want)| now < want)
        {
            if waited.elapsed() > Duration::from_secs(600) {
                println!("  INVALID: the cleaner did not finish in 600 s");
                valid = false;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "round {round}: the cleaner finished {:.1} s after the measurement; data directories {:.0} MiB",
            waited.elapsed().as_secs_f64(),
            cluster.data_bytes() as f64 / MIB
        );
        set_lag(&admin, &args, HOLD_MS);
        std::thread::sleep(Duration::from_secs(1));
    }
    cluster.stop();

    let without = Summary::of(&without_all);
    let with = Summary::of(&with_all);
    println!();
    println!("| round | without: p50 / p99 / p99.9 / max (ms), count | with: p50 / p99 / p99.9 / max (ms), count | p50 ratio | p99 ratio | cleaner reads with / without (MiB/s) |");
    println!("|---|---|---|---|---|---|");
    for (round, a, b, idle, busy) in &rows {
        println!(
            "| {round} | {} | {} | {:.2} | {:.2} | {:.1} / {:.1} |",
            a.cells(),
            b.cells(),
            b.p50 / a.p50,
            b.p99 / a.p99,
            busy.read_mib_s,
            idle.read_mib_s
        );
    }
    println!(
        "| all | {} | {} | {:.2} | {:.2} | |",
        without.cells(),
        with.cells(),
        with.p50 / without.p50,
        with.p99 / without.p99
    );
    let ratio = with.p99 / without.p99;
    println!(
        "p99 with the cleaner against without: {ratio:.2}x ({:.2} against {:.2} ms); p50 {:.2}x",
        with.p99,
        without.p99,
        with.p50 / without.p50
    );
    if !valid {
        println!("FAIL: a round did not show the cleaner busy (or idle) as it should");
        return ExitCode::from(3);
    }
    if ratio > args.max_p99_ratio {
        println!(
            "FAIL: p99 with the cleaner is over {} times p99 without",
            args.max_p99_ratio
        );
        return ExitCode::FAILURE;
    }
    println!(
        "ok: p99 with the cleaner within {} times p99 without",
        args.max_p99_ratio
    );
    ExitCode::SUCCESS
}

const MIB: f64 = (1u64 << 20) as f64;

fn print_round(round: u32, what: &str, micros: &[u64], activity: &Activity) {
    let s = Summary::of(micros);
    println!(
        "round {round} {what}: {} records, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
         node reads {:.1} MiB/s, passes finished {}, data directories {:.0} -> {:.0} MiB",
        s.count,
        s.p50,
        s.p99,
        s.p999,
        s.max,
        activity.read_mib_s,
        activity.passes,
        activity.bytes_before as f64 / MIB,
        activity.bytes_after as f64 / MIB
    );
}

/// Latency percentiles of one measurement, in milliseconds.
struct Summary {
    count: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Summary {
    fn of(micros: &[u64]) -> Self {
        let mut sorted = micros.to_vec();
        sorted.sort_unstable();
        let at = |p: f64| {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
            sorted[rank] as f64 / 1000.0
        };
        Self {
            count: sorted.len(),
            p50: at(50.0),
            p99: at(99.0),
            p999: at(99.9),
            max: at(100.0),
        }
    }

    fn cells(&self) -> String {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.1}, {}",
            self.p50, self.p99, self.p999, self.max, self.count
        )
    }
}

/// What the nodes did over a measurement.
#[derive(Clone)]
struct Activity {
    /// Bytes the three processes read (`rchar`: page cache hits included), a second, in MiB.
    read_mib_s: f64,
    /// Cleaner passes finished (across the nodes).
    passes: usize,
    bytes_before: u64,
    bytes_after: u64,
}

/// A snapshot of the nodes' counters.
struct Counters {
    rchar: u64,
    passes: usize,
    bytes: u64,
    at: Instant,
}

impl Counters {
    fn since(&self, before: &Counters) -> Activity {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-3);
        Activity {
            read_mib_s: self.rchar.saturating_sub(before.rchar) as f64 / MIB / secs,
            passes: self.passes - before.passes,
            bytes_before: before.bytes,
            bytes_after: self.bytes,
        }
    }
}

struct Cluster {
    nodes: Vec<Child>,
    dirs: Vec<PathBuf>,
    logs: Vec<PathBuf>,
}

impl Cluster {
    fn start(args: &Args) -> Self {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        let mut logs = Vec::new();
        for node in 1..=3u16 {
            let (config, dir) = write_config(args, node);
            let log = args.data_dir.join(format!("node-{node}.log"));
            let file = std::fs::File::create(&log).expect("log file");
            let child = Command::new(&args.oxbow)
                .args(["--log-level", "info", "node", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {}: {e} (build it first)",
                        args.oxbow.display()
                    )
                });
            nodes.push(child);
            dirs.push(dir);
            logs.push(log);
        }
        Self { nodes, dirs, logs }
    }

    /// Cleaner passes each node has logged so far; panics if a node has stopped.
    fn passes_per_node(&mut self) -> Vec<usize> {
        for (node, log) in self.nodes.iter_mut().zip(&self.logs) {
            if let Ok(Some(status)) = node.try_wait() {
                panic!("a node stopped ({status}); see {}", log.display());
            }
        }
        self.logs
            .iter()
            .map(|log| {
                std::fs::read_to_string(log)
                    .map(|text| text.lines().filter(|l| l.contains(PASS_LINE)).count())
                    .unwrap_or(0)
            })
            .collect()
    }

    fn data_bytes(&self) -> u64 {
        self.dirs.iter().map(|d| dir_bytes(d)).sum()
    }

    fn activity(&mut self) -> Counters {
        Counters {
            rchar: self.nodes.iter().map(|n| rchar(n.id())).sum(),
            passes: self.passes_per_node().iter().sum(),
            bytes: self.data_bytes(),
            at: Instant::now(),
        }
    }

    fn stop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bytes a process has read (`rchar` of /proc/PID/io: every read call, page cache hits
/// included).
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("rchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
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

/// Writes node `node`'s configuration; returns its path and the node's data directory.
fn write_config(args: &Args, node: u16) -> (PathBuf, PathBuf) {
    let peers: String = (1..=3u16)
        .filter(|p| *p != node)
        .map(|p| {
            format!(
                "[[peers]]\nid = {p}\npeer_address = \"127.0.0.1:{}\"\nkafka_address = \"127.0.0.1:{}\"\n\n",
                args.port + 100 + p,
                args.port + p - 1
            )
        })
        .collect();
    let dir = args.data_dir.join(format!("node-{node}"));
    let text = format!(
        "node_id = {node}\ndata_dir = \"{}\"\nkafka_listen = \"127.0.0.1:{}\"\n\
         peer_listen = \"127.0.0.1:{}\"\npeer_secret = \"the cleaner benchmark's cluster\"\n\n\
         {peers}[log]\ncleaner_backoff_ms = {}\ncleaner_io_bytes_per_second = {}\n",
        dir.display(),
        args.port + node - 1,
        args.port + 100 + node,
        args.cleaner_backoff_ms,
        args.cleaner_io_mib << 20,
    );
    let path = args.data_dir.join(format!("node-{node}.toml"));
    std::fs::write(&path, text).expect("write config");
    (path, dir)
}

/// Waits until a node answers Metadata.
fn wait_ready(bootstrap: &str) {
    let consumer = consumer(bootstrap);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok_and(|m| m.brokers().len() == 3)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the cluster did not serve within 60 s");
}

/// Waits until every partition of `topic` has a leader.
fn wait_led(bootstrap: &str, topic: &str) {
    let consumer = consumer(bootstrap);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            let led = metadata.topics().iter().all(|t| {
                !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if led {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{topic} got no leaders within 60 s");
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cleaner-bench")
        .create()
        .expect("consumer")
}

/// The compacted topic's configurations, with `min.compaction.lag.ms` at `lag_ms`.
fn compacted_configs(args: &Args, lag_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "compact".to_string()),
        ("segment.bytes", args.segment_bytes.to_string()),
        ("min.cleanable.dirty.ratio", "0.1".to_string()),
        ("min.compaction.lag.ms", lag_ms.to_string()),
    ]
}

/// Creates the two topics. Right after start-up the cluster may have no controller yet, and
/// librdkafka then waits for its next metadata refresh: each attempt is a new client.
fn create_topics(bootstrap: &str, args: &Args) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let admin = admin(bootstrap);
        let configs = compacted_configs(args, HOLD_MS);
        let mut compacted = NewTopic::new(
            COMPACTED,
            args.compacted_partitions,
            TopicReplication::Fixed(3),
        );
        for (key, value) in &configs {
            compacted = compacted.set(key, value);
        }
        let latency = NewTopic::new(LATENCY, 1, TopicReplication::Fixed(3));
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        let outcome = block_on(admin.create_topics(&[compacted, latency], &options));
        let created = match outcome {
            Ok(results) => results.into_iter().all(|r| match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => true,
                Err((topic, code)) => {
                    eprintln!("  creating {topic}: {code}; again");
                    false
                }
            }),
            Err(e) => {
                eprintln!("  CreateTopics: {e}; again");
                false
            }
        };
        if created {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the topics were not created in 120 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// Sets the compacted topic's `min.compaction.lag.ms` (AlterConfigs replaces the topic's
/// configurations, so all of them go again).
fn set_lag(admin: &AdminClient<DefaultClientContext>, args: &Args, lag_ms: u64) {
    let configs = compacted_configs(args, lag_ms);
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(COMPACTED));
    for (key, value) in &configs {
        alter = alter.set(key, value);
    }
    let results = block_on(admin.alter_configs(&[alter], &AdminOptions::new()));
    for result in results.expect("AlterConfigs") {
        result.expect("configuration altered");
    }
}

/// Puts `--fill-mib` MiB of updates over `--keys` keys into the compacted topic; returns MB/s.
fn fill(bootstrap: &str, args: &Args, round: u32) -> f64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer");
    let records = (args.fill_mib << 20) / args.value_bytes as u64;
    // Values differ by round and record, so nothing compresses or deduplicates by accident.
    let mut value = vec![b'x'; args.value_bytes];
    let started = Instant::now();
    let mut last = Instant::now();
    for i in 0..records {
        let key = format!("key-{}", i % args.keys);
        let stamp = format!("{round}:{i}:");
        let n = stamp.len().min(value.len());
        value[..n].copy_from_slice(&stamp.as_bytes()[..n]);
        while producer
            .send(BaseRecord::to(COMPACTED).key(&key).payload(&value[..]))
            .is_err()
        {
            producer.poll(Duration::from_millis(1));
        }
        if i % 1_000 == 0 {
            producer.poll(Duration::ZERO);
        }
        if last.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {:.0} MiB sent, {:.0} s",
                i as f64 * args.value_bytes as f64 / MIB,
                started.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("every fill record acknowledged");
    (records * args.value_bytes as u64) as f64 / started.elapsed().as_secs_f64() / 1e6
}

struct Deliveries {
    micros: Mutex<Vec<u64>>,
    failed: Mutex<u64>,
}

struct Context(Arc<Deliveries>);

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

/// One producer of single records to the latency topic, one in flight at a time.
struct LatencyProducer {
    producer: BaseProducer<Context>,
    deliveries: Arc<Deliveries>,
    value: Vec<u8>,
}

impl LatencyProducer {
    fn new(bootstrap: &str, value_bytes: usize) -> Self {
        let deliveries = Arc::new(Deliveries {
            micros: Mutex::new(Vec::new()),
            failed: Mutex::new(0),
        });
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "60000")
            .create_with_context(Context(deliveries.clone()))
            .expect("producer");
        Self {
            producer,
            deliveries,
            value: vec![b'v'; value_bytes],
        }
    }

    fn done(&self) -> usize {
        self.deliveries.micros.lock().expect("lock").len()
            + *self.deliveries.failed.lock().expect("lock") as usize
    }

    /// Sends one record at a time for `length`; returns each acknowledgement's latency (µs).
    fn measure(&self, length: Duration) -> Vec<u64> {
        self.deliveries.micros.lock().expect("lock").clear();
        *self.deliveries.failed.lock().expect("lock") = 0;
        let started = Instant::now();
        let mut sent = 0usize;
        while started.elapsed() < length {
            let mut opaque = Box::new(Instant::now());
            loop {
                match self.producer.send(
                    BaseRecord::with_opaque_to(LATENCY, opaque)
                        .key("k")
                        .payload(&self.value[..]),
                ) {
                    Ok(()) => break,
                    Err((_, record)) => {
                        opaque = record.delivery_opaque;
                        self.producer.poll(Duration::from_millis(1));
                    }
                }
            }
            sent += 1;
            while self.done() < sent {
                self.producer.poll(Duration::from_micros(50));
            }
        }
        let failed = *self.deliveries.failed.lock().expect("lock");
        assert_eq!(failed, 0, "{failed} latency records failed");
        std::mem::take(&mut *self.deliveries.micros.lock().expect("lock"))
    }
}

/// Runs a future to completion on this thread (rdkafka's admin calls are futures).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}
