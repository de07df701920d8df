//! The tokio runtime that drives one node's core.
//!
//! One task owns the `Node`. Its inbox merges peer frames, client requests and disk
//! completions; a `select!` (biased, so the order of readiness checks is fixed) also takes
//! ticks and the shutdown signal. Outputs go out in the order the core gave them: peer sends to
//! per-peer sender tasks, writes to the disk writer thread, replies to the waiting requests.

mod cleaner;
pub mod env;
pub mod peer;
mod retention;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use oxbow_core::ids::{GroupId, NodeId, RaftIndex, RequestId, Term};
use oxbow_core::io::{
    AdminRequest, Forward, GroupMessage, Input, Output, Request, Response, TraceEvent,
};
use oxbow_core::metadata::{
    AdminError, CreateTopic, MetadataCommand, MetadataState, METADATA_GROUP,
};
use oxbow_core::node::{GroupStatus, Node, NodeConfig};
use oxbow_core::raft::eraftpb::Entry;
use rand_core::RngCore as _;
use slog::{error, info, warn, Logger};
use tokio::sync::{mpsc, oneshot, watch};

use crate::address::Address;
use crate::config::Config;
use crate::storage::{Disk, FsDisk, SegmentLog, SegmentLogOptions, StorageError};
use env::{Clock, Environment, Network, TokioNet, WriterMode};

/// Capacity of the core's inbox; senders wait when it is full (backpressure).
const INBOX_CAPACITY: usize = 4_096;

/// Everything that reaches the core task.
#[derive(Debug)]
pub enum Event {
    /// Raft messages from a peer (the transport checked the sender).
    Peer {
        /// The peer.
        from: NodeId,
        /// Its messages.
        messages: Vec<GroupMessage>,
    },
    /// A client request; `reply` is `None` when nobody waits (acks=0).
    Request {
        /// The request.
        request: Request,
        /// Where the answer goes.
        reply: Option<oneshot::Sender<Response>>,
    },
    /// What the node knows of some groups.
    Status {
        /// The groups.
        groups: Vec<GroupId>,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Option<GroupStatus>>>,
    },
    /// Who leads some groups, as far as the node knows (hosted or gossiped).
    Leaders {
        /// The groups.
        groups: Vec<GroupId>,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Option<(NodeId, Term)>>>,
    },
    /// The log cleaner rewrote a group's entries up to an index (`Node::evict_cleaned`).
    EvictCleaned {
        /// The group.
        group: GroupId,
        /// The last index rewritten.
        through: RaftIndex,
        /// Told once they are out of memory.
        reply: oneshot::Sender<()>,
    },
    /// Whether some groups have ever had a leader (`Node::has_had_leader`).
    HadLeaders {
        /// The groups.
        groups: Vec<GroupId>,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<bool>>,
    },
    /// The replicas in sync of some groups, as their leaders count them.
    InSync {
        /// The groups.
        groups: Vec<GroupId>,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Option<Vec<NodeId>>>>,
    },
    /// The disk read entries the core asked for.
    EntriesRead {
        /// The group.
        group: GroupId,
        /// The first index asked.
        low: RaftIndex,
        /// What was read.
        entries: Vec<Entry>,
    },
}

/// A cloneable way to talk to the core task.
#[derive(Clone, Debug)]
pub struct CoreHandle {
    inbox: mpsc::Sender<Event>,
    applied: watch::Receiver<u64>,
    metadata: watch::Receiver<Arc<MetadataState>>,
}

impl CoreHandle {
    /// Sends a request and waits for its answer; `None` if the node is stopping.
    pub async fn request(&self, request: Request) -> Option<Response> {
        self.submit(request).await?.await.ok()
    }

