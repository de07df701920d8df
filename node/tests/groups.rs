//! End-to-end consumer groups: rdkafka (librdkafka) consumers in one group on a three-node
//! cluster of real `oxbow node` processes. Three members share six partitions, one is killed
//! with SIGKILL mid-run (its session must expire), and a fourth joins later. Every record is
//! consumed, the assignment rebalances after each change, and the group's committed offsets
//! never go back.
//!
//! Members are processes, so that one can be killed: the test runs this test binary again
//! with `OXBOW_TEST_GROUP_MEMBER` set, and `group_member_process` is then the member.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, TopicPartitionList};

mod common;
use common::{Cluster, PARTITIONS, TOPIC};

const GROUP: &str = "e2e-group";
const MEMBER_ENV: &str = "OXBOW_TEST_GROUP_MEMBER";
const PER_PHASE: usize = 300;

/// The body of a member process (see the module documentation); returns at once in a normal
/// test run. Prints `assignment P,Q,..` when its assignment changes and `record V` per record
/// before committing its offset (synchronously, after each poll that returned one).
#[test]
fn group_member_process() {
    let Ok(bootstrap) = std::env::var(MEMBER_ENV) else {
        return;
    };
    let consumer: BaseConsumer<MemberContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("debug", "cgrp")
        .set_log_level(RDKafkaLogLevel::Debug)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", "range")
        .create_with_context(MemberContext)
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    // libtest has printed `test group_member_process ... ` without a newline: end that line,
    // so the first report is a line of its own.
    println!();
    let mut last: Option<Vec<i32>> = None;
    loop {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let value = String::from_utf8_lossy(message.payload().expect("value")).into_owned();
            println!("record {value}");
            // A rebalance may have taken the partition: the next owner reads from the last
            // committed offset, so nothing is lost (and a record may be read twice).
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
        let mut assignment: Vec<i32> = consumer
            .assignment()
            .expect("assignment")
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        assignment.sort();
        if last.as_ref() != Some(&assignment) {
            let list: Vec<String> = assignment.iter().map(i32::to_string).collect();
            println!("assignment {}", list.join(","));
            last = Some(assignment);
        }
    }
}

/// Sends librdkafka's log (with `debug=cgrp`: the group protocol) to the member's stderr,
/// which the test keeps in the cluster directory.
struct MemberContext;

impl ClientContext for MemberContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("{level:?} {fac} {log_message}");
    }
}

impl ConsumerContext for MemberContext {}

#[derive(Default)]
struct Seen {
    assignment: Vec<i32>,
    records: Vec<usize>,
}

/// A member process and what it printed.
struct Member {
    child: Child,
    seen: Arc<Mutex<Seen>>,
}

