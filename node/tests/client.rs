//! The Rust client (`oxbow-client`) against three real `oxbow node` processes.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{Cluster, PARTITIONS, TOPIC};
use oxbow_client::transport::{Connecting, Connector, Stream};
use oxbow_client::{
    Admin, Client, ClientConfig, Compression, Consumer, ConsumerConfig, GroupConfig, GroupConsumer,
    NewTopic, Producer, ProducerConfig, ProducerRecord, Seek, SendError,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// TCP whose every open connection can be cut at once (the next read or write fails).
#[derive(Clone, Default)]
struct Cuttable {
    generation: Arc<AtomicU64>,
}

impl Cuttable {
    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

struct CutStream {
    inner: tokio::net::TcpStream,
    born: u64,
    generation: Arc<AtomicU64>,
}

impl CutStream {
    fn check(&self) -> io::Result<()> {
        if self.generation.load(Ordering::SeqCst) == self.born {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "cut by the test",
            ))
        }
    }
}

impl AsyncRead for CutStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connector for Cuttable {
    fn connect(&self, address: &str) -> Connecting {
        let address = address.to_string();
        let generation = self.generation.clone();
        Box::pin(async move {
            let inner = tokio::net::TcpStream::connect(&address).await?;
            inner.set_nodelay(true)?;
            let born = generation.load(Ordering::SeqCst);
            Ok(Box::new(CutStream {
                inner,
                born,
                generation,
            }) as Box<dyn Stream>)
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Reads every record of `topic` up to its current end, per partition in offset order.
async fn read_all(
    client: &Client,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<(i64, String)>> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let assigned: Vec<(&str, i32)> = (0..partitions).map(|p| (topic, p)).collect();
    consumer.assign(&assigned);
    let mut ends = BTreeMap::new();
    let mut end_reader = Consumer::new(client.clone(), ConsumerConfig::default());
    end_reader.assign(&assigned);
    for p in 0..partitions {
        end_reader.seek(topic, p, Seek::Latest).expect("assigned");
    }
    // Resolve the end positions without reading.
    let _ = end_reader
        .poll(Duration::from_millis(1))
        .await
        .expect("poll");
    for p in 0..partitions {
        ends.insert(p, end_reader.position(topic, p).expect("resolved"));
    }
    let mut read: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (0..partitions).any(|p| consumer.position(topic, p).is_none_or(|at| at < ends[&p])) {
        assert!(
            std::time::Instant::now() < deadline,
            "reading took too long"
        );
        for record in consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
        {
            let value = String::from_utf8(record.value.expect("value").to_vec()).expect("utf8");
            read.entry(record.partition)
                .or_default()
                .push((record.offset, value));
        }
    }
    read
}

#[test]
fn idempotent_producer_keeps_order_without_duplicates_through_cuts_and_a_leader_kill() {
    let mut cluster = Cluster::start();
    let runtime = runtime();
    let cuttable = Cuttable::default();
    let mut config = ClientConfig::new(&cluster.bootstrap());
    config.connector = Arc::new(cuttable.clone());
    config.request_timeout = Duration::from_secs(5);
    let client = Client::new(config).expect("client");
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    const N: usize = 20_000;
    let mut sent: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut waits = Vec::new();
    runtime.block_on(async {
        for i in 0..N {
            let record = ProducerRecord::new(TOPIC, format!("v{i}")).key(format!("k{}", i % 97));
            waits.push((
                format!("v{i}"),
                producer.send(record).await.expect("queued"),
            ));
            if i % 2_000 == 1_000 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                cuttable.cut();
            }
            if i == N / 2 {
                let metadata = client.refresh_metadata(&[TOPIC]).await.expect("metadata");
                let leader = metadata.topics[TOPIC].partitions[0].leader;
                cluster.kill9(leader as usize - 1);
            }
        }
        tokio::time::timeout(Duration::from_secs(150), producer.flush())
            .await
            .expect("flush finishes within the delivery timeout");
    });
    let mut acked: BTreeMap<(i32, i64), String> = BTreeMap::new();
    runtime.block_on(async {
        for (value, wait) in waits {
            let delivered = tokio::time::timeout(Duration::from_secs(150), wait)
                .await
                .unwrap_or_else(|_| panic!("{value}: no outcome within the delivery timeout"))
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            sent.entry(delivered.partition)
                .or_default()
                .push(value.clone());
            assert!(
                acked
                    .insert((delivered.partition, delivered.offset), value)
                    .is_none(),
                "two records acknowledged at one offset"
            );
        }
    });
    // Bring the victim back, and read everything from the cluster.
    let victim = cluster
        .nodes
        .iter()
        .position(Option::is_none)
        .expect("one node was killed");
    cluster.start_node(victim);
    let read = runtime.block_on(read_all(&client, TOPIC, PARTITIONS));
    for p in 0..PARTITIONS {
        let records = read.get(&p).cloned().unwrap_or_default();
        let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..records.len() as i64).collect::<Vec<_>>(),
            "partition {p}: dense offsets"
        );
        let values: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
        // Every record once, in the order the producer was given them (per partition).
        assert_eq!(
            &values,
            sent.get(&p).unwrap_or(&Vec::new()),
            "partition {p}"
        );
        for (offset, value) in &records {
            assert_eq!(
                acked.get(&(p, *offset)),
                Some(value),
                "acknowledged offset of {value}"
            );
        }
    }
    assert_eq!(acked.len(), N);
}

#[test]
fn admin_client_creates_grows_describes_and_deletes() {
    let cluster = Cluster::start();
    let runtime = runtime();
    let client = Client::new(ClientConfig::new(&cluster.bootstrap())).expect("client");
    let admin = Admin::new(client.clone());
    runtime.block_on(async {
        let created = admin
            .create_topics(&[
                NewTopic::new("made-by-client", 2, 2),
                NewTopic::new(TOPIC, 1, 1),
            ])
            .await
            .expect("create topics");
        assert!(created[0].is_ok(), "{created:?}");
        assert!(
            matches!(
                &created[1],
                Err(oxbow_client::Error::Broker { code: 36, .. })
            ),
            "{created:?}"
        );
        admin
            .create_partitions("made-by-client", 3)
            .await
            .expect("grow");
        let cluster_description = admin.describe_cluster().await.expect("describe");
        assert_eq!(cluster_description.brokers.len(), 3);
        assert!((1..=3).contains(&cluster_description.controller));
        // Produce to the new topic's every partition, then read it back.
        let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
        let mut waits = Vec::new();
        for p in 0..3 {
            for i in 0..5 {
                let record = ProducerRecord::new("made-by-client", format!("{p}-{i}")).partition(p);
                waits.push(producer.send(record).await.expect("queued"));
            }
        }
        for wait in waits {
            wait.await.expect("delivered");
        }
        let read = read_all(&client, "made-by-client", 3).await;
        for p in 0..3 {
            let values: Vec<String> = read[&p].iter().map(|(_, v)| v.clone()).collect();
            assert_eq!(
                values,
                (0..5).map(|i| format!("{p}-{i}")).collect::<Vec<_>>()
            );
        }
        // Records queued faster than they are acknowledged still go out in batches the broker
        // takes (at most `batch_bytes`, far below its 1 MiB limit).
        let mut burst = Vec::new();
        for i in 0..5_000 {
            let value = format!("burst-{i:09}-{}", "x".repeat(2_000));
            let record = ProducerRecord::new("made-by-client", value).partition(1);
            burst.push(producer.send(record).await.expect("queued"));
        }
        for wait in burst {
            wait.await.expect("a burst record is delivered");
        }
        // Compressed batches, in every codec, are stored as sent and read back.
        for (i, compression) in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ]
        .into_iter()
        .enumerate()
        {
            let config = ProducerConfig {
                compression,
                ..ProducerConfig::default()
            };
            let compressing = Producer::new(client.clone(), config).expect("producer");
            let mut waits = Vec::new();
            for j in 0..100 {
                let record =
                    ProducerRecord::new("made-by-client", format!("z{i}-{j:03}")).partition(2);
                waits.push(compressing.send(record).await.expect("queued"));
            }
            for wait in waits {
                wait.await.expect("a compressed record is delivered");
            }
        }
        let read = read_all(&client, "made-by-client", 3).await;
        let compressed: Vec<&String> = read[&2]
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v.starts_with('z'))
            .collect();
        assert_eq!(compressed.len(), 400);
        assert!(compressed.windows(2).all(|w| w[0] < w[1]), "in order");
        // A batch the broker refuses for good fails alone; the sequence goes on after it.
        let big = producer
            .send(ProducerRecord::new("made-by-client", vec![0u8; 2 << 20]).partition(0))
            .await
            .expect("queued");
        producer.flush().await;
        let after = producer
            .send(ProducerRecord::new("made-by-client", "after").partition(0))
            .await
            .expect("queued");
        assert!(
            matches!(
                big.await,
                Err(SendError::NotWritten(oxbow_client::Error::Broker {
                    code: 10,
                    ..
                }))
            ),
            "an oversized batch is refused with MESSAGE_TOO_LARGE"
        );
        assert_eq!(after.await.expect("delivered").offset, 5);
        let deleted = admin
            .delete_topics(&["made-by-client"])
            .await
            .expect("delete");
        assert!(deleted[0].is_ok(), "{deleted:?}");
    });
}

