//! A three-node in-memory cluster for the core's integration tests: a perfect network, and
//! disks that complete every write at once and keep every record.

#![allow(dead_code, unused_imports)]

pub use std::collections::{BTreeMap, VecDeque};

pub use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub use oxbow_core::ids::{GroupId, NodeId, Offset, RequestId};
pub use oxbow_core::io::{
    AdminRequest, DiskRead, Forward, Input, Output, Request, Response, TraceEvent, WalRecord,
};
pub use oxbow_core::metadata::{
    AdminError, CreateTopic, MetadataChange, MetadataCommand, PartitionLimits, METADATA_GROUP,
};
pub use oxbow_core::node::{DurableState, GroupDurableState, Node, NodeConfig};
pub use oxbow_core::raft::eraftpb::Entry;
pub use oxbow_core::time::{Instant, Now};

pub const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

/// Three nodes on a perfect network, with disks that complete every write at once and keep
/// every record (so a node can be restarted from them).
pub struct Cluster {
    pub tweak: fn(&mut NodeConfig),
    /// The nodes' ids (`NODES` unless made `with_ids`).
    pub ids: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub disks: BTreeMap<NodeId, Vec<WalRecord>>,
    pub incarnations: BTreeMap<NodeId, u64>,
    pub inputs: VecDeque<(NodeId, Input)>,
    pub replies: Vec<(NodeId, RequestId, Response)>,
    pub now: Now,
    pub next_request: u64,
    /// Disk reads served (for followers behind the cache).
    pub reads_served: usize,
    /// The nodes' trace events, but for `Applied` (one per entry), in order.
    pub traces: Vec<(NodeId, TraceEvent)>,
    /// Raft messages sent so far, per group.
    pub sent: BTreeMap<GroupId, u64>,
    /// Nodes whose disk writes are held unfinished (a stalled disk): their completions wait
    /// here until `release_writes`.
    pub stalled: BTreeMap<NodeId, Vec<Input>>,
}

pub fn config(node: NodeId) -> NodeConfig {
    config_among(node, &NODES)
}

/// The configuration of `node` in a cluster of `ids`.
pub fn config_among(node: NodeId, ids: &[NodeId]) -> NodeConfig {
    let mut config = NodeConfig::new(node, Vec::new());
    config.metadata_voters = ids.to_vec();
    config
}

pub fn logger() -> slog::Logger {
    slog::Logger::root(Capture, slog::o!())
}

thread_local! {
    /// What the nodes of this thread's test logged at warning level or above.
    static WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps the messages of warnings and errors, per thread (each test runs on its own).
struct Capture;

impl slog::Drain for Capture {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if record.level().is_at_least(slog::Level::Warning) {
            WARNINGS.with(|w| w.borrow_mut().push(record.msg().to_string()));
        }
        Ok(())
    }
}

/// The warnings this test's nodes logged so far.
pub fn warnings() -> Vec<String> {
    WARNINGS.with(|w| w.borrow().clone())
}

impl Cluster {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A cluster whose node configurations `tweak` changes.
    pub fn with(tweak: fn(&mut NodeConfig)) -> Self {
        Self::with_ids(&NODES, tweak)
    }

    /// A cluster of the nodes `ids`, whose configurations `tweak` changes.
    pub fn with_ids(ids: &[NodeId], tweak: fn(&mut NodeConfig)) -> Self {
        let nodes = ids
            .iter()
            .map(|n| {
                let mut config = config_among(*n, ids);
                tweak(&mut config);
                let node = Node::new(config, 11, 0, DurableState::default(), &logger());
                (*n, node)
            })
            .collect();
        Self {
            tweak,
            ids: ids.to_vec(),
            nodes,
            disks: ids.iter().map(|n| (*n, Vec::new())).collect(),
            incarnations: ids.iter().map(|n| (*n, 0)).collect(),
            inputs: VecDeque::new(),
            replies: Vec::new(),
            now: Now {
                mono: Instant(0),
                wall_ms: 1_000,
            },
            next_request: 0,
            reads_served: 0,
            traces: Vec::new(),
            sent: BTreeMap::new(),
            stalled: BTreeMap::new(),
        }
    }

    /// Delivers inputs until none is left.
    pub fn settle(&mut self) {
        while let Some((to, input)) = self.inputs.pop_front() {
            let Some(node) = self.nodes.get_mut(&to) else {
                continue;
            };
            let mut out = Vec::new();
            node.handle(self.now, input, &mut out);
            for output in out {
                match output {
                    Output::Send { to: peer, messages } => {
                        for m in &messages {
                            *self.sent.entry(m.group).or_default() += 1;
                        }
                        self.inputs
                            .push_back((peer, Input::Peer { from: to, messages }));
                    }
                    Output::Write(write) => {
                        self.disks.get_mut(&to).expect("disk").extend(write.records);
                        let done = Input::WriteDone { seq: write.seq };
                        match self.stalled.get_mut(&to) {
                            Some(held) => held.push(done),
                            None => self.inputs.push_back((to, done)),
                        }
                    }
                    Output::Reply { id, response } => self.replies.push((to, id, response)),
                    Output::ReadEntries(read) => {
                        let entries = self.read_disk(to, &read);
                        self.reads_served += 1;
                        let input = Input::EntriesRead {
                            group: read.group,
                            low: read.from,
                            entries,
                        };
                        self.inputs.push_back((to, input));
                    }
                    Output::Trace(TraceEvent::Applied { .. }) => {}
                    Output::Trace(event) => self.traces.push((to, event)),
                }
            }
        }
    }