    /// Sends a request and returns the wait for its answer; `None` if the node is stopping.
    /// Requests are handled in the order they are submitted.
    pub async fn submit(&self, request: Request) -> Option<oneshot::Receiver<Response>> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Event::Request {
                request,
                reply: Some(reply),
            })
            .await
            .ok()?;
        Some(answer)
    }

    /// Sends a request nobody waits for (acks=0).
    pub async fn request_no_reply(&self, request: Request) {
        let _ = self
            .inbox
            .send(Event::Request {
                request,
                reply: None,
            })
            .await;
    }

    /// Asks what the node knows of `groups`.
    pub async fn status(&self, groups: Vec<GroupId>) -> Option<Vec<Option<GroupStatus>>> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Event::Status { groups, reply })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// The replicas in sync of `groups` (Kafka's ISR), as their leaders count them (this
    /// node's own count, or its leader's gossip); `None` for a group with no known leader.
    pub async fn in_sync(&self, groups: Vec<GroupId>) -> Option<Vec<Option<Vec<NodeId>>>> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Event::InSync { groups, reply })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Whether each of `groups` has ever had a leader, as far as this node knows.
    pub async fn had_leaders(&self, groups: Vec<GroupId>) -> Option<Vec<bool>> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Event::HadLeaders { groups, reply })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Drops `group`'s entries up to `through` from the core's memory, which the log cleaner
    /// rewrote on disk, so that fetches read the cleaned files. `None` once the core stopped.
    pub async fn evict_cleaned(&self, group: GroupId, through: RaftIndex) -> Option<()> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Event::EvictCleaned {
                group,
                through,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Who leads `groups`: this node's view for groups it hosts, the peers' gossip otherwise.
    pub async fn leaders(&self, groups: Vec<GroupId>) -> Option<Vec<Option<(NodeId, Term)>>> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Event::Leaders { groups, reply })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// The cluster metadata as this node has applied it.
    pub fn metadata(&self) -> Arc<MetadataState> {
        self.metadata.borrow().clone()
    }

    /// A counter of entries applied on this node: it changes whenever any high watermark may
    /// have moved, so a waiting fetch knows when to look again.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    pub(crate) fn sender(&self) -> mpsc::Sender<Event> {
        self.inbox.clone()
    }
}

