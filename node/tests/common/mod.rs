//! A three-node cluster of real `oxbow node` processes on 127.0.0.1 (or on host names that
//! resolve to this machine), for end-to-end tests.
#![allow(dead_code)] // each test binary uses a different part

pub mod wal;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The topic every cluster is configured with.
pub const TOPIC: &str = "e2e";
/// Its partitions.
pub const PARTITIONS: i32 = 6;
/// The peer secret of every test cluster.
pub const PEER_SECRET: &str = "the end-to-end test cluster";

/// A port that is free now, below Linux's ephemeral range (32768 and up): a port the kernel
/// hands out for `:0` can be taken again as the source port of any outgoing connection before
/// the node binds it. Each test process walks its own stretch of 20000-31999.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 20_000 + (std::process::id() % 60) * 200;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kafka: Vec<u16>,
    pub peer: Vec<u16>,
    /// Each node's host: what it listens on, and how peers and clients reach it.
    pub hosts: Vec<String>,
    /// Each node's node id.
    pub ids: Vec<u64>,
    pub nodes: Vec<Option<Child>>,
}

/// How a test cluster is set up.
pub struct Setup<'a> {
    /// TOML added to each node's configuration.
    pub extra: &'a str,
    /// Each node's host (`127.0.0.1`, or a name that resolves to this machine).
    pub hosts: [&'a str; 3],
    /// The first node's id; the others follow.
    pub first_id: u64,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            extra: "",
            hosts: ["127.0.0.1"; 3],
            first_id: 1,
        }
    }
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a cluster whose node configurations end with `extra` (TOML).
    pub fn start_with(extra: &str) -> Self {
        Self::start_setup(Setup {
            extra,
            ..Setup::default()
        })
    }

    /// Starts a cluster set up as `setup` says.
    pub fn start_setup(setup: Setup<'_>) -> Self {
        let Setup {
            extra,
            hosts,
            first_id,
        } = setup;
        let ids: Vec<u64> = (0..3).map(|i| first_id + i).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let kafka: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peer: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for i in 0..3 {
            // 50 ms ticks, unless `extra` sets its own.
            let tick = if extra.lines().any(|l| l.starts_with("tick_ms")) {
                ""
            } else {
                "tick_ms = 50\n"
            };
            let mut text = format!(
                "node_id = {}\ndata_dir = {:?}\nkafka_listen = \"{}:{}\"\npeer_listen = \"{}:{}\"\npeer_secret = \"{PEER_SECRET}\"\n{tick}",
                ids[i],
                dir.path().join(format!("node-{}", i + 1)),
                hosts[i],
                kafka[i],
                hosts[i],
                peer[i]
            );
            // Before the first table header, so the keys stay top-level.
            text += extra;
            for j in (0..3).filter(|j| *j != i) {
                text += &format!(
                    "[[peers]]\nid = {}\npeer_address = \"{}:{}\"\nkafka_address = \"{}:{}\"\n",
                    ids[j], hosts[j], peer[j], hosts[j], kafka[j]
                );
            }
            text += &format!("[[topics]]\nname = \"{TOPIC}\"\npartitions = {PARTITIONS}\nreplication_factor = 3\n");
            std::fs::write(dir.path().join(format!("node-{}.toml", i + 1)), text)
                .expect("write config");
        }
        let mut cluster = Self {
            dir,
            kafka,
            peer,
            hosts: hosts.iter().map(ToString::to_string).collect(),
            ids,
            nodes: vec![None, None, None],
        };
        for i in 0..3 {
            cluster.start_node(i);
        }
        cluster.wait_for_leaders();
        cluster
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{}.toml", i + 1))
    }

    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{}.log", i + 1)))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_oxbow"))
            .args(["--log-level", "info", "node", "--config"])
            .arg(self.config(i))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oxbow");
        self.nodes[i] = Some(child);
    }

    pub fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    pub fn stop(&mut self, i: usize) {
        let mut child = self.nodes[i].take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = child.wait().expect("reap");
        assert!(
            exit.success(),
            "node {} did not stop cleanly: {exit:?}",
            i + 1
        );
    }

    /// Asserts, after `settle`, that every node is still running (none died on `what`).
    pub fn assert_all_alive(&mut self, settle: Duration, what: &str) {
        std::thread::sleep(settle);
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let node = node.as_mut().expect("running");
            assert!(
                node.try_wait().expect("status").is_none(),
                "node {} died on {what}",
                i + 1
            );
        }
    }

    pub fn bootstrap(&self) -> String {
        self.kafka
            .iter()
            .zip(&self.hosts)
            .map(|(p, host)| format!("{host}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Leader of each partition, from a running node's metadata.
    pub fn leaders(&self) -> BTreeMap<i32, i32> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "metadata")
            .create()
            .expect("consumer");
        let mut leaders = BTreeMap::new();
        if let Ok(metadata) = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(5)) {
            for topic in metadata.topics() {
                for p in topic.partitions() {
                    // Node ids may start at 0; -1 is "no leader".
                    if p.leader() >= 0 && p.error().is_none() {
                        leaders.insert(p.id(), p.leader());
                    }
                }
            }
        }
        leaders
    }

    pub fn wait_for_leaders(&mut self) {
        for _ in 0..100 {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = node.as_mut().map(Child::try_wait) {
                    let log = std::fs::read_to_string(
                        self.dir.path().join(format!("node-{}.log", i + 1)),
                    );
                    panic!(
                        "node {} exited ({status}): {}",
                        i + 1,
                        log.unwrap_or_default()
                    );
                }
            }
            if self.leaders().len() == PARTITIONS as usize {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "partitions did not all get a leader: {:?}; logs in {}",
            self.leaders(),
            self.dir.path().display()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // For a failure's post-mortem: the nodes' logs and data directories.
        if std::env::var_os("OXBOW_KEEP_DATA").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "cluster data and logs kept in {}",
                self.dir.path().display()
            );
        }
    }
}