    /// Whether `node` wrote a snapshot of `group`: one it installed (a leader's), or, with
    /// `installed` false, one of its own compaction.
    pub fn has_snapshot(&self, node: NodeId, group: GroupId, installed: bool) -> bool {
        self.disks[&node].iter().any(|r| {
            matches!(
                r,
                WalRecord::Snapshot { group: g, install, .. } if *g == group && *install == installed
            )
        })
    }

    /// Holds `node`'s disk writes unfinished from now on.
    pub fn stall_writes(&mut self, node: NodeId) {
        self.stalled.entry(node).or_default();
    }

    /// Finishes `node`'s held writes, and no longer holds new ones.
    pub fn release_writes(&mut self, node: NodeId) {
        for done in self.stalled.remove(&node).unwrap_or_default() {
            self.inputs.push_back((node, done));
        }
        self.settle();
    }

    pub fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.now.mono = self.now.mono.plus_ms(100);
            for node in self.nodes.keys() {
                self.inputs.push_back((*node, Input::Tick));
            }
            self.settle();
        }
        for node in self.nodes.values() {
            node.invariants();
        }
    }

    pub fn metadata_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.group_status(METADATA_GROUP).is_some_and(|s| s.serving))
            .map(|(id, _)| *id)
    }

    pub fn admin(&mut self, to: NodeId, command: MetadataCommand) -> Response {
        let request = Request::Admin(AdminRequest {
            command,
            validate_only: false,
            forward: Forward::No,
            timeout_ms: 5_000,
        });
        self.request(to, request)
    }

    /// Sends a request and waits (ticking) for its answer.
    /// Produces `batch` with acks=all through `to`; the answer.
    pub fn produce_answer(&mut self, to: NodeId, group: GroupId, batch: Bytes) -> Response {
        let request = oxbow_core::io::ProduceRequest {
            group,
            acks: oxbow_core::io::Acks::All,
            batch,
            timeout_ms: 5_000,
            transactional_id: None,
        };
        self.request(to, Request::Produce(request))
    }

    /// Produces `batch` with acks=all through `to`, which must take it; the offset it was
    /// acknowledged at.
    pub fn produce(&mut self, to: NodeId, group: GroupId, batch: Bytes) -> Offset {
        match self.produce_answer(to, group, batch) {
            Response::Produce(Ok(ack)) => ack.base_offset,
            other => panic!("produce refused: {other:?}"),
        }
    }

    pub fn request(&mut self, to: NodeId, request: Request) -> Response {
        let id = self.submit(to, request);
        self.answer(id)
    }

    /// Sends a request without waiting.
    pub fn submit(&mut self, to: NodeId, request: Request) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.inputs.push_back((to, Input::Request { id, request }));
        id
    }

    /// Waits (ticking) for the answer to `id`.
    pub fn answer(&mut self, id: RequestId) -> Response {
        for _ in 0..50 {
            self.settle();
            if let Some(at) = self.replies.iter().position(|(_, i, _)| *i == id) {
                return self.replies.remove(at).2;
            }
            self.tick(1);
        }
        panic!("no answer to request {id:?}");
    }

    /// Reads entries back from a node's disk as the segment log does.
    pub fn read_disk(&self, node: NodeId, read: &DiskRead) -> Vec<Entry> {
        let durable = self.replay(node);
        let Some(state) = durable.groups.get(&read.group) else {
            return Vec::new();
        };
        let mut bytes = 0u64;
        let mut entries = Vec::new();
        for entry in &state.entries {
            if entry.index < read.from.0 || entry.index > read.to.0 {
                continue;
            }
            if !entries.is_empty() && bytes >= read.read_bytes {
                break;
            }
            bytes += entry.data.len() as u64;
            entries.push(entry.clone());
        }
        entries
    }

    /// Replays a node's disk the way the segment log's recovery does.
    pub fn durable(&self, node: NodeId) -> DurableState {
        let mut groups = self.replay(node).groups;
        // As the segment log: a checkpoint of an entry still in the log keeps the entries up
        // to it on disk (only their terms are recovered).
        for state in groups.values_mut() {
            let checkpoint = state.checkpoint.take().filter(|c| {
                c.index > state.snapshot.get_metadata().index
                    && state
                        .entries
                        .iter()
                        .any(|e| e.index == c.index && e.term == c.term)
            });
            if let Some(c) = &checkpoint {
                for e in state.entries.iter().filter(|e| e.index <= c.index) {
                    if state.terms.last().is_none_or(|(_, t)| *t != e.term) {
                        state.terms.push((e.index, e.term));
                    }
                }
                state.entries.retain(|e| e.index > c.index);
            }
            state.checkpoint = checkpoint;
        }
        DurableState { groups }
    }

    /// A node's disk as written: every live entry of every group, and its latest checkpoint.
    pub fn replay(&self, node: NodeId) -> DurableState {
        let mut groups: BTreeMap<GroupId, GroupDurableState> = BTreeMap::new();
        for record in &self.disks[&node] {
            match record {
                WalRecord::Entries { group, entries } => {
                    let state = groups.entry(*group).or_default();
                    let first = entries[0].index;
                    state.entries.retain(|e| e.index < first);
                    state.entries.extend(entries.iter().cloned());
                }
                WalRecord::HardState {
                    group, hard_state, ..
                } => {
                    groups.entry(*group).or_default().hard_state = hard_state.clone();
                }
                WalRecord::Snapshot {
                    group,
                    snapshot,
                    install,
                } => {
                    let state = groups.entry(*group).or_default();
                    let index = snapshot.get_metadata().index;
                    if *install || state.checkpoint.as_ref().is_some_and(|c| c.index <= index) {
                        state.checkpoint = None;
                    }
                    if *install {
                        state.entries.clear();
                    } else {
                        state.entries.retain(|e| e.index > index);
                    }
                    state.snapshot = snapshot.clone();
                }
                WalRecord::Checkpoint { group, checkpoint } => {
                    groups.entry(*group).or_default().checkpoint = Some(checkpoint.clone());
                }
                WalRecord::RemoveGroup { group } => {
                    groups.remove(group);
                }
            }
        }
        DurableState { groups }
    }

    /// Elects a controller, creates topic `name` with one partition on all three nodes, and
    /// returns its group once it has a serving leader.
    pub fn one_partition_topic(&mut self, name: &str) -> GroupId {
        self.tick(40);
        let controller = self.metadata_leader().expect("a controller");
        let created = self.admin(controller, create(name, 1, 3));
        assert!(
            matches!(created, Response::Admin(Ok(Some(_)))),
            "{created:?}"
        );
        self.tick(40);
        self.nodes[&controller]
            .metadata()
            .expect("runs")
            .topic(name)
            .expect("created")
            .partitions[0]
            .group
    }

    pub fn restart(&mut self, node: NodeId) {
        let incarnation = self.incarnations[&node] + 1;
        self.incarnations.insert(node, incarnation);
        let durable = self.durable(node);
        let mut config = config_among(node, &self.ids);
        (self.tweak)(&mut config);
        let restarted = Node::new(config, 11, incarnation, durable, &logger());
        self.nodes.insert(node, restarted);
    }

    /// Asserts that every node hosts exactly the partitions it is a replica of.
    pub fn check_placement(&self, topic: &str) {
        for (id, node) in &self.nodes {
            let meta = node.metadata().expect("metadata group");
            let Some(topic) = meta.topic(topic) else {
                continue;
            };
            for partition in &topic.partitions {
                assert_eq!(
                    node.group_status(partition.group).is_some(),
                    partition.replicas.contains(id),
                    "node {id} hosting group {}",
                    partition.group
                );
            }
        }
    }
}

