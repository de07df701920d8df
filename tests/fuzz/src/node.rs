//! A real node, served in this process for the `kafka_request` target.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use oxbow_node::config::Config;
use oxbow_node::runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A started node.
pub struct Served {
    /// Runs the node and the target's connections.
    pub runtime: tokio::runtime::Runtime,
    /// Its Kafka address.
    pub kafka: SocketAddr,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
    /// Catches SIGPIPE while it lives. libFuzzer's `main` is not Rust's, which ignores
    /// SIGPIPE: without a handler, a write to a connection the other side closed (the node's
    /// answer after the harness gave up reading, or the harness's request after the node
    /// closed the connection) would kill the fuzzer instead of failing with EPIPE, as it does
    /// in the `oxbow` binary.
    _sigpipe: tokio::signal::unix::Signal,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

impl Served {
    /// Starts one node with a topic `fuzz` of two partitions and waits until both have a
    /// leader. Panics if it cannot (the target cannot run).
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let sigpipe = runtime
            .block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe())
            })
            .expect("a SIGPIPE handler");
        // On tmpfs where there is one: the target measures the listener, not the disk.
        let dir = tempfile::Builder::new()
            .prefix("oxbow-fuzz-")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("a temporary directory");
        let kafka: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let text = format!(
            "node_id = 1\ndata_dir = {:?}\nkafka_listen = \"{kafka}\"\npeer_listen = \"127.0.0.1:{}\"\n\
             tick_ms = 50\n\
             [connections]\nmax_connections = 100000\nmax_connections_per_ip = 100000\n\
             [[topics]]\nname = \"fuzz\"\npartitions = 2\nreplication_factor = 1\n",
            dir.path(),
            free_port(),
        );
        let config = Config::parse(&text).expect("the fuzz node's configuration");
        config.validate().expect("a valid configuration");
        let (shutdown, watch) = tokio::sync::watch::channel(false);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        runtime.block_on(async {
            let environment = runtime::production(&config).expect("the data directory");
            let started = runtime::start(config, environment, watch, logger)
                .await
                .expect("the node starts");
            // The node runs until the process ends.
            std::mem::forget(started.done);
        });
        let served = Self {
            runtime,
            kafka,
            _dir: dir,
            _shutdown: shutdown,
            _sigpipe: sigpipe,
        };
        served.wait_for_leaders();
        served
    }

    fn wait_for_leaders(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.runtime.block_on(self.leaders()) == Some(2) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the fuzz node did not elect leaders for its topic within 30 s");
    }

    /// How many partitions of `fuzz` have a leader, by Metadata.
    async fn leaders(&self) -> Option<usize> {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let mut topic = MetadataRequestTopic::default();
        topic.name = Some(TopicName(StrBytes::from_static_str("fuzz")));
        let mut request = MetadataRequest::default();
        request.topics = Some(vec![topic]);
        let frame = crate::requests::frame(ApiKey::Metadata, 12, 1, &request);
        let mut stream = tokio::net::TcpStream::connect(self.kafka).await.ok()?;
        stream.write_all(&frame).await.ok()?;
        let size = stream.read_i32().await.ok()?;
        let mut body = vec![0u8; usize::try_from(size).ok()?];
        stream.read_exact(&mut body).await.ok()?;
        let response: MetadataResponse =
            crate::requests::decode_response(ApiKey::Metadata, 12, body)?;
        let topic = response.topics.first()?;
        Some(
            topic
                .partitions
                .iter()
                .filter(|p| p.error_code == 0 && p.leader_id.0 >= 0)
                .count(),
        )
    }
}
