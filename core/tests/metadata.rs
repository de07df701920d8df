//! The metadata group on three in-memory nodes: admin changes are proposed to its leader, every
//! node applies them and starts or stops exactly its partition groups, leaders are gossiped,
//! and a restarted node rebuilds its groups from its disk by replaying the metadata log.

use std::collections::{BTreeMap, VecDeque};

use oxbow_core::ids::{GroupId, NodeId, RequestId};
use oxbow_core::io::{AdminRequest, Input, Output, Request, Response, WalRecord};
use oxbow_core::metadata::{
    AdminError, CreateTopic, MetadataChange, MetadataCommand, METADATA_GROUP,
};
use oxbow_core::node::{DurableState, GroupDurableState, Node, NodeConfig};
use oxbow_core::time::{Instant, Now};

const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

/// Three nodes on a perfect network, with disks that complete every write at once and keep
/// every record (so a node can be restarted from them).
struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    disks: BTreeMap<NodeId, Vec<WalRecord>>,
    incarnations: BTreeMap<NodeId, u64>,
    inputs: VecDeque<(NodeId, Input)>,
    replies: Vec<(NodeId, RequestId, Response)>,
    now: Now,
    next_request: u64,
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
    fn new() -> Self {
        let nodes = NODES
            .iter()
            .map(|n| {
                let node = Node::new(config(*n), 11, 0, DurableState::default(), &logger());
                (*n, node)
            })
            .collect();
        Self {
            nodes,
            disks: NODES.iter().map(|n| (*n, Vec::new())).collect(),
            incarnations: NODES.iter().map(|n| (*n, 0)).collect(),
            inputs: VecDeque::new(),
            replies: Vec::new(),
            now: Now {
                mono: Instant(0),
                wall_ms: 1_000,
            },
            next_request: 0,
        }
    }

    /// Delivers inputs until none is left.
    fn settle(&mut self) {
        while let Some((to, input)) = self.inputs.pop_front() {
            let Some(node) = self.nodes.get_mut(&to) else {
                continue;
            };
            let mut out = Vec::new();
            node.handle(self.now, input, &mut out);
            for output in out {
                match output {
                    Output::Send { to: peer, messages } => {
                        self.inputs
                            .push_back((peer, Input::Peer { from: to, messages }));
                    }
                    Output::Write(write) => {
                        self.disks.get_mut(&to).expect("disk").extend(write.records);
                        self.inputs
                            .push_back((to, Input::WriteDone { seq: write.seq }));
                    }
                    Output::Reply { id, response } => self.replies.push((to, id, response)),
                    Output::Trace(_) => {}
                }
            }
        }
    }

    fn tick(&mut self, ticks: usize) {
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

    fn metadata_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.group_status(METADATA_GROUP).is_some_and(|s| s.serving))
            .map(|(id, _)| *id)
    }

    fn admin(&mut self, to: NodeId, command: MetadataCommand) -> Response {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let request = Request::Admin(AdminRequest {
            command,
            validate_only: false,
            forward: false,
            timeout_ms: 5_000,
        });
        self.inputs.push_back((to, Input::Request { id, request }));
        for _ in 0..50 {
            self.settle();
            if let Some(at) = self.replies.iter().position(|(_, i, _)| *i == id) {
                return self.replies.remove(at).2;
            }
            self.tick(1);
        }
        panic!("no answer to admin request {id:?}");
    }

    /// Replays a node's disk the way the segment log's recovery does.
    fn durable(&self, node: NodeId) -> DurableState {
        let mut groups: BTreeMap<GroupId, GroupDurableState> = BTreeMap::new();
        for record in &self.disks[&node] {
            match record {
                WalRecord::Entries { group, entries } => {
                    let state = groups.entry(*group).or_default();
                    let first = entries[0].index;
                    state.entries.retain(|e| e.index < first);
                    state.entries.extend(entries.iter().cloned());
                }
                WalRecord::HardState { group, hard_state } => {
                    groups.entry(*group).or_default().hard_state = hard_state.clone();
                }
                WalRecord::Snapshot { .. } => panic!("nothing is compacted in this test"),
                WalRecord::RemoveGroup { group } => {
                    groups.remove(group);
                }
            }
        }
        DurableState { groups }
    }

    fn restart(&mut self, node: NodeId) {
        let incarnation = self.incarnations[&node] + 1;
        self.incarnations.insert(node, incarnation);
        let durable = self.durable(node);
        let restarted = Node::new(config(node), 11, incarnation, durable, &logger());
        self.nodes.insert(node, restarted);
    }

    /// Asserts that every node hosts exactly the partitions it is a replica of.
    fn check_placement(&self, topic: &str) {
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

fn create(name: &str, partitions: u32, replication_factor: u16) -> MetadataCommand {
    MetadataCommand::CreateTopic(CreateTopic {
        name: name.into(),
        partitions,
        replication_factor,
        configs: BTreeMap::new(),
    })
}

#[test]
fn topics_start_and_stop_partition_groups_on_their_replicas() {
    let mut cluster = Cluster::new();
    cluster.tick(40);
    let leader = cluster.metadata_leader().expect("a metadata leader");
    let follower = *NODES.iter().find(|n| **n != leader).expect("three nodes");

    // A follower refuses and names the controller.
    let refused = cluster.admin(follower, create("events", 3, 2));
    assert_eq!(
        refused,
        Response::Admin(Err(AdminError::NotController {
            leader: Some(leader)
        }))
    );
    let created = cluster.admin(leader, create("events", 3, 2));
    let Response::Admin(Ok(Some(MetadataChange::TopicCreated { id, .. }))) = created else {
        panic!("{created:?}")
    };
    assert_eq!(
        cluster.admin(leader, create("events", 1, 1)),
        Response::Admin(Err(AdminError::TopicAlreadyExists))
    );
    cluster.tick(40);
    for node in cluster.nodes.values() {
        let topic = node
            .metadata()
            .expect("runs")
            .topic("events")
            .expect("applied");
        assert_eq!(topic.id, id, "every node has the same topic id");
    }
    cluster.check_placement("events");

    // Every partition has a leader, and gossip lets every node name it.
    let topic = cluster.nodes[&leader]
        .metadata()
        .expect("runs")
        .topic("events")
        .expect("exists")
        .clone();
    for partition in &topic.partitions {
        let serving: Vec<NodeId> = cluster
            .nodes
            .iter()
            .filter(|(_, n)| n.group_status(partition.group).is_some_and(|s| s.serving))
            .map(|(id, _)| *id)
            .collect();
        let statuses: Vec<_> = cluster
            .nodes
            .values()
            .map(|n| n.group_status(partition.group))
            .collect();
        assert_eq!(
            serving.len(),
            1,
            "group {} {:?} {statuses:?}",
            partition.group,
            partition.replicas
        );
        for node in cluster.nodes.values() {
            assert_eq!(
                node.leader(partition.group).map(|(n, _)| n),
                Some(serving[0])
            );
        }
    }

    // Growing the topic starts the new partitions' groups.
    let grown = cluster.admin(
        leader,
        MetadataCommand::CreatePartitions {
            name: "events".into(),
            count: 5,
        },
    );
    assert!(
        matches!(
            grown,
            Response::Admin(Ok(Some(MetadataChange::PartitionsCreated { from: 3, .. })))
        ),
        "{grown:?}"
    );
    cluster.tick(40);
    cluster.check_placement("events");

    // A restarted node replays the metadata log and resumes exactly its groups.
    let victim = NODES[2];
    cluster.restart(victim);
    cluster.tick(40);
    assert_eq!(cluster.nodes[&victim].parked_groups().count(), 0);
    cluster.check_placement("events");

    // Deleting the topic stops its groups everywhere and removes them from the disks.
    let deleted = cluster.admin(
        cluster.metadata_leader().expect("leader"),
        MetadataCommand::DeleteTopic {
            name: "events".into(),
        },
    );
    assert!(
        matches!(
            deleted,
            Response::Admin(Ok(Some(MetadataChange::TopicDeleted(_))))
        ),
        "{deleted:?}"
    );
    cluster.tick(20);
    for (id, node) in &cluster.nodes {
        assert!(node.metadata().expect("runs").topic("events").is_none());
        for partition in &topic.partitions {
            assert!(node.group_status(partition.group).is_none());
        }
        let durable = cluster.durable(*id);
        assert_eq!(
            durable.groups.keys().copied().collect::<Vec<_>>(),
            vec![METADATA_GROUP],
            "node {id} keeps only the metadata group on disk"
        );
    }
    cluster.restart(victim);
    cluster.tick(20);
    for partition in &topic.partitions {
        assert!(cluster.nodes[&victim]
            .group_status(partition.group)
            .is_none());
    }
}