/// What one group member saw: (generation, assignment) after every poll, and each record's
/// value with the generation it was read in.
#[derive(Default)]
struct MemberLog {
    assignment: Option<(i32, Vec<i32>)>,
    records: Vec<(i32, u64)>,
}

/// Runs a group member until `stop` is set: polls, logs, commits after each poll with
/// records; leaves the group at the end if `leave` is set. Each member has its own client
/// (connections), as separate consumers do.
fn spawn_member(
    cluster: &Cluster,
    stop: Arc<std::sync::atomic::AtomicBool>,
    leave: bool,
) -> (
    Arc<std::sync::Mutex<MemberLog>>,
    tokio::task::JoinHandle<()>,
) {
    let log = Arc::new(std::sync::Mutex::new(MemberLog::default()));
    let mut config = GroupConfig::new("client-group");
    config.session_timeout_ms = 6_000;
    config.heartbeat_interval = Duration::from_millis(300);
    let client = Client::new(ClientConfig::new(&cluster.bootstrap())).expect("client");
    let mut member = GroupConsumer::new(client, config, &[TOPIC]);
    let sink = log.clone();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let records = match member.poll(Duration::from_millis(200)).await {
                Ok(records) => records,
                Err(e) => panic!("member poll failed: {e}"),
            };
            let generation = member.generation();
            {
                let mut log = sink.lock().expect("lock");
                log.assignment =
                    generation.map(|g| (g, member.assignment().iter().map(|(_, p)| *p).collect()));
                for r in &records {
                    let value =
                        std::str::from_utf8(r.value.as_deref().expect("value")).expect("utf8");
                    log.records
                        .push((generation.expect("joined"), value.parse().expect("number")));
                }
            }
            if !records.is_empty() {
                let _ = member.commit().await;
            }
        }
        if leave {
            member.leave().await.expect("leave");
        }
    });
    (log, task)
}

