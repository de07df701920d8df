//! Three real cores on a perfect network, each over the real segment log on a simulated disk:
//! built once (a controller, a topic with records), then restarted from copies of their disks
//! for every input, so that each run starts from the same state and a crash replays.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use oxbow_core::ids::{GroupId, NodeId, RequestId};
use oxbow_core::io::{
    Acks, AdminRequest, Forward, Input, Output, ProduceRequest, Request, Response,
};
use oxbow_core::metadata::{CreateTopic, MetadataCommand, METADATA_GROUP};
use oxbow_core::node::{Node, NodeConfig};
use oxbow_core::time::{Instant, Now};
use oxbow_node::storage::{SegmentLog, SegmentLogOptions, SimDisk};

/// The node the `peer_frame` target feeds.
pub const RECEIVER: NodeId = NodeId(1);
/// The nodes.
pub const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const SEED: u64 = 11;

/// A running cluster.
pub struct Cluster {
    /// The cores.
    pub nodes: BTreeMap<NodeId, Node>,
    logs: BTreeMap<NodeId, SegmentLog<SimDisk>>,
    inputs: VecDeque<(NodeId, Input)>,
    replies: Vec<(RequestId, Response)>,
    /// The time of the next input.
    pub now: Now,
    next_request: u64,
    /// With `Some`, what the nodes send is also recorded here (see `record_sends`).
    recording: Option<Vec<(NodeId, Vec<u8>)>>,
}

/// A cluster at rest: every node's disk and the time.
#[derive(Clone)]
pub struct Saved {
    disks: BTreeMap<NodeId, SimDisk>,
    now: Now,
}

