//! Transaction coordinators on three in-memory nodes: the partitions of `__transaction_state`,
//! InitProducerId with a transactional id (a producer id of the partition's range, an epoch
//! bump per instance, KIP-360 retries and fencing, the timeout bound, the bound on ids),
//! DescribeTransactions and ListTransactions, and the state kept across failovers, restarts and
//! snapshots.

mod common;

use common::*;
use oxbow_core::coordinator::{GroupError, GroupOp, GroupResponse, TxnOffsetCommit, OFFSETS_TOPIC};
use oxbow_core::ids::{Generation, Offset, ProducerEpoch, ProducerId};
use oxbow_core::io::{
    Acks, FetchData, FetchRequest, GroupRequest, ProduceError, ProduceRequest, TxnRequest,
};
use oxbow_core::txn::{
    partition_for, AddPartitions, EndTxn, InitProducerId, ProducerIds, TxnError, TxnMeta, TxnOp,
    TxnResponse, TxnState, TRANSACTION_STATE_TOPIC,
};

const PARTITIONS: u32 = 2;

struct Txns {
    cluster: Cluster,
}

impl Txns {
    fn with(tweak: fn(&mut NodeConfig)) -> Self {
        let mut cluster = Cluster::with(tweak);
        cluster.tick(40);
        let leader = cluster.metadata_leader().expect("a metadata leader");
        let created = cluster.admin(leader, create(TRANSACTION_STATE_TOPIC, PARTITIONS, 3));
        assert!(
            matches!(created, Response::Admin(Ok(Some(_)))),
            "{created:?}"
        );
        cluster.tick(40);
        Self { cluster }
    }

    /// The partition's group and the node serving it, for `transactional_id`.
    fn coordinator(&self, transactional_id: &str) -> Option<(GroupId, NodeId)> {
        let topic = self
            .cluster
            .nodes
            .values()
            .find_map(|node| node.metadata()?.topic(TRANSACTION_STATE_TOPIC).cloned())
            .expect("created");
        let index = partition_for(transactional_id, topic.partitions.len());
        let group = topic.partitions[index].group;
        self.cluster
            .nodes
            .iter()
            .find(|(_, n)| n.group_status(group).is_some_and(|s| s.serving))
            .map(|(id, _)| (group, *id))
    }

    /// Sends `op` to the coordinator of its transactional id.
    fn call(&mut self, op: TxnOp) -> TxnResponse {
        let (group, node) = self
            .coordinator(op.transactional_id())
            .expect("a coordinator");
        match self
            .cluster
            .request(node, Request::Txn(TxnRequest { group, op }))
        {
            Response::Txn(response) => response,
            other => panic!("{other:?}"),
        }
    }

    fn add(
        &mut self,
        transactional_id: &str,
        producer: (ProducerId, ProducerEpoch),
        partitions: &[(&str, i32)],
    ) -> Result<(), TxnError> {
        let op = TxnOp::AddPartitions(AddPartitions {
            transactional_id: transactional_id.into(),
            producer,
            partitions: partitions
                .iter()
                .map(|(t, p)| (t.to_string(), *p))
                .collect(),
        });
        match self.call(op) {
            TxnResponse::AddPartitions(result) => result,
            other => panic!("{other:?}"),
        }
    }

    fn end(
        &mut self,
        transactional_id: &str,
        producer: (ProducerId, ProducerEpoch),
        commit: bool,
    ) -> Result<(), TxnError> {
        let op = TxnOp::EndTxn(EndTxn {
            transactional_id: transactional_id.into(),
            producer,
            commit,
        });
        match self.call(op) {
            TxnResponse::EndTxn(result) => result,
            other => panic!("{other:?}"),
        }
    }

    /// Produces a batch of `producer`'s transaction `transactional_id` to `group`.
    fn produce_txn(
        &mut self,
        transactional_id: &str,
        group: GroupId,
        batch: Bytes,
    ) -> Result<Offset, ProduceError> {
        let leader = self.leader_of(group);
        let request = ProduceRequest {
            group,
            acks: Acks::All,
            batch,
            timeout_ms: 5_000,
            transactional_id: Some(transactional_id.into()),
        };
        match self.cluster.request(leader, Request::Produce(request)) {
            Response::Produce(result) => result.map(|ack| ack.base_offset),
            other => panic!("{other:?}"),
        }
    }