pub fn create(name: &str, partitions: u32, replication_factor: u16) -> MetadataCommand {
    MetadataCommand::CreateTopic(CreateTopic {
        name: name.into(),
        partitions,
        replication_factor,
        configs: BTreeMap::new(),
        assignment: Vec::new(),
    })
}

/// A plain batch of `count` records.
pub fn batch(count: i32) -> Bytes {
    batch_at(count, 1_000)
}

/// A plain batch of `count` records stamped `timestamp`.
pub fn batch_at(count: i32, timestamp: i64) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            // The encoder starts a new batch where sequences are not consecutive.
            sequence: (-1i32).wrapping_add(i),
            timestamp,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
    buf.freeze()
}

/// A batch of `count` records from idempotent producer `producer_id` (epoch 0), its first
/// record at `sequence`.
pub fn idempotent_batch(producer_id: i64, sequence: i32, count: i32) -> Bytes {
    producer_batch(producer_id, sequence, count, false)
}

/// A transactional producer's batch (epoch 0).
pub fn transactional_batch(producer_id: i64, sequence: i32, count: i32) -> Bytes {
    producer_batch(producer_id, sequence, count, true)
}

/// A transactional producer's batch at `epoch`.
pub fn txn_batch(producer_id: i64, epoch: i16, sequence: i32, count: i32) -> Bytes {
    producer_batch_at(producer_id, epoch, sequence, count, true)
}

fn producer_batch(producer_id: i64, sequence: i32, count: i32, transactional: bool) -> Bytes {
    producer_batch_at(producer_id, 0, sequence, count, transactional)
}

fn producer_batch_at(
    producer_id: i64,
    producer_epoch: i16,
    sequence: i32,
    count: i32,
    transactional: bool,
) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: sequence.wrapping_add(i),
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
    buf.freeze()
}

pub fn serving_leader(cluster: &Cluster, group: GroupId) -> NodeId {
    *cluster
        .nodes
        .iter()
        .find(|(_, n)| n.group_status(group).is_some_and(|s| s.serving))
        .expect("a serving leader")
        .0
}