/// Sends one raw Kafka request frame and returns the response body, or `None` if the node
/// closed the connection.
pub fn raw_request(port: u16, frame: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(frame).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

pub fn request_frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    let header_len = 2 + 2 + 4 + 2;
    frame.extend_from_slice(&((header_len + body.len()) as i32).to_be_bytes());
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    frame.extend_from_slice(body);
    frame
}

/// Sends one request in the encoding its version asks for and decodes the answer.
pub fn call<Req, Resp>(
    port: u16,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    request: &Req,
) -> Resp
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    use bytes::Buf;
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    let mut body = bytes::BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .expect("header");
    request.encode(&mut body, version).expect("body");
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let answer = raw_request(port, &frame).expect("an answer");
    let mut answer = bytes::Bytes::from(answer);
    ResponseHeader::decode(&mut answer, key.response_header_version(version)).expect("header");
    let response = Resp::decode(&mut answer, version).expect("response");
    assert_eq!(answer.remaining(), 0);
    response
}

/// `count` records of `value_len` bytes each (no key), as one producer's batch would hold them.
pub fn records(count: usize, value_len: usize) -> Vec<kafka_protocol::records::Record> {
    (0..count)
        .map(|i| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: i as i64,
            // Consecutive, or kafka-protocol starts a batch per record.
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(bytes::Bytes::from(vec![b'z'; value_len])),
            headers: Default::default(),
        })
        .collect()
}

/// `records` encoded as one RecordBatch v2.
pub fn batch(
    records: &[kafka_protocol::records::Record],
    compression: kafka_protocol::records::Compression,
) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    let options = kafka_protocol::records::RecordEncodeOptions {
        version: 2,
        compression,
    };
    kafka_protocol::records::RecordBatchEncoder::encode(&mut out, records, &options)
        .expect("encode");
    out
}

/// A raw Produce v7 (acks=all) of `batch` to partition 0 of `TOPIC` at `port`: the
/// partition's answer (`None` if the node closed the connection).
pub fn produce_raw(
    port: u16,
    batch: bytes::Bytes,
) -> Option<kafka_protocol::messages::produce_response::PartitionProduceResponse> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(batch);
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![topic];
    let mut body = bytes::BytesMut::new();
    request.encode(&mut body, 7).expect("encode");
    let answer = raw_request(port, &request_frame(0, 7, &body))?;
    let mut response =
        ProduceResponse::decode(&mut bytes::Bytes::from(answer[4..].to_vec()), 7).expect("decode");
    Some(response.responses.remove(0).partition_responses.remove(0))
}