    /// A fetch of `group` from `offset`, read_committed or not.
    fn fetch(&mut self, group: GroupId, offset: i64, read_committed: bool) -> FetchData {
        let leader = self.leader_of(group);
        let request = FetchRequest {
            group,
            offset: Offset(offset),
            max_bytes: 1 << 20,
            current_leader_epoch: -1,
            read_committed,
        };
        match self.cluster.request(leader, Request::Fetch(request)) {
            Response::Fetch(Ok(data)) => data,
            other => panic!("{other:?}"),
        }
    }

    /// The node serving `group`, ticking until one does (a restarted node's groups elect).
    fn leader_of(&mut self, group: GroupId) -> NodeId {
        for _ in 0..100 {
            let serving = self
                .cluster
                .nodes
                .iter()
                .find(|(_, n)| n.group_status(group).is_some_and(|s| s.serving));
            if let Some((node, _)) = serving {
                return *node;
            }
            self.cluster.tick(1);
        }
        panic!("no leader of {group:?} in 100 ticks");
    }

    /// A partition of a new single-replica topic whose only replica is not the coordinator of
    /// `transactional_id`: stalling that node's disk holds the partition's markers back
    /// (whatever else it hosts still has a quorum without it). Its group and node.
    fn marker_hold(&mut self, name: &str, transactional_id: &str) -> (i32, GroupId, NodeId) {
        let groups = self.topic_of(name, 3, 1);
        let (_, coordinator) = self.coordinator(transactional_id).expect("a coordinator");
        let (index, group, node) = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (i as i32, *g, self.leader_of(*g)))
            .find(|(_, _, node)| *node != coordinator)
            .expect("a partition away from the coordinator");
        (index, group, node)
    }

    /// Ticks until `transactional_id`'s transaction is `state`.
    fn settle_in(&mut self, transactional_id: &str, state: TxnState) {
        for _ in 0..100 {
            let served = self.coordinator(transactional_id).is_some();
            if served && self.describe(transactional_id).map(|m| m.state) == Ok(state) {
                return;
            }
            self.cluster.tick(1);
        }
        panic!(
            "{transactional_id} never reached {state:?}: {:?}",
            self.describe(transactional_id)
        );
    }

    /// The Raft groups of a new topic's partitions.
    fn topic(&mut self, name: &str, partitions: u32) -> Vec<GroupId> {
        self.topic_of(name, partitions, 3)
    }

    /// The Raft groups of a new topic of `replicas` replicas per partition.
    fn topic_of(&mut self, name: &str, partitions: u32, replicas: u16) -> Vec<GroupId> {
        let leader = self.cluster.metadata_leader().expect("a metadata leader");
        let created = self
            .cluster
            .admin(leader, create(name, partitions, replicas));
        assert!(
            matches!(created, Response::Admin(Ok(Some(_)))),
            "{created:?}"
        );
        self.cluster.tick(40);
        let topic = self
            .cluster
            .nodes
            .values()
            .find_map(|node| node.metadata()?.topic(name).cloned())
            .expect("created");
        topic.partitions.iter().map(|p| p.group).collect()
    }

    fn describe(&mut self, transactional_id: &str) -> Result<TxnMeta, TxnError> {
        let op = TxnOp::Describe {
            transactional_id: transactional_id.into(),
        };
        match self.call(op) {
            TxnResponse::Describe(result) => result,
            other => panic!("{other:?}"),
        }
    }

    fn init(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(ProducerId, ProducerEpoch)>,
    ) -> Result<(ProducerId, ProducerEpoch), TxnError> {
        let (group, node) = self.coordinator(transactional_id).expect("a coordinator");
        let op = TxnOp::InitProducerId(InitProducerId {
            transactional_id: transactional_id.into(),
            timeout_ms,
            expected,
        });
        match self
            .cluster
            .request(node, Request::Txn(TxnRequest { group, op }))
        {
            Response::Txn(TxnResponse::InitProducerId(result)) => result,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn init_producer_id_bumps_epochs_fences_and_keeps_its_state_across_failovers() {
    let mut txns = Txns::with(|_| {});
    let (id, epoch) = txns.init("t", 60_000, None).expect("a new id");
    assert_eq!(epoch, ProducerEpoch(0));
    assert!(id.0 >= ProducerIds::BIT);
    // Every new instance bumps the epoch of the same producer id, and fences the one before
    // it, even when that one comes back with KIP-360's producer id and epoch.
    assert_eq!(txns.init("t", 60_000, None), Ok((id, ProducerEpoch(1))));
    let fenced = Some((id, ProducerEpoch(0)));
    assert_eq!(
        txns.init("t", 60_000, fenced),
        Err(TxnError::ProducerFenced)
    );
    // A different transactional id of the same partition gets the next id of the range.
    let home = partition_for("t", PARTITIONS as usize);
    let neighbour = (0..)
        .map(|i| format!("n-{i}"))
        .find(|n| partition_for(n, PARTITIONS as usize) == home)
        .expect("one");
    let (other, _) = txns.init(&neighbour, 60_000, None).expect("a new id");
    assert_eq!(other.0, id.0 + 1, "the partition's counter moves on");

    // KIP-360: the current instance asks again, its retry gets the same answer, anything
    // else is fenced.
    let current = Some((id, ProducerEpoch(1)));
    assert_eq!(txns.init("t", 60_000, current), Ok((id, ProducerEpoch(2))));
    assert_eq!(txns.init("t", 60_000, current), Ok((id, ProducerEpoch(2))));
    let stale = Some((id, ProducerEpoch(0)));
    assert_eq!(txns.init("t", 60_000, stale), Err(TxnError::ProducerFenced));
    // An id the coordinator does not know is new, whatever the producer had (as Kafka).
    let unknown = Some((ProducerId(5), ProducerEpoch(0)));
    let (fresh_u, epoch_u) = txns.init("u", 60_000, unknown).expect("a new id");
    assert_eq!(epoch_u, ProducerEpoch(0));
    assert!(fresh_u.0 >= ProducerIds::BIT);
    // Once known, that producer id and epoch are another instance's: fenced.
    assert_eq!(
        txns.init("u", 60_000, unknown),
        Err(TxnError::ProducerFenced)
    );

    // The timeout is between 1 ms and the maximum; the id is not empty.
    for timeout_ms in [0, -1, 900_001] {
        assert_eq!(
            txns.init("t", timeout_ms, None),
            Err(TxnError::InvalidTransactionTimeout)
        );
    }
    let (group, node) = txns.coordinator("t").expect("a coordinator");
    let op = TxnOp::InitProducerId(InitProducerId {
        transactional_id: String::new(),
        timeout_ms: 1_000,
        expected: None,
    });
    let answer = txns
        .cluster
        .request(node, Request::Txn(TxnRequest { group, op }));
    assert!(
        matches!(
            answer,
            Response::Txn(TxnResponse::InitProducerId(Err(TxnError::InvalidRequest)))
        ),
        "{answer:?}"
    );

    // The coordinator restarts: another replica takes over with the stored state.
    txns.cluster.restart(node);
    let mut moved = None;
    for _ in 0..60 {
        txns.cluster.tick(1);
        if let Some((_, now)) = txns.coordinator("t").filter(|(_, now)| *now != node) {
            moved = Some(now);
            break;
        }
    }
    assert!(
        moved.is_some(),
        "another node coordinates after the restart"
    );
    assert_eq!(txns.init("t", 60_000, None), Ok((id, ProducerEpoch(3))));
    // Its producer id counter came with it: a new id is not handed out twice.
    let (fresh, _) = txns.init("v", 60_000, None).expect("a new id");
    assert!(fresh != id && fresh != other, "{fresh:?}");
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn describe_and_list_read_the_stored_state_on_the_serving_coordinator() {
    let mut txns = Txns::with(|_| {});
    let names: Vec<String> = (0..6).map(|i| format!("d-{i}")).collect();
    for name in &names {
        txns.init(name, 30_000, None).expect("a new id");
    }
    let (id, _) = txns.init(&names[0], 45_000, None).expect("bumped");
    let (group, node) = txns.coordinator(&names[0]).expect("a coordinator");
    let describe = |txns: &mut Txns, node, transactional_id: &str| {
        let op = TxnOp::Describe {
            transactional_id: transactional_id.into(),
        };
        match txns
            .cluster
            .request(node, Request::Txn(TxnRequest { group, op }))
        {
            Response::Txn(TxnResponse::Describe(result)) => result,
            other => panic!("{other:?}"),
        }
    };
    let meta = describe(&mut txns, node, &names[0]).expect("described");
    assert_eq!((meta.producer_id, meta.epoch), (id, ProducerEpoch(1)));
    assert_eq!((meta.timeout_ms, meta.state), (45_000, TxnState::Empty));
    assert!(meta.partitions.is_empty() && meta.start_ms == -1);
    let home = partition_for(&names[0], PARTITIONS as usize);
    let unknown = (0..)
        .map(|i| format!("never-{i}"))
        .find(|n| partition_for(n, PARTITIONS as usize) == home)
        .expect("one");
    assert_eq!(
        describe(&mut txns, node, &unknown),
        Err(TxnError::TransactionalIdNotFound)
    );
    let follower = *txns
        .cluster
        .nodes
        .keys()
        .find(|n| **n != node)
        .expect("3 nodes");
    assert_eq!(
        describe(&mut txns, follower, &names[0]),
        Err(TxnError::NotCoordinator)
    );

    // Each node lists the ids of the partitions it serves: together, each id once.
    let nodes: Vec<NodeId> = txns.cluster.nodes.keys().copied().collect();
    let mut listed = Vec::new();
    for node in nodes {
        let request = Request::ListTransactions {
            duration_filter_ms: -1,
        };
        match txns.cluster.request(node, request) {
            Response::ListTransactions(ids) => listed.extend(ids.into_iter().map(|(i, _)| i)),
            other => panic!("{other:?}"),
        }
    }
    listed.sort();
    assert_eq!(listed, names);
    // A duration filter keeps only running transactions: none runs.
    let request = Request::ListTransactions {
        duration_filter_ms: 0,
    };
    let Response::ListTransactions(long) = txns.cluster.request(node, request) else {
        panic!("list")
    };
    assert_eq!(long, Vec::new());
}

#[test]
fn snapshots_keep_the_epochs_and_the_counter() {
    // A snapshot after every few entries: a restarted node rebuilds from it.
    let mut txns = Txns::with(|config| config.command_entries_max = 4);
    let mut ids = Vec::new();
    for i in 0..12 {
        let name = format!("s-{i}");
        let (id, _) = txns.init(&name, 60_000, None).expect("a new id");
        assert_eq!(txns.init(&name, 60_000, None), Ok((id, ProducerEpoch(1))));
        ids.push((name, id));
        txns.cluster.tick(1);
    }
    let nodes = txns.cluster.nodes.keys().copied().collect::<Vec<_>>();
    for (name, _) in &ids {
        let (group, _) = txns.coordinator(name).expect("a coordinator");
        assert!(
            nodes
                .iter()
                .all(|node| txns.cluster.has_snapshot(*node, group, false)),
            "every replica compacted its log into a snapshot"
        );
    }
    for node in nodes {
        txns.cluster.restart(node);
        txns.cluster.tick(40);
    }
    for (name, id) in &ids {
        assert_eq!(txns.init(name, 60_000, None), Ok((*id, ProducerEpoch(2))));
    }
    let unique: std::collections::BTreeSet<_> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), ids.len(), "no producer id handed out twice");
    let (fresh, _) = txns.init("after", 60_000, None).expect("a new id");
    assert!(!unique.contains(&fresh));
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn a_full_partition_refuses_new_transactional_ids_but_not_known_ones() {
    let mut txns = Txns::with(|config| config.txn.transactional_ids_max = 2);
    let home = partition_for("a", PARTITIONS as usize);
    let names: Vec<String> = (0..)
        .map(|i| format!("x-{i}"))
        .filter(|n| partition_for(n, PARTITIONS as usize) == home)
        .take(3)
        .collect();
    let (first, _) = txns.init(&names[0], 60_000, None).expect("room");
    txns.init(&names[1], 60_000, None).expect("room");
    assert_eq!(
        txns.init(&names[2], 60_000, None),
        Err(TxnError::CoordinatorNotAvailable)
    );
    assert_eq!(
        txns.init(&names[0], 60_000, None),
        Ok((first, ProducerEpoch(1)))
    );
}

#[test]
fn a_partition_whose_state_would_pass_its_byte_limit_refuses_new_ids() {
    // Room for the header and about four entries of 260-byte ids.
    let mut txns = Txns::with(|config| config.txn.state_bytes_max = 1_300);
    let home = partition_for("a", PARTITIONS as usize);
    let names: Vec<String> = (0..)
        .map(|i| format!("{i:0>260}"))
        .filter(|n| partition_for(n, PARTITIONS as usize) == home)
        .take(6)
        .collect();
    let mut taken = 0;
    for name in &names {
        match txns.init(name, 60_000, None) {
            Ok(_) => taken += 1,
            Err(error) => {
                assert_eq!(error, TxnError::CoordinatorNotAvailable);
                break;
            }
        }
    }
    assert_eq!(taken, 4, "four entries of about 320 bytes fit in 1,300");
    // A known id is still served.
    assert_eq!(
        txns.init(&names[0], 60_000, None).map(|(_, e)| e),
        Ok(ProducerEpoch(1))
    );
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn a_transaction_begins_with_its_first_partition_and_its_end_is_stored_before_the_answer() {
    let mut txns = Txns::with(|_| {});
    let me = txns.init("t", 60_000, None).expect("a new id");
    let (held, held_group, held_node) = txns.marker_hold("held", "t");
    // Nothing to end yet.
    assert_eq!(txns.end("t", me, true), Err(TxnError::InvalidTxnState));
    txns.cluster.now.wall_ms = 5_000;
    assert_eq!(txns.add("t", me, &[("b", 1), ("a", 0)]), Ok(()));
    let meta = txns.describe("t").expect("known");
    assert_eq!(meta.state, TxnState::Ongoing);
    assert_eq!(meta.start_ms, 5_000);
    let both = vec![("a".to_string(), 0), ("b".to_string(), 1)];
    assert_eq!(meta.partitions, both);
    // A retry, and more partitions: one transaction, each partition once, the start kept.
    txns.cluster.now.wall_ms = 6_000;
    assert_eq!(txns.add("t", me, &[("a", 0)]), Ok(()));
    assert_eq!(txns.add("t", me, &[("a", 0), ("c", 0)]), Ok(()));
    let meta = txns.describe("t").expect("known");
    assert_eq!((meta.partitions.len(), meta.start_ms), (3, 5_000));

    // Only the current instance of the id may add or end.
    let (id, epoch) = me;
    let fenced = (id, ProducerEpoch(epoch.0 + 1));
    assert_eq!(
        txns.add("t", fenced, &[("d", 0)]),
        Err(TxnError::ProducerFenced)
    );
    let stranger = (ProducerId(id.0 + 1), epoch);
    assert_eq!(
        txns.end("t", stranger, true),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        txns.add("unknown", me, &[("a", 0)]),
        Err(TxnError::InvalidProducerIdMapping)
    );

    // The outcome is stored before the answer; while its markers are written (one
    // partition's node cannot write, so its marker waits), everything else waits, and the
    // other outcome is refused.
    assert_eq!(txns.add("t", me, &[("held", held)]), Ok(()));
    assert_eq!(
        txns.produce_txn("t", held_group, txn_batch(id.0, epoch.0, 0, 1)),
        Ok(Offset(0))
    );
    txns.cluster.stall_writes(held_node);
    assert_eq!(txns.end("t", me, true), Ok(()));
    let meta = txns.describe("t").expect("known");
    assert_eq!(meta.state, TxnState::PrepareCommit);
    assert_eq!(meta.partitions.len(), 4, "the partitions that need markers");
    assert_eq!(
        txns.end("t", me, true),
        Err(TxnError::ConcurrentTransactions)
    );
    assert_eq!(txns.end("t", me, false), Err(TxnError::InvalidTxnState));
    assert_eq!(
        txns.add("t", me, &[("a", 0)]),
        Err(TxnError::ConcurrentTransactions)
    );
    assert_eq!(
        txns.init("t", 60_000, None),
        Err(TxnError::ConcurrentTransactions)
    );

    // A failover keeps the outcome, and the new coordinator completes it once the held
    // partition can write its marker.
    let (_, node) = txns.coordinator("t").expect("a coordinator");
    txns.cluster.restart(node);
    for _ in 0..60 {
        txns.cluster.tick(1);
        if txns.coordinator("t").is_some_and(|(_, n)| n != node) {
            break;
        }
    }
    assert_eq!(txns.describe("t").expect("known"), meta);
    txns.cluster.release_writes(held_node);
    txns.settle_in("t", TxnState::CompleteCommit);
    let after = txns.describe("t").expect("known");
    assert_eq!(
        (after.producer_id, after.epoch),
        (meta.producer_id, meta.epoch)
    );
    assert!(after.partitions.is_empty());
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn a_new_instance_aborts_the_open_transaction_and_fences_the_one_before() {
    let mut txns = Txns::with(|_| {});
    let old = txns.init("t", 60_000, None).expect("a new id");
    let (held, held_group, held_node) = txns.marker_hold("held", "t");
    assert_eq!(txns.add("t", old, &[("held", held)]), Ok(()));
    // A record of the transaction on a partition whose node cannot write: its abort marker
    // waits.
    assert_eq!(
        txns.produce_txn("t", held_group, txn_batch(old.0 .0, old.1 .0, 0, 1)),
        Ok(Offset(0))
    );
    txns.cluster.stall_writes(held_node);
    // The new instance is told to come back once the abort is done.
    assert_eq!(
        txns.init("t", 60_000, None),
        Err(TxnError::ConcurrentTransactions)
    );
    let meta = txns.describe("t").expect("known");
    assert_eq!(meta.state, TxnState::PrepareAbort);
    assert_eq!(
        meta.epoch,
        ProducerEpoch(old.1 .0 + 1),
        "the old instance is fenced"
    );
    assert_eq!(txns.end("t", old, true), Err(TxnError::ProducerFenced));
    assert_eq!(
        txns.init("t", 60_000, Some(old)),
        Err(TxnError::ProducerFenced),
        "a new instance's abort leaves the old one no way back"
    );
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_instance_may_recover() {
    let mut txns = Txns::with(|config| config.txn.check_interval_ms = 100);
    let me = txns.init("t", 1_000, None).expect("a new id");
    let other = txns.init("u", 60_000, None).expect("a new id");
    assert_eq!(txns.add("t", me, &[("a", 0)]), Ok(()));
    assert_eq!(txns.add("u", other, &[("a", 0)]), Ok(()));
    txns.cluster.tick(5);
    assert_eq!(txns.describe("t").map(|m| m.state), Ok(TxnState::Ongoing));

    txns.cluster.now.wall_ms += 1_500;
    // Aborted; its partition does not exist, so it needs no marker and completes at once.
    txns.settle_in("t", TxnState::CompleteAbort);
    let meta = txns.describe("t").expect("known");
    let bumped = (me.0, ProducerEpoch(me.1 .0 + 1));
    assert_eq!((meta.producer_id, meta.epoch), bumped);
    assert_eq!(
        txns.describe("u").map(|m| m.state),
        Ok(TxnState::Ongoing),
        "a transaction within its timeout stays open"
    );
    // The timed-out instance is fenced, and KIP-588 lets it take the bumped epoch.
    assert_eq!(
        txns.add("t", me, &[("b", 0)]),
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(txns.init("t", 1_000, Some(me)), Ok(bumped));
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}

#[test]
fn an_id_without_requests_for_its_expiration_is_removed() {
    let mut txns = Txns::with(|config| {
        config.txn.check_interval_ms = 100;
        config.txn.id_expiration_ms = 10_000;
    });
    let idle = txns.init("idle", 60_000, None).expect("a new id");
    let open = txns.init("open", 600_000, None).expect("a new id");
    assert_eq!(txns.add("open", open, &[("a", 0)]), Ok(()));
    txns.cluster.now.wall_ms += 5_000;
    txns.cluster.tick(3);
    assert!(txns.describe("idle").is_ok(), "not idle long enough");
    txns.cluster.now.wall_ms += 6_000;
    txns.cluster.tick(3);
    assert_eq!(
        txns.describe("idle"),
        Err(TxnError::TransactionalIdNotFound)
    );
    assert!(
        txns.describe("open").is_ok(),
        "an open transaction keeps its id"
    );
    // The id starts again, with a producer id not handed out before.
    let again = txns.init("idle", 60_000, None).expect("a new id");
    assert!(again.0 != idle.0 && again.0 != open.0);
    assert_eq!(again.1, ProducerEpoch(0));
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}

/// The offsets of the records `data` holds (the control records of markers included).
fn offsets(data: &FetchData) -> Vec<i64> {
    let mut offsets = Vec::new();
    for batch in &data.batches {
        let batch = oxbow_core::batch::Batch::trusted(batch.clone());
        offsets.extend(batch.base_offset().0..batch.next_offset().0);
    }
    offsets
}

#[test]
fn a_transaction_is_verified_marked_on_every_partition_and_read_committed_waits_for_it() {
    let mut txns = Txns::with(|_| {});
    let data = txns.topic("data", 2);
    let (a, b) = (data[0], data[1]);
    let me = txns.init("t", 60_000, None).expect("a new id");
    let (id, epoch) = (me.0 .0, me.1 .0);

    // A partition the producer did not add: its coordinator says so, nothing is written.
    assert_eq!(
        txns.produce_txn("t", a, txn_batch(id, epoch, 0, 2)),
        Err(ProduceError::TxnVerification(TxnError::InvalidTxnState))
    );
    assert_eq!(txns.add("t", me, &[("data", 0), ("data", 1)]), Ok(()));
    assert_eq!(
        txns.produce_txn("t", a, txn_batch(id, epoch, 0, 2)),
        Ok(Offset(0))
    );
    // Another producer's plain batch after it, and more of the transaction.
    txns.cluster
        .produce(serving_leader(&txns.cluster, a), a, batch(1));
    assert_eq!(
        txns.produce_txn("t", a, txn_batch(id, epoch, 2, 1)),
        Ok(Offset(3))
    );
    assert_eq!(
        txns.produce_txn("t", b, txn_batch(id, epoch, 0, 1)),
        Ok(Offset(0))
    );

    // The open transaction holds the last stable offset at its first offset: read_committed
    // reads nothing yet, read_uncommitted everything.
    let committed = txns.fetch(a, 0, true);
    assert_eq!(
        (committed.high_watermark, committed.last_stable_offset),
        (Offset(4), Offset(0))
    );
    assert!(committed.batches.is_empty());
    assert_eq!(offsets(&txns.fetch(a, 0, false)), vec![0, 1, 2, 3]);

    // Commit, and a coordinator failover before the markers are all written: the new leader
    // writes them, and the transaction completes.
    assert_eq!(txns.end("t", me, true), Ok(()));
    let (_, coordinator) = txns.coordinator("t").expect("a coordinator");
    txns.cluster.restart(coordinator);
    txns.settle_in("t", TxnState::CompleteCommit);
    for group in [a, b] {
        let read = txns.fetch(group, 0, true);
        assert_eq!(read.last_stable_offset, read.high_watermark);
        assert!(read.aborted.is_empty());
    }
    let read = txns.fetch(a, 0, true);
    assert_eq!(
        read.high_watermark,
        Offset(5),
        "one marker after the four records"
    );
    let marker =
        oxbow_core::batch::Batch::trusted(read.batches.last().expect("the marker").clone());
    let marker = marker.marker().expect("a marker");
    assert!(marker.commit && marker.producer_id == me.0);

    // The next transaction aborts: read_committed is told which records to skip.
    assert_eq!(txns.add("t", me, &[("data", 0)]), Ok(()));
    let first = txns
        .produce_txn("t", a, txn_batch(id, epoch, 3, 2))
        .expect("written");
    assert_eq!(txns.end("t", me, false), Ok(()));
    txns.settle_in("t", TxnState::CompleteAbort);
    let read = txns.fetch(a, 0, true);
    assert_eq!(read.last_stable_offset, read.high_watermark);
    assert_eq!(read.aborted.len(), 1, "{:?}", read.aborted);
    let aborted = read.aborted[0];
    assert_eq!((aborted.producer_id, aborted.first_offset), (me.0, first));
    assert_eq!(
        aborted.last_offset,
        Offset(first.0 + 2),
        "the marker after its two records"
    );
    // A read after the aborted transaction's marker is not told of it.
    let after = txns.fetch(a, aborted.last_offset.0 + 1, true);
    assert!(after.aborted.is_empty());

    // A new instance fences the old one on the partitions too, once it has written there.
    let new = txns.init("t", 60_000, None).expect("bumped");
    assert_eq!(new.1, ProducerEpoch(epoch + 1));
    assert_eq!(
        txns.produce_txn("t", a, txn_batch(id, epoch, 5, 1)),
        Err(ProduceError::TxnVerification(TxnError::ProducerFenced))
    );
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}

/// The `__consumer_offsets` partition of `group_id`: its index and Raft group.
fn offsets_partition(txns: &Txns, group_id: &str) -> (i32, GroupId) {
    let topic = txns
        .cluster
        .nodes
        .values()
        .find_map(|node| node.metadata()?.topic(OFFSETS_TOPIC).cloned())
        .expect("created");
    let index = partition_for(group_id, topic.partitions.len());
    (index as i32, topic.partitions[index].group)
}

impl Txns {
    fn group_call(&mut self, group_id: &str, op: GroupOp) -> GroupResponse {
        let (_, group) = offsets_partition(self, group_id);
        let node = self.leader_of(group);
        match self
            .cluster
            .request(node, Request::Group(GroupRequest { group, op }))
        {
            Response::Group(response) => response,
            other => panic!("{other:?}"),
        }
    }

    fn txn_offset_commit(
        &mut self,
        producer: (ProducerId, ProducerEpoch),
        offset: i64,
    ) -> Result<(), GroupError> {
        let op = GroupOp::TxnOffsetCommit(TxnOffsetCommit {
            transactional_id: "t".into(),
            group_id: "g".into(),
            producer,
            generation: Generation(-1),
            member_id: String::new(),
            instance_id: None,
            offsets: vec![("in".into(), 0, offset, -1, String::new())],
            txn_start_ms: None,
        });
        match self.group_call("g", op) {
            GroupResponse::TxnOffsetCommit(result) => result,
            other => panic!("{other:?}"),
        }
    }

    /// The group's offset of ("in", 0): stable or not.
    fn fetch_offset(&mut self, require_stable: bool) -> Result<Option<i64>, GroupError> {
        let op = GroupOp::OffsetFetch {
            group_id: "g".into(),
            partitions: Some(vec![("in".into(), 0)]),
            require_stable,
        };
        match self.group_call("g", op) {
            GroupResponse::OffsetFetch(Ok(offsets)) => {
                assert_eq!(offsets.len(), 1);
                offsets[0].2.clone().map(|o| o.map(|o| o.offset))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn transactional_offsets_are_verified_pending_and_move_only_with_their_transaction() {
    let mut txns = Txns::with(|_| {});
    txns.topic(OFFSETS_TOPIC, 2);
    let (partition, offsets_group) = offsets_partition(&txns, "g");
    let me = txns.init("t", 60_000, None).expect("a new id");

    // Without AddOffsetsToTxn the coordinator does not verify it, and nothing is stored.
    assert_eq!(
        txns.txn_offset_commit(me, 5),
        Err(GroupError::Txn(TxnError::InvalidTxnState))
    );
    assert_eq!(txns.fetch_offset(true), Ok(None));

    // Added: pending. A stable read is refused, an unstable one sees the last committed.
    assert_eq!(txns.add("t", me, &[(OFFSETS_TOPIC, partition)]), Ok(()));
    assert_eq!(txns.txn_offset_commit(me, 5), Ok(()));
    assert_eq!(
        txns.fetch_offset(true),
        Err(GroupError::UnstableOffsetCommit)
    );
    assert_eq!(txns.fetch_offset(false), Ok(None));

    // Committed, with a failover of the group coordinator before the marker: the marker is
    // written by the new leader, and the offset is the group's.
    assert_eq!(txns.end("t", me, true), Ok(()));
    txns.cluster
        .restart(serving_leader(&txns.cluster, offsets_group));
    txns.settle_in("t", TxnState::CompleteCommit);
    assert_eq!(txns.fetch_offset(true), Ok(Some(5)));

    // Aborted: the offset stays.
    assert_eq!(txns.add("t", me, &[(OFFSETS_TOPIC, partition)]), Ok(()));
    assert_eq!(txns.txn_offset_commit(me, 9), Ok(()));
    assert_eq!(txns.end("t", me, false), Ok(()));
    txns.settle_in("t", TxnState::CompleteAbort);
    assert_eq!(txns.fetch_offset(true), Ok(Some(5)));

    // A fenced instance's offsets are refused.
    assert_eq!(txns.add("t", me, &[(OFFSETS_TOPIC, partition)]), Ok(()));
    // The new instance's init aborts the open transaction first (CONCURRENT_TRANSACTIONS
    // until its markers are written), as a client retries.
    let new = loop {
        match txns.init("t", 60_000, None) {
            Err(TxnError::ConcurrentTransactions) => txns.cluster.tick(1),
            result => break result.expect("bumped"),
        }
    };
    assert_eq!(
        txns.txn_offset_commit(me, 11),
        Err(GroupError::Txn(TxnError::ProducerFenced))
    );
    assert_eq!(txns.add("t", new, &[(OFFSETS_TOPIC, partition)]), Ok(()));
    assert_eq!(txns.txn_offset_commit(new, 12), Ok(()));
    assert_eq!(txns.end("t", new, true), Ok(()));
    txns.settle_in("t", TxnState::CompleteCommit);
    assert_eq!(txns.fetch_offset(true), Ok(Some(12)));
    for node in txns.cluster.nodes.values() {
        node.invariants();
    }
}