fn config(node: NodeId) -> NodeConfig {
    let mut config = NodeConfig::new(node, Vec::new());
    config.metadata_voters = NODES.to_vec();
    config
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl Cluster {
    /// Starts every node from its saved disk (a restart: recovery, then the core), with
    /// `incarnation` for the cores' randomness.
    pub fn restart(saved: &Saved, incarnation: u64) -> Self {
        let mut nodes = BTreeMap::new();
        let mut logs = BTreeMap::new();
        for node in NODES {
            let disk = saved.disks.get(&node).cloned().unwrap_or_default();
            let (log, durable, _) =
                SegmentLog::open(disk, SegmentLogOptions::default()).expect("own disk recovers");
            nodes.insert(
                node,
                Node::new(config(node), SEED, incarnation, durable, &logger()),
            );
            logs.insert(node, log);
        }
        Self {
            nodes,
            logs,
            inputs: VecDeque::new(),
            replies: Vec::new(),
            now: saved.now,
            next_request: 0,
            recording: None,
        }
    }

    /// Builds the starting state: an elected controller, a topic `fuzz` of two partitions on
    /// all three nodes, and a few batches in each partition.
    pub fn build() -> Saved {
        let empty = Saved {
            disks: BTreeMap::new(),
            now: Now {
                mono: Instant(0),
                wall_ms: 1_000,
            },
        };
        let mut cluster = Self::restart(&empty, 0);
        cluster.tick(40);
        let controller = cluster.controller().expect("a controller");
        let create = MetadataCommand::CreateTopic(CreateTopic {
            name: "fuzz".into(),
            partitions: 2,
            replication_factor: 3,
            configs: BTreeMap::new(),
            assignment: Vec::new(),
        });
        let created = cluster.request(
            controller,
            Request::Admin(AdminRequest {
                command: create,
                validate_only: false,
                forward: Forward::No,
                timeout_ms: 5_000,
            }),
        );
        assert!(
            matches!(created, Some(Response::Admin(Ok(_)))),
            "{created:?}"
        );
        cluster.tick(40);
        let groups: Vec<GroupId> = cluster.nodes[&controller]
            .metadata()
            .expect("runs")
            .topic("fuzz")
            .expect("created")
            .partitions
            .iter()
            .map(|p| p.group)
            .collect();
        for group in groups {
            for count in 1..=3 {
                for node in NODES {
                    let produce = Request::Produce(ProduceRequest {
                        group,
                        acks: Acks::All,
                        batch: crate::seeds::batch(count, 1_000 + i64::from(count)),
                        timeout_ms: 5_000,
                        transactional_id: None,
                    });
                    // Only the leader takes it; the others answer NOT_LEADER.
                    cluster.request(node, produce);
                }
            }
        }
        cluster.tick(10);
        cluster.save()
    }

    /// Every node's disk, and the time.
    pub fn save(&self) -> Saved {
        Saved {
            disks: self
                .logs
                .iter()
                .map(|(node, log)| (*node, log.disk().clone()))
                .collect(),
            now: self.now,
        }
    }

    /// The node whose metadata group serves, if any.
    pub fn controller(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.group_status(METADATA_GROUP).is_some_and(|s| s.serving))
            .map(|(id, _)| *id)
    }

    /// Queues an input for `to`.
    pub fn push(&mut self, to: NodeId, input: Input) {
        self.inputs.push_back((to, input));
    }

    /// Delivers inputs until none is left, then checks every node's invariants.
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
                        if let Some(recording) =
                            self.recording.as_mut().filter(|_| peer == RECEIVER)
                        {
                            let mut frame = Vec::new();
                            oxbow_node::runtime::peer::encode_frame(&messages, &mut frame);
                            recording.push((to, frame[8..].to_vec()));
                        }
                        self.inputs
                            .push_back((peer, Input::Peer { from: to, messages }));
                    }
                    Output::Write(write) => {
                        let log = self.logs.get_mut(&to).expect("a log");
                        log.append(&write.records).expect("simulated disk");
                        log.sync().expect("simulated disk");
                        self.inputs
                            .push_back((to, Input::WriteDone { seq: write.seq }));
                    }
                    Output::Reply { id, response } => self.replies.push((id, response)),
                    Output::ReadEntries(read) => {
                        let log = self.logs.get_mut(&to).expect("a log");
                        let entries = log
                            .read_entries(read.group, read.from.0, read.to.0, read.read_bytes)
                            .expect("simulated disk");
                        self.inputs.push_back((
                            to,
                            Input::EntriesRead {
                                group: read.group,
                                low: read.from,
                                entries,
                            },
                        ));
                    }
                    Output::Trace(_) => {}
                }
            }
        }
        for node in self.nodes.values() {
            node.invariants();
        }
    }

    /// Ticks every node `ticks` times, 100 ms apart.
    pub fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.now.mono = self.now.mono.plus_ms(100);
            self.now.wall_ms += 100;
            for node in NODES {
                self.inputs.push_back((node, Input::Tick));
            }
            self.settle();
        }
    }

    /// Sends a request and waits (ticking, up to 50 ticks) for its answer.
    pub fn request(&mut self, to: NodeId, request: Request) -> Option<Response> {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.inputs.push_back((to, Input::Request { id, request }));
        for _ in 0..50 {
            self.settle();
            if let Some(at) = self.replies.iter().position(|(i, _)| *i == id) {
                return Some(self.replies.remove(at).1);
            }
            self.tick(1);
        }
        None
    }
}

impl Saved {
    /// Every node's files: name and content.
    pub fn files(&self) -> Vec<(NodeId, Vec<(String, Vec<u8>)>)> {
        use oxbow_node::storage::Disk as _;
        self.disks
            .iter()
            .map(|(node, disk)| {
                let mut disk = disk.clone();
                let names = disk.list().expect("simulated disk");
                let files = names
                    .into_iter()
                    .map(|name| {
                        let bytes = disk.read(&name).expect("simulated disk");
                        (name, bytes)
                    })
                    .collect();
                (*node, files)
            })
            .collect()
    }

    /// The entries node 1's disk holds for `group` after its snapshot or checkpoint.
    pub fn entries(&self, group: GroupId) -> Vec<oxbow_core::raft::eraftpb::Entry> {
        let disk = self.disks[&NodeId(1)].clone();
        let (_, durable, _) =
            SegmentLog::open(disk, SegmentLogOptions::default()).expect("own disk recovers");
        durable
            .groups
            .get(&group)
            .map(|g| g.entries.clone())
            .unwrap_or_default()
    }
}

impl Cluster {
    /// Ticks `ticks` times and returns what the nodes sent each other meanwhile, as peer frame
    /// payloads (sender, payload), of the frames `RECEIVER` receives.
    pub fn record_sends(&mut self, ticks: usize) -> Vec<(NodeId, Vec<u8>)> {
        self.recording = Some(Vec::new());
        self.tick(ticks);
        self.recording.take().unwrap_or_default()
    }
}

/// Bytes of a frame's payload, shared (as the peer transport hands them on).
pub fn shared(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}
