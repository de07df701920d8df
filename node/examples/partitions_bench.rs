//! Many-partitions benchmark: the CPU an `oxbow dev` cluster spends per node while idle with
//! thousands of partitions, how long they take to get leaders, and what producing to every one
//! of them costs. A benchmark, not a test: it prints figures and ratios, and fails only when the
//! cluster does not work.
//!
//! It builds nothing: build the binary first, then run it.
//!
//! ```text
//! cargo build --release -p oxbow-node --bin oxbow
//! cargo run --release -p oxbow-node --example partitions_bench -- --partitions 9997
//! ```
//!
//! Phases, each measured over `--seconds`:
//! 1. baseline: the cluster idle with one topic of 3 partitions;
//! 2. idle: after creating `--partitions` more (one topic; with the 3 above, 10,000 replicas
//!    per node by default, `max_partitions_per_node`) and letting them settle;
//! 3. producing: one acks=all record to every partition, again and again, at
//!    `--produce-rate` records a second;
//! 4. idle again: after producing stops and the partitions settle.
//!
//! The CPU is the `oxbow dev` process's (user + system, from /proc), divided by its three
//! nodes; the figure per one-second sample is printed as percentiles of one core.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Idle CPU per node of an `oxbow dev` cluster with many partitions, and producing to all.
#[derive(Parser)]
struct Args {
    /// The oxbow binary (build it with `cargo build --release -p oxbow-node --bin oxbow`).
    #[arg(long, default_value = "target/release/oxbow")]
    oxbow: PathBuf,
    /// Partitions of the topic created after the baseline.
    #[arg(long, default_value_t = 9_997)]
    partitions: i32,
    /// Kafka port of the first node (the cluster uses it, the next two, and 10,000 higher).
    #[arg(long, default_value_t = 19_192)]
    port: u16,
    /// Seconds each phase is measured over.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds to let the partitions settle before an idle measurement.
    #[arg(long, default_value_t = 20)]
    settle: u64,
    /// Records a second while producing to every partition in turn.
    #[arg(long, default_value_t = 2_000)]
    produce_rate: u64,
}

/// The process's CPU time (user + system) in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces) closing with ')'.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // The clock tick is 100 Hz on Linux (sysconf(_SC_CLK_TCK)).
    ticks as f64 / 100.0
}

/// Resident memory in MiB, from /proc/PID/status.
fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// Per-second CPU of one node (the process's divided by three), in percent of a core, over
/// `seconds`; `during` runs between samples (producing, or nothing).
fn measure(pid: u32, seconds: u64, mut during: impl FnMut()) -> Vec<f64> {
    let mut samples = Vec::new();
    let mut last = (Instant::now(), cpu_seconds(pid));
    while samples.len() < seconds as usize {
        let until = last.0 + Duration::from_secs(1);
        while Instant::now() < until {
            during();
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(5)),
            );
        }
        let now = (Instant::now(), cpu_seconds(pid));
        let busy = (now.1 - last.1) / now.0.duration_since(last.0).as_secs_f64();
        samples.push(100.0 * busy / 3.0);
        last = now;
    }
    samples
}

struct Summary {
    mean: f64,
    p50: f64,
    p90: f64,
    max: f64,
}

fn summarize(mut samples: Vec<f64>) -> Summary {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((p / 100.0) * (samples.len() - 1) as f64).round() as usize];
    Summary {
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
        p50: at(50.0),
        p90: at(90.0),
        max: at(100.0),
    }
}

fn report(phase: &str, pid: u32, s: &Summary, baseline: Option<&Summary>) {
    let ratio = baseline.map_or(String::new(), |b| {
        format!("  ({:.1}x the baseline mean)", s.mean / b.mean.max(0.01))
    });
    println!(
        "{phase:<28} CPU per node, % of a core: mean {:>5.2}  p50 {:>5.2}  p90 {:>5.2}  max {:>5.2}{ratio}   RSS {:.0} MiB (3 nodes)",
        s.mean,
        s.p50,
        s.p90,
        s.max,
        resident_mib(pid)
    );
}

struct Cluster(Child);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Partitions of `topic` that have a leader, as the cluster's metadata says.
fn with_leaders(producer: &BaseProducer, topic: &str) -> usize {
    let Ok(metadata) = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
    else {
        return 0;
    };
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .filter(|p| p.leader() >= 0 && p.error().is_none())
        .count()
}

fn main() {
    let args = Args::parse();
    assert!(
        args.oxbow.exists(),
        "{} does not exist: build it with `cargo build --release -p oxbow-node --bin oxbow`, or pass --oxbow",
        args.oxbow.display()
    );
    let data = tempfile::tempdir().expect("temporary directory");
    let bootstrap = format!("127.0.0.1:{}", args.port);
    eprintln!("starting {} dev on {bootstrap}", args.oxbow.display());
    let mut child = Command::new(&args.oxbow)
        .args([
            "--log-level",
            "warning",
            "dev",
            "--topic",
            "base:3",
            "--port",
        ])
        .arg(args.port.to_string())
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start oxbow dev");
    let stdout = child.stdout.take().expect("piped");
    let cluster = Cluster(child);
    let pid = cluster.0.id();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("ready") => break,
            Some(Ok(_)) => {}
            _ => panic!("oxbow dev stopped before it was ready"),
        }
    }
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer");

    eprintln!(
        "settling {} s, then the baseline for {} s",
        args.settle, args.seconds
    );
    std::thread::sleep(Duration::from_secs(args.settle));
    let baseline = summarize(measure(pid, args.seconds, || {}));
    report("baseline (3 partitions)", pid, &baseline, None);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let topic = "many";
    let started = Instant::now();
    let created = block_on(admin.create_topics(
        &[NewTopic::new(
            topic,
            args.partitions,
            TopicReplication::Fixed(3),
        )],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(120))),
    ));
    for result in created.expect("CreateTopics") {
        result.expect("topic created");
    }
    loop {
        let led = with_leaders(&producer, topic);
        if led == args.partitions as usize {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {led} of {} partitions have a leader after 300 s",
            args.partitions
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "created {} partitions (3 replicas each): all have leaders {:.1} s after CreateTopics",
        args.partitions,
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(args.settle));
    let idle = summarize(measure(pid, args.seconds, || {}));
    report(
        &format!("idle ({} partitions)", args.partitions + 3),
        pid,
        &idle,
        Some(&baseline),
    );

    let value = vec![b'x'; 100];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let producing = summarize(measure(pid, args.seconds, || {
        let due = (started.elapsed().as_secs_f64() * args.produce_rate as f64) as u64;
        while sent < due {
            let partition = (sent % args.partitions as u64) as i32;
            let record = BaseRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(&value);
            if producer.send(record).is_err() {
                break;
            }
            sent += 1;
        }
        producer.poll(Duration::ZERO);
    }));
    producer
        .flush(Duration::from_secs(300))
        .expect("every record acknowledged");
    report(
        &format!("producing ({}/s, round robin)", args.produce_rate),
        pid,
        &producing,
        Some(&baseline),
    );
    println!(
        "produced {sent} records of 100 B, acks=all, to {} partitions{}",
        args.partitions.min(sent as i32),
        if sent >= args.partitions as u64 {
            " (every partition)"
        } else {
            ""
        }
    );
    std::thread::sleep(Duration::from_secs(args.settle));
    let after = summarize(measure(pid, args.seconds, || {}));
    report("idle after producing", pid, &after, Some(&baseline));
    drop(cluster);
}

/// Runs a future to completion on this thread (rdkafka's admin calls are futures).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}
