//! End-to-end: a cluster configured as real deployments are, with host names (`localhost` and
//! this machine's own name) instead of IP addresses, and node ids counted from 0 as Kafka
//! counts them. It forms, serves rdkafka, tells clients the names, and survives a restart of a
//! node (whose peers find it again by name).

use std::collections::{BTreeMap, BTreeSet};
use std::net::ToSocketAddrs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod common;
use common::{Cluster, Setup, PARTITIONS, TOPIC};

/// Acknowledged records: (partition, offset) -> value.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), String>>>;

struct Recorder {
    acked: Acked,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let message = result.as_ref().expect("every record is acknowledged");
        let value = String::from_utf8_lossy(message.payload().expect("value")).into_owned();
        let previous = self
            .acked
            .lock()
            .expect("lock")
            .insert((message.partition(), message.offset()), value);
        assert!(previous.is_none(), "two records acknowledged at one offset");
    }
}

/// This machine's host name, which must resolve (to an address of this machine).
fn own_host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| {
            let out = std::process::Command::new("hostname").output().ok()?;
            String::from_utf8(out.stdout).ok()
        })
        .expect("this machine's host name")
        .trim()
        .to_string();
    assert!(!name.is_empty(), "this machine has no host name");
    assert!(
        (name.as_str(), 9092)
            .to_socket_addrs()
            .is_ok_and(|mut a| a.next().is_some()),
        "this machine's host name {name:?} does not resolve; the test needs it to"
    );
    name
}

/// Produces `count` records numbered from `from`, idempotent with acks=all, through
/// `bootstrap`; all must be acknowledged.
fn produce(bootstrap: &str, from: u64, count: u64, acked: &Acked) {
    let producer: BaseProducer<Recorder> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create_with_context(Recorder {
            acked: acked.clone(),
        })
        .expect("producer");
    for i in from..from + count {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        while producer
            .send(BaseRecord::to(TOPIC).key(&key).payload(&value))
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(90)).expect("flushed");
}

/// Reads every partition from the beginning to its end through `bootstrap`.
fn consume_all(bootstrap: &str) -> BTreeMap<(i32, i64), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "host-names-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = BTreeMap::new();
    let mut finished = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while finished.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "consuming took too long");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let value = String::from_utf8_lossy(message.payload().expect("value")).into_owned();
                records.insert((message.partition(), message.offset()), value);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                finished.insert(p);
            }
            Some(Err(_)) | None => {}
        }
    }
    records
}

/// What the cluster tells a client through `bootstrap`: brokers (id, host, port), and per
/// partition its leader, replicas and in-sync replicas.
struct Seen {
    brokers: BTreeSet<(i32, String, i32)>,
    partitions: BTreeMap<i32, (i32, BTreeSet<i32>, BTreeSet<i32>)>,
}

fn metadata(bootstrap: &str) -> Option<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .ok()?;
    let brokers = metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    let partitions = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .filter(|p| p.error().is_none())
        .map(|p| {
            (
                p.id(),
                (
                    p.leader(),
                    p.replicas().iter().copied().collect(),
                    p.isr().iter().copied().collect(),
                ),
            )
        })
        .collect();
    Some(Seen {
        brokers,
        partitions,
    })
}