impl Member {
    fn start(cluster: &Cluster, number: usize) -> Self {
        let log = std::fs::File::create(cluster.dir.path().join(format!("member-{number}.log")))
            .expect("member log");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "group_member_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MEMBER_ENV, cluster.bootstrap())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start a member");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let out = child.stdout.take().expect("piped");
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let mut seen = sink.lock().expect("lock");
                if let Some(list) = line.strip_prefix("assignment ") {
                    seen.assignment = list
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|p| p.parse().expect("partition"))
                        .collect();
                } else if let Some(value) = line.strip_prefix("record ") {
                    seen.records.push(value.parse().expect("record value"));
                }
            }
        });
        Self { child, seen }
    }

    fn assignment(&self) -> Vec<i32> {
        self.seen.lock().expect("lock").assignment.clone()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the members' assignments are disjoint, cover every partition, and give each a share.
fn covered(members: &[Member]) -> bool {
    let mut all = Vec::new();
    for member in members {
        let mine = member.assignment();
        if mine.is_empty() {
            return false;
        }
        all.extend(mine);
    }
    all.sort();
    all == (0..PARTITIONS).collect::<Vec<_>>()
}

/// Waits until `covered`; the failure shows every member's assignment.
fn wait_covered(what: &str, members: &[Member]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !covered(members) {
        let now: Vec<Vec<i32>> = members.iter().map(Member::assignment).collect();
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; assignments: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn consumed(members: &[Member], upto: usize) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    for member in members {
        seen.extend(member.seen.lock().expect("lock").records.iter().copied());
    }
    (0..upto).all(|i| seen.contains(&i))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn produce(cluster: &Cluster, from: usize, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for i in from..from + count {
        let value = i.to_string();
        let partition = (i % PARTITIONS as usize) as i32;
        producer
            .send(
                BaseRecord::<(), _>::to(TOPIC)
                    .payload(&value)
                    .partition(partition),
            )
            .expect("queued");
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every record acknowledged");
}

/// Reads the group's committed offsets twice a second; records every offset that went back.
struct CommitWatch {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<BTreeMap<i32, i64>>>,
    backwards: Arc<Mutex<Vec<(i32, i64, i64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommitWatch {
    fn start(cluster: &Cluster) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("group.id", GROUP)
            .create()
            .expect("watching consumer");
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(BTreeMap::new()));
        let backwards = Arc::new(Mutex::new(Vec::new()));
        let (s, l, b) = (stop.clone(), last.clone(), backwards.clone());
        let thread = std::thread::spawn(move || {
            let mut partitions = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                partitions.add_partition(TOPIC, p);
            }
            while !s.load(Ordering::Relaxed) {
                if let Ok(committed) =
                    consumer.committed_offsets(partitions.clone(), Duration::from_secs(5))
                {
                    let mut last = l.lock().expect("lock");
                    for e in committed.elements() {
                        let Some(offset) = e.offset().to_raw().filter(|o| *o >= 0) else {
                            continue;
                        };
                        let before = last.get(&e.partition()).copied().unwrap_or(-1);
                        if offset < before {
                            b.lock()
                                .expect("lock")
                                .push((e.partition(), before, offset));
                        }
                        last.insert(e.partition(), offset.max(before));
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Self {
            stop,
            last,
            backwards,
            thread: Some(thread),
        }
    }

    fn total(&self) -> i64 {
        self.last.lock().expect("lock").values().sum()
    }
}

impl Drop for CommitWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_group_shares_partitions_survives_a_killed_member_and_takes_a_new_one() {
    let cluster = Cluster::start();
    let minute = Duration::from_secs(60);
    let mut members: Vec<Member> = (0..3).map(|n| Member::start(&cluster, n)).collect();
    let watch = CommitWatch::start(&cluster);

    wait_covered("three members share the six partitions", &members);
    assert!(members.iter().all(|m| m.assignment().len() == 2));
    produce(&cluster, 0, PER_PHASE);
    wait_until("phase one is consumed", minute, || {
        consumed(&members, PER_PHASE)
    });

    // SIGKILL: the member never leaves; its session must expire.
    let mut killed = members.remove(0);
    killed.child.kill().expect("SIGKILL");
    killed.child.wait().expect("reaped");
    assert!(!killed.alive());
    produce(&cluster, PER_PHASE, PER_PHASE);
    wait_covered("two members share the partitions", &members);
    members.push(killed); // what it consumed still counts
    wait_until("phase two is consumed", minute, || {
        consumed(&members, 2 * PER_PHASE)
    });

    // A fourth member joins and gets a share.
    let dead = members.remove(members.len() - 1);
    members.push(Member::start(&cluster, 3));
    wait_covered("the new member gets partitions", &members);
    members.push(dead);
    produce(&cluster, 2 * PER_PHASE, PER_PHASE);
    wait_until("phase three is consumed", minute, || {
        consumed(&members, 3 * PER_PHASE)
    });
    wait_until("every record's offset is committed", minute, || {
        watch.total() == (3 * PER_PHASE) as i64
    });
    let backwards = watch.backwards.lock().expect("lock").clone();
    assert!(
        backwards.is_empty(),
        "committed offsets went back: {backwards:?}"
    );
}

/// A consumer of `group` asking for a session of `session_ms` (librdkafka's
/// `session.timeout.ms`): polls for up to 30 s and returns its assignment and how long it took
/// to get it, or the first consumer error.
fn join_with_session(
    cluster: &Cluster,
    group: &str,
    session_ms: u32,
) -> Result<(Vec<i32>, Duration), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", group)
        .set("session.timeout.ms", session_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_ms / 3).min(3_000).to_string(),
        )
        .set("partition.assignment.strategy", "range")
        .create()
        .expect("consumer");
    let start = Instant::now();
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
            return Err(error.to_string());
        }
        let assignment = consumer.assignment().expect("assignment");
        if assignment.count() > 0 {
            let mut partitions: Vec<i32> = assignment
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect();
            partitions.sort();
            return Ok((partitions, start.elapsed()));
        }
    }
    Err("neither an assignment nor an error".into())
}

fn refused_for_its_session(result: Result<(Vec<i32>, Duration), String>) {
    let error = result.expect_err("refused");
    assert!(
        error.contains("InvalidSessionTimeout"),
        "refused for its session timeout: {error}"
    );
}

/// The broker's `[groups]` settings against librdkafka consumers. With Kafka's defaults a
/// consumer asking for a 1 s session is refused (INVALID_SESSION_TIMEOUT), and a lone
/// consumer's first JoinGroup is answered only after the 3 s initial rebalance delay. With
/// the minimum lowered to 1000 (as test setups lower `group.min.session.timeout.ms`), the
/// maximum to 60 s and no delay, the 1 s session joins and gets every partition and a 120 s one
/// is refused. DescribeConfigs of the broker shows the settings under Kafka's names.
#[test]
fn session_timeouts_and_the_initial_delay_follow_the_broker_settings() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let every_partition = (0..PARTITIONS).collect::<Vec<_>>();

    let cluster = Cluster::start();
    refused_for_its_session(join_with_session(&cluster, "short-sessions", 1_000));
    let (partitions, took) =
        join_with_session(&cluster, "patient", 6_000).expect("6 s is Kafka's minimum");
    assert_eq!(partitions, every_partition);
    assert!(
        took >= Duration::from_secs(3),
        "the first rebalance waits Kafka's initial delay: {took:?}"
    );
    drop(cluster);

    let cluster = Cluster::start_with(
        "[groups]\nmin_session_timeout_ms = 1000\nmax_session_timeout_ms = 60000\ninitial_rebalance_delay_ms = 0\n",
    );
    let (partitions, _) =
        join_with_session(&cluster, "short-sessions", 1_000).expect("1 s is allowed here");
    assert_eq!(partitions, every_partition);
    refused_for_its_session(join_with_session(&cluster, "long-sessions", 120_000));

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .create()
        .expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let described = runtime
        .block_on(admin.describe_configs(&[ResourceSpecifier::Broker(1)], &options))
        .expect("describe configs");
    let broker = described[0].as_ref().expect("broker configs");
    let value = |name: &str| {
        broker
            .entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("{name} is listed"))
    };
    assert_eq!(value("group.min.session.timeout.ms"), "1000");
    assert_eq!(value("group.max.session.timeout.ms"), "60000");
    assert_eq!(value("group.initial.rebalance.delay.ms"), "0");
    assert_eq!(value("offsets.retention.minutes"), "10080");
    assert_eq!(value("num.partitions"), "1");
    assert_eq!(value("default.replication.factor"), "3");
    assert_eq!(value("auto.create.topics.enable"), "false");
    assert_eq!(value("offsets.topic.num.partitions"), "8");
    assert_eq!(value("transaction.state.log.num.partitions"), "8");
    assert_eq!(value("transaction.max.timeout.ms"), "900000");
}

/// `offsets.retention.minutes` (`[groups] offsets_retention_minutes`) against librdkafka: a
/// standalone consumer's committed offset (it commits without joining, so its group has no
/// members) is there 45 s later, and gone once the minute has passed since it was committed.
#[test]
fn an_empty_groups_offsets_expire_after_offsets_retention_minutes() {
    // 200 ms ticks: on a loaded machine 50 ms ticks can let the coordinator partition change
    // leader. A new leader counts the retention period from the stored commit time
    // (core/tests/groups.rs shows it), so the wait below allows only for a loaded machine.
    let cluster = Cluster::start_with("tick_ms = 200\n[groups]\noffsets_retention_minutes = 1\n");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "standalone")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(TOPIC, 0, rdkafka::Offset::Offset(5))
        .expect("offset");
    let committed_at = Instant::now();
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("offset commit");
    let committed = || -> Option<i64> {
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(TOPIC, 0);
        let fetched = consumer
            .committed_offsets(partitions, Duration::from_secs(10))
            .expect("offset fetch");
        fetched.elements()[0].offset().to_raw().filter(|o| *o >= 0)
    };
    assert_eq!(committed(), Some(5));
    std::thread::sleep(Duration::from_secs(45).saturating_sub(committed_at.elapsed()));
    assert_eq!(committed(), Some(5), "kept for a minute");
    wait_until("the offsets expire", Duration::from_secs(150), || {
        committed().is_none()
    });
    assert!(committed_at.elapsed() >= Duration::from_secs(60));
}