async fn produce_numbers(client: &Client, range: std::ops::Range<u64>) {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut waits = Vec::new();
    for i in range {
        let record = ProducerRecord::new(TOPIC, i.to_string()).partition((i % 6) as i32);
        waits.push(producer.send(record).await.expect("queued"));
    }
    for wait in waits {
        wait.await.expect("acknowledged");
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn group_members_share_partitions_rebalance_and_resume_from_committed_offsets() {
    let cluster = Cluster::start();
    let runtime = runtime();
    let client = Client::new(ClientConfig::new(&cluster.bootstrap())).expect("client");
    runtime.block_on(async {
        assert_eq!(PARTITIONS, 6);
        let stop_a = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_b = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, a_task) = spawn_member(&cluster, stop_a.clone(), false);
        let (b, b_task) = spawn_member(&cluster, stop_b.clone(), true);
        let split = || {
            let (a, b) = (a.lock().unwrap(), b.lock().unwrap());
            match (&a.assignment, &b.assignment) {
                (Some((ga, pa)), Some((gb, pb))) if ga == gb && pa.len() == 3 => {
                    let mut all: Vec<i32> = pa.iter().chain(pb).copied().collect();
                    all.sort();
                    all == (0..6).collect::<Vec<_>>()
                }
                _ => false,
            }
        };
        wait_for("two members split six partitions", split).await;
        produce_numbers(&client, 0..60).await;
        let seen = |logs: &[&Arc<std::sync::Mutex<MemberLog>>], range: std::ops::Range<u64>| {
            let got: std::collections::BTreeSet<u64> = logs
                .iter()
                .flat_map(|l| {
                    l.lock()
                        .unwrap()
                        .records
                        .iter()
                        .map(|(_, v)| *v)
                        .collect::<Vec<_>>()
                })
                .collect();
            range.into_iter().all(|v| got.contains(&v))
        };
        wait_for("the first 60 records are read", || seen(&[&a, &b], 0..60)).await;

        // One member leaves: the other takes every partition.
        stop_b.store(true, Ordering::SeqCst);
        b_task.await.expect("member b");
        wait_for("one member holds all six", || {
            a.lock()
                .unwrap()
                .assignment
                .as_ref()
                .is_some_and(|(_, p)| p.len() == 6)
        })
        .await;
        produce_numbers(&client, 60..120).await;
        wait_for("the next 60 records are read", || seen(&[&a], 60..120)).await;

        // That member stops without leaving; a new one takes over after its session expires
        // and reads from the committed offsets: only what comes next.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop_a.store(true, Ordering::SeqCst);
        a_task.await.expect("member a");
        let stop_c = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, c_task) = spawn_member(&cluster, stop_c.clone(), true);
        wait_for("the new member holds all six", || {
            c.lock()
                .unwrap()
                .assignment
                .as_ref()
                .is_some_and(|(_, p)| p.len() == 6)
        })
        .await;
        produce_numbers(&client, 120..180).await;
        wait_for("the last 60 records are read", || seen(&[&c], 120..180)).await;
        let reread: Vec<u64> = c
            .lock()
            .unwrap()
            .records
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| *v < 120)
            .collect();
        assert!(
            reread.is_empty(),
            "read again despite committed offsets: {reread:?}"
        );
        // Within one generation no record went to two members.
        let mut owners: BTreeMap<(i32, u64), usize> = BTreeMap::new();
        for (i, log) in [&a, &b, &c].iter().enumerate() {
            for (generation, value) in &log.lock().unwrap().records {
                let previous = owners.insert((*generation, *value), i);
                assert!(
                    previous.is_none_or(|p| p == i),
                    "record {value} read by two members in generation {generation}"
                );
            }
        }
        stop_c.store(true, Ordering::SeqCst);
        c_task.await.expect("member c");
    });
}