/// Why a node stopped other than by request.
#[derive(Debug)]
pub enum RuntimeError {
    /// Opening or recovering the data directory failed.
    Storage(StorageError),
    /// A socket could not be bound.
    Bind {
        /// The address.
        address: Address,
        /// The error.
        source: std::io::Error,
    },
    /// The disk failed while running.
    Fatal(String),
    /// The data directory does not match the configuration.
    Mismatch(String),
}

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Storage(e) => write!(f, "{e}"),
            Self::Bind { address, source } => {
                write!(
                    f,
                    "cannot listen on {address}: {source} (is another node using the port?)"
                )
            }
            Self::Fatal(e) => write!(f, "stopping after a disk failure: {e}"),
            Self::Mismatch(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

/// The core's configuration: every node votes in the metadata group; partition groups come
/// from applying it.
pub fn core_config(config: &Config) -> NodeConfig {
    let mut node = NodeConfig::new(config.node(), Vec::new());
    node.metadata_voters = config.all_nodes();
    node.metadata_entries_max = config.metadata_snapshot_entries;
    node.log_cache_bytes = config.log.cache_bytes;
    node.index_points_max = config.log.index_points_max;
    node.batch_decompressed_bytes_max = config.log.decompressed_batch_bytes_max as usize;
    node.group_entry_bytes_max = config.group_entry_bytes_max;
    node.producers_max = config.producers.per_partition_max;
    node.producer_expiration_ms = config.producers.expiration_ms;
    node.coordinator = config.groups.coordinator();
    node.txn = config.transactions.coordinator();
    node.partition_limits = config.partition_limits();
    node
}

/// A started node: its core handle, and the task to await for its end.
pub struct Started {
    /// Talks to the core.
    pub core: CoreHandle,
    /// Ends when the node stops.
    pub done: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

/// The file in a data directory that names the node it belongs to.
pub const NODE_ID_FILE: &str = "node-id";

/// Makes sure the data directory is this node's: a node's id is in its Raft state (the votes
/// it cast, the voters its peers count), so a directory written under another id would make
/// it believe votes it never cast. The first start writes the node's id into the directory; a
/// later start under another id is refused. A directory without the file (empty, or written
/// before the file existed, when ids started at 1 and were their own Raft ids, as they still
/// are) is claimed.
fn claim_data_dir(config: &Config) -> Result<(), RuntimeError> {
    let path = config.data_dir.join(NODE_ID_FILE);
    let io = |operation, source| {
        RuntimeError::Storage(StorageError::Io {
            operation,
            file: path.display().to_string(),
            source,
        })
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: u64 = text.trim().parse().map_err(|_| {
                RuntimeError::Mismatch(format!(
                    "{} does not hold a node id; write the id of the node this data directory \
                     belongs to into it",
                    path.display()
                ))
            })?;
            if stored != config.node_id {
                return Err(RuntimeError::Mismatch(format!(
                    "the data directory {} belongs to node {stored}, but the configuration says \
                     node_id = {}: a node's id is part of its Raft state and cannot change. \
                     Start node {stored} with this directory; to renumber nodes (for example to \
                     count from 0), start a new cluster with empty data directories",
                    config.data_dir.display(),
                    config.node_id
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let temporary = path.with_extension("tmp");
            let mut file = std::fs::File::create(&temporary).map_err(|e| io("create", e))?;
            std::io::Write::write_all(&mut file, format!("{}\n", config.node_id).as_bytes())
                .map_err(|e| io("write", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
            std::fs::rename(&temporary, &path).map_err(|e| io("rename", e))?;
            std::fs::File::open(&config.data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| io("fsync", e))?;
            Ok(())
        }
        Err(e) => Err(io("read", e)),
    }
}

/// The environment variable naming the bugs to plant (comma-separated), for the Jepsen runner
/// to show that its checker catches them in real processes.
pub const PLANTED_BUGS_ENV: &str = "OXBOW_PLANTED_BUGS";

/// The bugs `OXBOW_PLANTED_BUGS` names. Only a binary built with the `planted-bugs` feature
/// takes them; any other refuses to start with the variable set, so a run that meant to plant
/// a bug never passes for one that did.
fn planted_from_env() -> Result<oxbow_core::node::PlantedBugs, RuntimeError> {
    planted_from(std::env::var(PLANTED_BUGS_ENV).ok().as_deref())
}

/// [`planted_from_env`] of the variable's value.
fn planted_from(names: Option<&str>) -> Result<oxbow_core::node::PlantedBugs, RuntimeError> {
    let names = match names {
        Some(names) if !names.trim().is_empty() => names,
        _ => return Ok(oxbow_core::node::PlantedBugs::default()),
    };
    if !cfg!(feature = "planted-bugs") {
        return Err(RuntimeError::Mismatch(format!(
            "{PLANTED_BUGS_ENV}={names} needs a binary built with `--features planted-bugs`; unset it to run normally"
        )));
    }
    oxbow_core::node::PlantedBugs::parse(names)
        .map_err(|e| RuntimeError::Mismatch(format!("{PLANTED_BUGS_ENV}: {e}")))
}

/// The production environment: real TCP, the data directory with a writer thread, the system
/// clock.
pub fn production(config: &Config) -> Result<Environment<TokioNet, FsDisk>, RuntimeError> {
    let disk = FsDisk::with_open_files_max(&config.data_dir, config.log.open_files_max).map_err(
        |source| {
            RuntimeError::Storage(StorageError::Io {
                operation: "open",
                file: config.data_dir.display().to_string(),
                source,
            })
        },
    )?;
    claim_data_dir(config)?;
    Ok(Environment {
        network: TokioNet,
        disk,
        writer: WriterMode::Thread,
        producer_ids: Box::new(crate::producer_ids::FileStore::new(&config.data_dir)),
        clock: Clock::system(),
        seed: env::time_seed(),
        incarnation: 0,
        planted: planted_from_env()?,
        observer: None,
        nonces: Box::new(rand_core::OsRng),
    })
}

/// Starts a whole node: opens and recovers the data directory, binds the Kafka and peer
/// ports, and starts the core task, the disk writer, the peer transport and the Kafka
/// listener. Returns the core's handle and the task that ends when the node stops.
pub async fn start<N: Network, D: Disk + Send + 'static>(
    config: Config,
    environment: Environment<N, D>,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) -> Result<Started, RuntimeError> {
    let Environment {
        network,
        disk,
        writer,
        producer_ids,
        clock,
        seed,
        incarnation,
        planted,
        observer,
        nonces,
    } = environment;
    let (log, durable, report) = SegmentLog::open(
        disk,
        SegmentLogOptions {
            segment_bytes_max: config.log.segment_bytes,
            planted,
        },
    )
    .map_err(RuntimeError::Storage)?;
    info!(logger, "recovered data directory";
        "dir" => %config.data_dir.display(), "segments" => report.segments, "frames" => report.frames,
        "groups" => durable.groups.len(), "cuts" => ?report.cuts);
    let mut node_config = core_config(&config);
    node_config.planted = planted;
    if !planted.names().is_empty() {
        warn!(logger, "bugs planted on purpose: this node is for testing checkers only";
            "bugs" => planted.names().join(","));
    }
    if !durable.groups.is_empty() && !durable.groups.contains_key(&METADATA_GROUP) {
        return Err(RuntimeError::Mismatch(format!(
            "the data directory {} holds partitions but no metadata log: it was written by an older \
             oxbow whose topics came from the configuration file; start with an empty data directory",
            config.data_dir.display()
        )));
    }
    let producer_ids = crate::producer_ids::ProducerIds::open(producer_ids, config.node_id)
        .map_err(|e| RuntimeError::Fatal(format!("cannot open the producer id state: {e}")))?;
    let bind = |address: Address| {
        let network = network.clone();
        async move {
            network
                .bind(&address)
                .await
                .map_err(|source| RuntimeError::Bind { address, source })
        }
    };
    let kafka_listener = bind(config.kafka_listen.clone()).await?;
    let peer_listener = bind(config.peer_listen.clone()).await?;
    let (inbox_tx, inbox) = mpsc::channel(INBOX_CAPACITY);
    // The writer's completions: a path of their own (see `writer`).
    let (completions_tx, completions) = mpsc::unbounded_channel();
    let (applied_tx, applied) = watch::channel(0u64);
    let (metadata_tx, metadata) = watch::channel(Arc::new(MetadataState::new(config.all_nodes())));
    let core = CoreHandle {
        inbox: inbox_tx,
        applied,
        metadata,
    };
    let reserve = writer::Reserve {
        bytes: config.log.disk_reserve_bytes,
        dir: config.data_dir.display().to_string(),
    };
    let writer = writer::spawn(
        log,
        config.fsync,
        writer,
        reserve,
        planted,
        completions_tx,
        logger.clone(),
    );
    // Every node hears from every peer each `leader_gossip_ticks`; ten of those without a word
    // (and at least 5 s) means the link is broken even if writes still succeed.
    let silence =
        Duration::from_millis((config.tick_ms * node_config.leader_gossip_ticks * 10).max(5_000));
    let heard = peer::Heard::default();
    let mut nonces = nonces;
    let secret = match config
        .peer_secret()
        .map_err(|e| RuntimeError::Fatal(e.to_string()))?
    {
        Some(secret) => secret,
        // No peers: a secret nobody knows, so that the peer port refuses everyone.
        None => {
            let mut secret = vec![0u8; 32];
            nonces.fill_bytes(&mut secret);
            secret
        }
    };
    let credentials = peer::handshake::Credentials::new(&secret, nonces);
    let peers = peer::Peers::start(
        &network,
        &config,
        &credentials,
        &heard,
        silence,
        shutdown.clone(),
        logger.clone(),
    );
    tokio::spawn(peer::listen::<N>(
        peer_listener,
        heard,
        silence,
        peer::Accept {
            me: config.node(),
            peers: config.peers.iter().map(|p| NodeId(p.id)).collect(),
            credentials,
            handshakes_max: config.connections.peer_handshakes_max,
        },
        core.sender(),
        shutdown.clone(),
        logger.clone(),
    ));
    let raft_logger = logger.new(slog::o!("component" => "raft"));
    // The metadata log's Raft commit index on disk: the node serves clients once it has
    // applied that much (see `CoreTask::metadata_ready`).
    let metadata_committed = RaftIndex(
        durable
            .groups
            .get(&METADATA_GROUP)
            .map_or(0, |g| g.hard_state.commit),
    );
    let (metadata_ready_tx, mut metadata_ready) = watch::channel(false);
    // Three election timeouts: time for a group whose leader died with this node to elect
    // another, and for every live peer to gossip.
    let settle_ticks_max = 3 * node_config.election_tick as u64;
    let node = Node::new(node_config, seed, incarnation, durable, &raft_logger);
    let tick = Duration::from_millis(config.tick_ms);
    tokio::spawn(retention::run(
        config.clone(),
        core.clone(),
        writer.clone(),
        clock.clone(),
        shutdown.clone(),
        logger.clone(),
    ));
    tokio::spawn(cleaner::run(
        config.clone(),
        core.clone(),
        writer.clone(),
        clock.clone(),
        shutdown.clone(),
        logger.clone(),
    ));
    let reader = writer.clone();
    let done = tokio::spawn(run_core(CoreTask {
        node,
        inbox,
        completions,
        own_inbox: core.sender(),
        writer,
        peers,
        clock,
        tick,
        shutdown: shutdown.clone(),
        applied: applied_tx,
        metadata: metadata_tx,
        metadata_ready: (metadata_committed, metadata_ready_tx),
        settle_ticks_max,
        observer,
        logger: logger.clone(),
    }));
    let context = crate::kafka::Context::new(
        config.clone(),
        core.clone(),
        reader,
        producer_ids,
        logger.clone(),
    );
    // Kafka's brokers serve clients once they have caught up with the metadata, leaders
    // included; before its recovered metadata log is applied, a restarted node would answer
    // the topics it has as unknown, and before it has heard of their leaders, their partitions
    // as leaderless. Connections wait in the listener's backlog meanwhile.
    let serve_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if metadata_ready.wait_for(|ready| *ready).await.is_ok() {
            crate::kafka::serve::<N>(kafka_listener, context, serve_shutdown).await;
        }
    });
    info!(logger, "node started"; "kafka" => %config.kafka_listen, "peers" => %config.peer_listen);
    tokio::spawn(ensure_topics(config, core.clone(), shutdown, logger));
    Ok(Started { core, done })
}

/// Accepts connections until shutdown and hands each to `handle`.
pub async fn accept_loop<N, F, Fut>(
    listener: N::Listener,
    mut shutdown: watch::Receiver<bool>,
    logger: Logger,
    handle: F,
) where
    N: Network,
    F: Fn(N::Read, N::Write, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // Failures in a row: each waits twice as long as the last, up to a second, so that a
    // process out of file descriptors (EMFILE) does not spin.
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            accepted = N::accept(&listener) => accepted,
        };
        match accepted {
            Ok((read, write, remote)) => {
                failures = 0;
                tokio::spawn(handle(read, write, remote));
            }
            Err(e) => {
                failures += 1;
                if failures.is_power_of_two() {
                    warn!(logger, "accepting a connection failed"; "error" => %e,
                        "failures_in_a_row" => failures);
                }
                let wait =
                    Duration::from_millis(10u64 << failures.min(7)).min(Duration::from_secs(1));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Everything the core task owns.
struct CoreTask {
    node: Node,
    inbox: mpsc::Receiver<Event>,
    completions: mpsc::UnboundedReceiver<writer::Completion>,
    /// The sending side of `inbox`, for the disk reads' answers.
    own_inbox: mpsc::Sender<Event>,
    writer: writer::Writer,
    peers: peer::Peers,
    clock: Clock,
    tick: Duration,
    shutdown: watch::Receiver<bool>,
    applied: watch::Sender<u64>,
    metadata: watch::Sender<Arc<MetadataState>>,
    /// The metadata log's Raft commit index found on disk, and what is told (once, after the
    /// metadata applied up to it is published) when the node has applied that far.
    metadata_ready: (RaftIndex, watch::Sender<bool>),
    /// Ticks the node waits after its metadata caught up for the groups' leaders to be known
    /// (`Node::leaders_settled`) before it serves clients anyway.
    settle_ticks_max: u64,
    observer: Option<env::Observer>,
    logger: Logger,
}

async fn run_core(task: CoreTask) -> Result<(), RuntimeError> {
    let CoreTask {
        mut node,
        mut inbox,
        mut completions,
        own_inbox,
        writer,
        peers,
        clock,
        tick,
        mut shutdown,
        applied,
        metadata,
        metadata_ready: (metadata_committed, metadata_ready),
        settle_ticks_max,
        mut observer,
        logger,
    } = task;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting: BTreeMap<RequestId, oneshot::Sender<Response>> = BTreeMap::new();
    let mut next_request = 0u64;
    let mut out = Vec::new();
    // Ticks since the metadata caught up, while the node waits to know the leaders.
    let mut settling: Option<u64> = None;
    loop {
        let input = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            completion = completions.recv() => match completion {
                Some(writer::Completion::Done(seq)) => Input::WriteDone { seq },
                Some(writer::Completion::Failed(why)) => {
                    error!(logger, "disk failure, stopping"; "error" => &why);
                    return Err(RuntimeError::Fatal(why));
                }
                None => {
                    let why = "the disk writer stopped".to_string();
                    error!(logger, "disk failure, stopping"; "error" => &why);
                    return Err(RuntimeError::Fatal(why));
                }
            },
            event = inbox.recv() => match event {
                None => break,
                Some(Event::Peer { from, messages }) => Input::Peer { from, messages },
                Some(Event::Request { request, reply }) => {
                    next_request += 1;
                    let id = RequestId(next_request);
                    if let Some(reply) = reply {
                        waiting.insert(id, reply);
                    }
                    Input::Request { id, request }
                }
                Some(Event::Status { groups, reply }) => {
                    let _ = reply.send(groups.iter().map(|g| node.group_status(*g)).collect());
                    continue;
                }
                Some(Event::Leaders { groups, reply }) => {
                    let _ = reply.send(groups.iter().map(|g| node.leader(*g)).collect());
                    continue;
                }
                Some(Event::EvictCleaned { group, through, reply }) => {
                    node.evict_cleaned(group, through);
                    let _ = reply.send(());
                    continue;
                }
                Some(Event::HadLeaders { groups, reply }) => {
                    let _ = reply.send(groups.iter().map(|g| node.has_had_leader(*g)).collect());
                    continue;
                }
                Some(Event::InSync { groups, reply }) => {
                    let _ = reply.send(groups.iter().map(|g| node.in_sync(*g)).collect());
                    continue;
                }
                Some(Event::EntriesRead { group, low, entries }) => {
                    Input::EntriesRead { group, low, entries }
                }
            },
            _ = ticker.tick() => Input::Tick,
        };
        let ticked = matches!(input, Input::Tick);
        node.handle(clock.now(), input, &mut out);
        let mut metadata_changed = false;
        for output in out.drain(..) {
            match output {
                Output::Send { to, messages } => peers.send(to, messages),
                Output::Write(write) => {
                    if !writer.write(write).await {
                        // The writer said why on its own path; this is only the symptom.
                        let why = "the disk writer stopped".to_string();
                        error!(logger, "disk failure, stopping"; "error" => &why);
                        return Err(RuntimeError::Fatal(why));
                    }
                }
                Output::ReadEntries(read) => {
                    // Answered after the writes queued before it; the core goes on meanwhile.
                    let (writer, inbox) = (writer.clone(), own_inbox.clone());
                    tokio::spawn(async move {
                        let (group, low) = (read.group, read.from);
                        if let Some(entries) = writer.read(read).await {
                            let _ = inbox
                                .send(Event::EntriesRead {
                                    group,
                                    low,
                                    entries,
                                })
                                .await;
                        }
                    });
                }
                Output::Reply { id, response } => {
                    if let Some(reply) = waiting.remove(&id) {
                        let _ = reply.send(response);
                    }
                }
                Output::Trace(event) => {
                    if let Some(observe) = &mut observer {
                        observe(&event);
                    }
                    match &event {
                        TraceEvent::Applied { .. } => applied.send_modify(|count| *count += 1),
                        TraceEvent::MetadataApplied {
                            changed: true,
                            index,
                        } => {
                            info!(logger, "metadata changed"; "index" => index.0);
                            metadata_changed = true;
                        }
                        TraceEvent::MetadataRestored { index } => {
                            info!(logger, "metadata restored from a snapshot"; "index" => index.0);
                            metadata_changed = true;
                        }
                        TraceEvent::ProducerTableFull {
                            group,
                            producers,
                            limit,
                        } => {
                            let (topic, partition) = partition_of(&node, *group);
                            warn!(logger, "producer table full: refusing new producer ids (POLICY_VIOLATION) until producers expire";
                                "topic" => topic, "partition" => partition, "group" => group.0,
                                "producers" => producers, "limit" => limit);
                        }
                        TraceEvent::ProducerTableHasRoom {
                            group,
                            producers,
                            limit,
                        } => {
                            let (topic, partition) = partition_of(&node, *group);
                            info!(logger, "producer table has room again";
                                "topic" => topic, "partition" => partition, "group" => group.0,
                                "producers" => producers, "limit" => limit);
                        }
                        TraceEvent::CoordinatorGroupsFull {
                            group,
                            groups,
                            limit,
                        } => {
                            let (topic, partition) = partition_of(&node, *group);
                            warn!(logger, "group coordinator full: refusing new consumer groups (COORDINATOR_NOT_AVAILABLE) until groups are deleted or expire (groups.per_partition_max)";
                                "topic" => topic, "partition" => partition, "group" => group.0,
                                "groups" => groups, "limit" => limit);
                        }
                        TraceEvent::CoordinatorGroupsHaveRoom {
                            group,
                            groups,
                            limit,
                        } => {
                            let (topic, partition) = partition_of(&node, *group);
                            info!(logger, "group coordinator has room for new groups again";
                                "topic" => topic, "partition" => partition, "group" => group.0,
                                "groups" => groups, "limit" => limit);
                        }
                        _ => {}
                    }
                    slog::trace!(logger, "trace"; "event" => ?event);
                }
            }
        }
        let state = node.metadata().expect("every node runs the metadata group");
        let caught_up = !*metadata_ready.borrow()
            && settling.is_none()
            && state.applied() >= metadata_committed;
        if metadata_changed || caught_up {
            metadata.send_replace(Arc::new(state.clone()));
            writer.segment_bytes(segment_bytes(state)).await;
        }
        if caught_up {
            info!(logger, "metadata caught up"; "index" => state.applied().0);
            settling = Some(0);
        }
        // Once caught up, the node waits to know the groups' leaders (or for a deadline, when
        // a peer is down or a group has no leader) before it serves clients.
        if let Some(ticks) = settling {
            let settled = node.leaders_settled();
            if settled || ticks >= settle_ticks_max {
                info!(logger, "serving clients"; "leaders_known" => settled, "ticks" => ticks);
                metadata_ready.send_replace(true);
                settling = None;
            } else if ticked {
                settling = Some(ticks + 1);
            }
        }
    }
    info!(logger, "core stopped");
    Ok(())
}

/// The topic and partition index of a partition's group, for log lines ("", -1 if the
/// metadata no longer has it).
fn partition_of(node: &Node, group: GroupId) -> (String, i64) {
    node.metadata()
        .and_then(|metadata| {
            metadata.topics().values().find_map(|topic| {
                let index = topic.partitions.iter().position(|p| p.group == group)?;
                Some((topic.name.clone(), index as i64))
            })
        })
        .unwrap_or_else(|| (String::new(), -1))
}

/// The segment size of every partition whose topic sets its own `segment.bytes`.
fn segment_bytes(state: &MetadataState) -> BTreeMap<GroupId, u64> {
    let mut sizes = BTreeMap::new();
    for topic in state.topics().values() {
        let Some(size) = topic.configs.get("segment.bytes") else {
            continue;
        };
        let size: u64 = size.parse().expect("checked when it was set");
        for partition in &topic.partitions {
            sizes.insert(partition.group, size);
        }
    }
    sizes
}

/// Makes sure the configuration's topics exist: asks the metadata group to create each one
/// until it is created or found, retrying while there is no controller. Every node does it;
/// the metadata group answers all but the first with TOPIC_ALREADY_EXISTS.
async fn ensure_topics(
    config: Config,
    core: CoreHandle,
    mut shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    for topic in &config.topics {
        loop {
            if let Some(existing) = core.metadata().topic(&topic.name) {
                if existing.partitions.len() != topic.partitions as usize {
                    warn!(logger, "configured topic exists with another partition count";
                        "topic" => &topic.name, "configured" => topic.partitions,
                        "actual" => existing.partitions.len());
                }
                break;
            }
            let request = Request::Admin(AdminRequest {
                command: MetadataCommand::CreateTopic(CreateTopic {
                    name: topic.name.clone(),
                    partitions: topic.partitions,
                    replication_factor: topic.replication_factor as u16,
                    configs: BTreeMap::new(),
                    assignment: Vec::new(),
                }),
                validate_only: false,
                forward: Forward::No,
                timeout_ms: 5_000,
            });
            match core.request(request).await {
                None => return,
                Some(Response::Admin(Ok(_))) => {
                    info!(logger, "created configured topic"; "topic" => &topic.name);
                    break;
                }
                Some(Response::Admin(Err(AdminError::TopicAlreadyExists))) => break,
                Some(Response::Admin(Err(
                    AdminError::NotController { .. }
                    | AdminError::TimedOut
                    | AdminError::Backpressure,
                ))) => {}
                Some(other) => {
                    error!(logger, "cannot create configured topic; fix the configuration";
                        "topic" => &topic.name, "answer" => ?other);
                    break;
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::planted_from;

    /// Planted bugs come only with the feature; a name not known is refused.
    #[test]
    fn planted_bugs_need_the_feature_and_known_names() {
        assert!(planted_from(None).expect("none").names().is_empty());
        assert!(planted_from(Some(" ")).expect("none").names().is_empty());
        let two = planted_from(Some("skip-sequence-check, ack-before-fsync"));
        if cfg!(feature = "planted-bugs") {
            let names = two.expect("planted").names();
            assert_eq!(names, ["skip-sequence-check", "ack-before-fsync"]);
            let error = planted_from(Some("no-such-bug")).expect_err("unknown");
            assert!(error
                .to_string()
                .contains("known: early-persisted-messages"));
        } else {
            let error = two.expect_err("refused without the feature").to_string();
            assert!(error.contains("--features planted-bugs"), "{error}");
        }
    }
}