/// Waits until, as the node at `bootstrap` tells it, every partition has a leader and all
/// three nodes in sync.
fn wait_for_full_isr(bootstrap: &str) -> Seen {
    let all: BTreeSet<i32> = [0, 1, 2].into();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(seen) = metadata(bootstrap) {
            if seen.partitions.len() == PARTITIONS as usize
                && seen.partitions.values().all(|(_, _, isr)| *isr == all)
            {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every partition has all three nodes in sync"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cluster_of_host_names_and_node_ids_from_zero_serves_and_survives_a_restart() {
    let own = own_host_name();
    let hosts = ["localhost", own.as_str(), "localhost"];
    let mut cluster = Cluster::start_setup(Setup {
        hosts,
        first_id: 0,
        ..Setup::default()
    });
    let bootstrap = cluster.bootstrap();
    assert!(!bootstrap.contains("127.0.0.1"), "{bootstrap}");

    // Clients are told the configured names, under node ids 0, 1 and 2.
    let seen = wait_for_full_isr(&bootstrap);
    let expected: BTreeSet<(i32, String, i32)> = (0..3)
        .map(|i| (i as i32, hosts[i].to_string(), i32::from(cluster.kafka[i])))
        .collect();
    assert_eq!(seen.brokers, expected);
    for (p, (leader, replicas, _)) in &seen.partitions {
        assert!((0..3).contains(leader), "partition {p} leader {leader}");
        assert_eq!(*replicas, BTreeSet::from([0, 1, 2]), "partition {p}");
    }
    // Replicas go round robin from a node, so node 0 is the first replica of some
    // partitions: it is a preferred leader, and campaigns first.
    assert!(
        seen.partitions.values().any(|(leader, _, _)| *leader == 0),
        "node 0 leads no partition: {:?}",
        seen.partitions
    );

    let acked = Acked::default();
    produce(&bootstrap, 0, 600, &acked);

    // Node 0 restarts; its peers dial its name again and it catches up.
    cluster.stop(0);
    produce(&bootstrap, 600, 300, &acked);
    cluster.start_node(0);
    cluster.wait_for_leaders();
    produce(&bootstrap, 900, 300, &acked);
    // Node 0, asked alone by its name, knows the whole cluster again, with itself in sync.
    let node_zero = format!("localhost:{}", cluster.kafka[0]);
    let seen = wait_for_full_isr(&node_zero);
    assert_eq!(seen.brokers, expected);

    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), 1_200);
    let read = consume_all(&bootstrap);
    assert_eq!(
        read, acked,
        "every acknowledged record, where it was acknowledged"
    );
    let values: BTreeSet<&String> = read.values().collect();
    assert_eq!(values.len(), 1_200, "no record twice");
}

/// Waits up to 20 s for `child` to exit; kills it and returns `None` if it does not.
fn exit_within(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A data directory is its node's: one written before node ids could start at 0 (no
/// `node-id` file) is claimed by the node that starts on it, and a start under another id
/// (renumbering nodes to count from 0, say) is refused with what to do, since the directory's
/// Raft votes name nodes by their ids.
#[test]
fn a_data_directory_keeps_its_node_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\ndata_dir = {data:?}\nkafka_listen = \"localhost:{}\"\npeer_listen = \"localhost:{}\"\n",
            common::free_port(),
            common::free_port()
        ),
    )
    .expect("config");
    let marker = data.join("node-id");
    let start = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_oxbow"))
            .args(["node", "--config"])
            .arg(&config)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start oxbow")
    };
    let run_until_claimed = |extra: &[&str]| {
        let mut child = start(extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "the node did not claim its directory"
            );
            assert!(child.try_wait().expect("wait").is_none(), "the node exited");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Running, with its directory claimed (and its log recovered).
        std::thread::sleep(Duration::from_millis(500));
        assert!(child.try_wait().expect("wait").is_none(), "the node exited");
        child.kill().expect("kill");
        child.wait().expect("reap");
    };

    run_until_claimed(&[]);
    assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "1\n");
    // As a directory written before the marker existed: it starts, and is claimed.
    std::fs::remove_file(&marker).expect("remove");
    run_until_claimed(&[]);
    assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "1\n");

    // Renumbered from 1 to 0: refused, saying what to do.
    let mut child = start(&["--node-id", "0"]);
    let status = exit_within(&mut child).expect("refused at once");
    assert!(!status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log)
        .expect("log");
    assert!(
        log.contains("belongs to node 1, but the configuration says node_id = 0")
            && log.contains("start a new cluster with empty data directories"),
        "{log}"
    );
    // Under its own id it still starts.
    run_until_claimed(&[]);
}
