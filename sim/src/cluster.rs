//! A discrete-event simulation of a cluster of cores: the nodes' `Node`s over simulated disks
//! (the real segment log on `SimDisk`) and a simulated network, driven by one event queue in
//! simulated time. Everything random comes from named streams of the seed, so a seed replays
//! exactly.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use oxbow_core::ids::{GroupId, IoSeq, NodeId, Offset, RaftIndex, RequestId};
use oxbow_core::io::{
    Acks, AdminRequest, DiskRead, FetchData, FetchError, FetchRequest, GroupMessage, Input, Output,
    ProduceError, ProduceRequest, Request, Response,
};
use oxbow_core::metadata::{AdminError, CreateTopic, MetadataCommand};
use oxbow_core::node::{GroupStatus, Node, NodeConfig};
use oxbow_core::raft::eraftpb::Entry;
use oxbow_core::time::{Instant, Now};
use oxbow_node::storage::{SegmentLog, SegmentLogOptions, SimDisk};

use crate::checker::Checker;
use crate::options::{ClientKind, Options};
use crate::rng::Stream;

const EPOCH_MS: i64 = 1_700_000_000_000;
const REQUEST_TIMEOUT_MS: u32 = 2_000;

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver {
        to: usize,
        from: usize,
        messages: Vec<GroupMessage>,
    },
    WriteDone {
        node: usize,
        incarnation: u64,
        seq: IoSeq,
        sync: bool,
    },
    EntriesRead {
        node: usize,
        incarnation: u64,
        group: GroupId,
        low: RaftIndex,
        entries: Vec<Entry>,
    },
    ClientSend {
        client: usize,
    },
    Admin,
    Read {
        group: GroupId,
    },
    Crash,
    Restart {
        node: usize,
    },
    Partition,
    Heal,
    Liveness,
}

struct Running {
    node: Node,
    log: SegmentLog<SimDisk>,
    disk_free_at: u64,
}

struct Slot {
    incarnation: u64,
    running: Option<Running>,
    disk: Option<SimDisk>,
    drift_ppm: i64,
    mono_offset_us: u64,
    wall_offset_ms: i64,
}

struct InFlight {
    request: RequestId,
    node: usize,
    value: String,
    crc: u32,
}

struct Client {
    kind: ClientKind,
    group: GroupId,
    producer_id: i64,
    sequence: i32,
    counter: u64,
    in_flight: Option<InFlight>,
    leader_guess: usize,
    /// The batch an idempotent client keeps retrying until it is acknowledged.
    retry: Option<(Bytes, String, u32)>,
}

/// The admin workload: create the topic the clients write to (its partitions are groups
/// 1..=groups, the first the metadata numbers), then create and delete a scratch topic, each
/// step retried until its outcome is known.
struct AdminScript {
    step: usize,
    in_flight: Option<(RequestId, usize)>,
    guess: usize,
}

/// The scratch topic's partitions.
const SCRATCH_PARTITIONS: u32 = 2;

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The options the run used.
    pub options: Options,
    /// Rolling hash of every event: equal hashes mean identical runs.
    pub trace_hash: u64,
    /// Everything the checker found wrong; empty when the run passed.
    pub violations: Vec<String>,
    /// Counters for people.
    pub stats: Stats,
}

/// Counters of a run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Produce requests sent.
    pub produced: u64,
    /// Produce requests acknowledged.
    pub acknowledged: u64,
    /// Crashes.
    pub crashes: u64,
    /// Bytes lost by crashes (unsynced).
    pub bytes_lost: u64,
    /// Recoveries that cut a torn or corrupt tail.
    pub tails_cut: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Leaders elected.
    pub elections: u64,
    /// Records read back at the end.
    pub records_verified: u64,
    /// Records the readers read during the run.
    pub records_read: u64,
    /// Reads of entries evicted from memory: for followers behind, and old fetches.
    pub disk_reads: u64,
}

/// The simulated cluster.
pub struct Cluster {
    options: Options,
    now_us: u64,
    event_seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    slots: Vec<Slot>,
    clients: Vec<Client>,
    requests: BTreeMap<RequestId, usize>,
    next_request: u64,
    blocked: BTreeSet<(usize, usize)>,
    liveness: bool,
    net: Stream,
    disk: Stream,
    faults: Stream,
    workload: Stream,
    checker: Checker,
    stats: Stats,
    logger: slog::Logger,
    hash: u64,
    /// Groups that had an acks=all produce acknowledged after healing.
    live_acks: BTreeSet<GroupId>,
    admin: AdminScript,
    admin_rng: Stream,
    /// Per group, a reader's next offset and the node it asks.
    readers: BTreeMap<GroupId, (Offset, usize)>,
    /// Reads waiting for an answer: request to (group, node asked).
    reads: BTreeMap<RequestId, (GroupId, usize)>,
    read_rng: Stream,
}

impl Cluster {
    /// Builds the cluster of `options`, every node fresh.
    pub fn new(options: Options) -> Self {
        let mut clocks = Stream::new(options.seed, "clocks");
        let slots = (0..options.nodes)
            .map(|_| {
                let drift = clocks.below(2 * options.drift_ppm_max + 1) as i64
                    - options.drift_ppm_max as i64;
                Slot {
                    incarnation: 0,
                    running: None,
                    disk: Some(SimDisk::new()),
                    drift_ppm: drift,
                    mono_offset_us: clocks.below(1_000_000_000),
                    wall_offset_ms: clocks.below(10_000) as i64 - 5_000,
                }
            })
            .collect();
        let mut workload = Stream::new(options.seed, "workload");
        let clients = options
            .clients
            .iter()
            .enumerate()
            .map(|(i, kind)| Client {
                kind: *kind,
                group: GroupId(1 + i as u64 % options.groups),
                producer_id: 1000 + i as i64,
                sequence: 0,
                counter: 0,
                in_flight: None,
                leader_guess: workload.below(options.nodes as u64) as usize,
                retry: None,
            })
            .collect();
        let mut cluster = Self {
            net: Stream::new(options.seed, "network"),
            disk: Stream::new(options.seed, "disk"),
            faults: Stream::new(options.seed, "faults"),
            workload,
            checker: Checker::default(),
            stats: Stats::default(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            now_us: 0,
            event_seq: 0,
            events: BTreeMap::new(),
            slots,
            clients,
            requests: BTreeMap::new(),
            next_request: 0,
            blocked: BTreeSet::new(),
            liveness: false,
            hash: 0xcbf2_9ce4_8422_2325,
            live_acks: BTreeSet::new(),
            admin: AdminScript {
                step: 0,
                in_flight: None,
                guess: 0,
            },
            admin_rng: Stream::new(options.seed, "admin"),
            readers: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_rng: Stream::new(options.seed, "reads"),
            options,
        };
        for g in 1..=cluster.options.groups {
            let group = GroupId(g);
            cluster.readers.insert(group, (Offset(0), 0));
            let at = cluster.read_rng.between(1_000, 50_000);
            cluster.schedule(at, Event::Read { group });
        }
        let at = cluster.admin_rng.between(1_000, 50_000);
        cluster.schedule(at, Event::Admin);
        for node in 0..cluster.options.nodes {
            cluster.start(node);
        }
        for client in 0..cluster.clients.len() {
            let at = cluster.workload.between(1_000, 50_000);
            cluster.schedule(at, Event::ClientSend { client });
        }
        if let Some((low, high)) = cluster.options.crash_every_ms {
            let at = cluster.faults.between(low, high) * 1_000;
            cluster.schedule(at, Event::Crash);
        }
        if let Some((low, high)) = cluster.options.partition_every_ms {
            let at = cluster.faults.between(low, high) * 1_000;
            cluster.schedule(at, Event::Partition);
        }
        cluster.schedule(cluster.options.safety_ms * 1_000, Event::Liveness);
        cluster
    }

    fn node_config(&self, node: usize) -> NodeConfig {
        let voters: Vec<NodeId> = (0..self.options.nodes)
            .map(|n| NodeId(n as u64 + 1))
            .collect();
        // Every partition comes from the metadata group, as on a production node.
        let mut config = NodeConfig::new(NodeId(node as u64 + 1), Vec::new());
        config.metadata_voters = voters;
        config.retain_entries_max = Some(self.options.retain_entries_max);
        config.log_cache_bytes = self.options.log_cache_bytes;
        config.offset_index_interval_bytes = 2_048;
        config.catch_up_read_bytes = 16 << 10;
        config.checkpoint_bytes = 4_096;
        config.checkpoint_ticks = 20;
        // Every few admin changes and leader no-ops: the metadata log's snapshots are taken,
        // restored after crashes and sent to nodes behind them in every run.
        config.metadata_entries_max = 3;
        config.snapshot_retry_ticks = 30;
        config.pending_requests_max = 64;
        config.planted = self.options.planted;
        config
    }

    fn start(&mut self, node: usize) {
        let config = self.node_config(node);
        let slot = &mut self.slots[node];
        let disk = slot.disk.take().expect("a stopped node has its disk");
        let options = SegmentLogOptions {
            segment_bytes_max: 16 << 10,
            planted: self.options.planted,
        };
        let (log, durable, report) = match SegmentLog::open(disk, options) {
            Ok(opened) => opened,
            Err(error) => {
                self.checker
                    .violation(format!("node {}: recovery failed: {error}", node + 1));
                return;
            }
        };
        if !report.cuts.is_empty() {
            self.stats.tails_cut += 1;
        }
        let seed = self.options.seed;
        let node_core = Node::new(config, seed, slot.incarnation, durable, &self.logger);
        slot.running = Some(Running {
            node: node_core,
            log,
            disk_free_at: 0,
        });
        self.checker.node_started(node);
        let incarnation = slot.incarnation;
        let at = self.now_us + self.tick_us(node);
        self.schedule(at, Event::Tick { node, incarnation });
    }

    fn tick_us(&self, node: usize) -> u64 {
        let base = self.options.tick_ms * 1_000;
        (base as i64 * 1_000_000 / (1_000_000 + self.slots[node].drift_ppm)) as u64
    }

    fn now_of(&self, node: usize) -> Now {
        let slot = &self.slots[node];
        let local_us = (self.now_us as i128 * (1_000_000 + slot.drift_ppm as i128) / 1_000_000)
            as u64
            + slot.mono_offset_us;
        Now {
            mono: Instant(local_us * 1_000),
            wall_ms: EPOCH_MS + (local_us / 1_000) as i64 + slot.wall_offset_ms,
        }
    }

    fn schedule(&mut self, at_us: u64, event: Event) {
        self.event_seq += 1;
        self.events.insert((at_us, self.event_seq), event);
    }

    fn mix(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.hash ^= u64::from(b);
                self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Runs both phases and checks the outcome.
    pub fn run(mut self) -> Report {
        let end = (self.options.safety_ms + self.options.liveness_ms) * 1_000;
        let mut next_check_us = 0;
        while let Some((&(at, seq), _)) = self.events.first_key_value() {
            if at > end {
                break;
            }
            let event = self.events.remove(&(at, seq)).expect("first");
            assert!(at >= self.now_us, "time never goes backwards");
            self.now_us = at;
            self.stats.events += 1;
            self.handle(event);
            if self.stats.events.is_multiple_of(5_000) {
                self.full_invariants();
            }
            if self.liveness && self.now_us >= next_check_us {
                next_check_us = self.now_us + 100_000;
                if self.converged() {
                    break;
                }
            }
        }
        self.finish()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.slots[node].incarnation != incarnation || self.slots[node].running.is_none()
                {
                    return;
                }
                self.mix(&[1, self.now_us, node as u64]);
                self.feed(node, Input::Tick);
                let at = self.now_us + self.tick_us(node);
                self.schedule(at, Event::Tick { node, incarnation });
            }
            Event::Deliver { to, from, messages } => {
                if self.blocked.contains(&(from, to)) || self.slots[to].running.is_none() {
                    return;
                }
                self.mix(&[
                    2,
                    self.now_us,
                    to as u64,
                    from as u64,
                    messages.len() as u64,
                ]);
                self.feed(
                    to,
                    Input::Peer {
                        from: NodeId(from as u64 + 1),
                        messages,
                    },
                );
            }
            Event::WriteDone {
                node,
                incarnation,
                seq,
                sync,
            } => {
                if self.slots[node].incarnation != incarnation {
                    return;
                }
                let Some(running) = self.slots[node].running.as_mut() else {
                    return;
                };
                if sync {
                    running
                        .log
                        .sync()
                        .expect("the simulated disk does not fail");
                }
                self.mix(&[3, self.now_us, node as u64, seq.0]);
                self.feed(node, Input::WriteDone { seq });
            }
            Event::EntriesRead {
                node,
                incarnation,
                group,
                low,
                entries,
            } => {
                if self.slots[node].incarnation != incarnation || self.slots[node].running.is_none()
                {
                    return;
                }
                self.mix(&[6, self.now_us, node as u64, group.0, low.0]);
                self.feed(
                    node,
                    Input::EntriesRead {
                        group,
                        low,
                        entries,
                    },
                );
            }
            Event::ClientSend { client } => self.client_send(client),
            Event::Admin => self.admin_send(),
            Event::Read { group } => self.read_send(group),
            Event::Crash => self.crash(),
            Event::Restart { node } => {
                // A node whose recovery failed (a violation: the run fails) stays down.
                if self.slots[node].running.is_none() && self.slots[node].disk.is_some() {
                    self.mix(&[5, self.now_us, node as u64]);
                    self.start(node);
                }
            }
            Event::Partition => self.partition(),
            Event::Heal => {
                self.mix(&[6, self.now_us]);
                self.blocked.clear();
            }
            Event::Liveness => self.enter_liveness(),
        }
    }

    fn feed(&mut self, node: usize, input: Input) {
        let now = self.now_of(node);
        let mut out = Vec::new();
        self.slots[node]
            .running
            .as_mut()
            .expect("fed nodes run")
            .node
            .handle(now, input, &mut out);
        self.dispatch(node, out);
    }

    fn dispatch(&mut self, node: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, messages } => {
                    let to = (to.0 - 1) as usize;
                    self.mix(&[10, node as u64, to as u64, messages.len() as u64]);
                    if self.blocked.contains(&(node, to)) || self.net.chance(self.drop_rate()) {
                        continue;
                    }
                    let copies = if self.net.chance(self.duplicate_rate()) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let at = self.now_us
                            + self
                                .net
                                .between(self.options.latency_us.0, self.options.latency_us.1);
                        self.schedule(
                            at,
                            Event::Deliver {
                                to,
                                from: node,
                                messages: messages.clone(),
                            },
                        );
                    }
                }
                Output::Write(write) => {
                    self.mix(&[11, node as u64, write.seq.0, write.records.len() as u64]);
                    let latency = self.disk.between(
                        self.options.disk_latency_us.0,
                        self.options.disk_latency_us.1,
                    );
                    let incarnation = self.slots[node].incarnation;
                    let running = self.slots[node].running.as_mut().expect("running");
                    running
                        .log
                        .append(&write.records)
                        .expect("the simulated disk does not fail");
                    let at = running.disk_free_at.max(self.now_us) + latency;
                    running.disk_free_at = at;
                    self.schedule(
                        at,
                        Event::WriteDone {
                            node,
                            incarnation,
                            seq: write.seq,
                            sync: write.sync,
                        },
                    );
                }
                Output::ReadEntries(read) => {
                    self.mix(&[14, node as u64, read.group.0, read.from.0]);
                    let latency = self.disk.between(
                        self.options.disk_latency_us.0,
                        self.options.disk_latency_us.1,
                    );
                    let incarnation = self.slots[node].incarnation;
                    let entries = self.read_log(node, &read);
                    self.schedule(
                        self.now_us + latency,
                        Event::EntriesRead {
                            node,
                            incarnation,
                            group: read.group,
                            low: read.from,
                            entries,
                        },
                    );
                }
                Output::Reply { id, mut response } => {
                    self.mix(&[12, node as u64, id.0]);
                    // A fetch of records no longer in memory: the driver reads them.
                    if let Response::Fetch(Ok(data)) = &mut response {
                        if let Some(read) = data.read.take() {
                            let entries = self.read_log(node, &read);
                            data.batches = read.batches(entries);
                        }
                    }
                    if self.admin.in_flight.is_some_and(|(admin, _)| admin == id) {
                        self.admin_reply(response);
                    } else if let Some((group, _)) = self.reads.remove(&id) {
                        self.read_reply(group, response);
                    } else {
                        self.client_reply(id, response);
                    }
                }
                Output::Trace(event) => {
                    self.mix(&[13, node as u64]);
                    self.checker.trace(node, &event, &mut self.stats);
                }
            }
        }
    }

    fn drop_rate(&self) -> u64 {
        if self.liveness {
            0
        } else {
            self.options.drop_per_million
        }
    }

    fn duplicate_rate(&self) -> u64 {
        if self.liveness {
            0
        } else {
            self.options.duplicate_per_million
        }
    }

    fn crash(&mut self) {
        if self.liveness {
            return;
        }
        let node = self.faults.below(self.options.nodes as u64) as usize;
        if let Some(running) = self.slots[node].running.take() {
            self.mix(&[4, self.now_us, node as u64]);
            self.stats.crashes += 1;
            let mut disk = running.log.into_disk();
            self.stats.bytes_lost += disk.crash(self.faults.rng(), self.options.tear);
            let slot = &mut self.slots[node];
            slot.disk = Some(disk);
            slot.incarnation += 1;
            // Reads at the crashed node get no answer; the readers go on with their schedule.
            self.reads.retain(|_, (_, at)| *at != node);
            if self.admin.in_flight.is_some_and(|(_, at)| at == node) {
                self.admin.in_flight = None;
                self.admin_later();
            }
            // Requests in flight at the crashed node get no answer: their outcome is unknown.
            for client in 0..self.clients.len() {
                if self.clients[client]
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.node == node)
                {
                    let flight = self.clients[client].in_flight.take().expect("checked");
                    self.requests.remove(&flight.request);
                    self.checker.indeterminate(&flight.value);
                    self.after_attempt(client, false);
                }
            }
            let down = self
                .faults
                .between(self.options.down_ms.0, self.options.down_ms.1)
                * 1_000;
            self.schedule(self.now_us + down, Event::Restart { node });
        }
        if let Some((low, high)) = self.options.crash_every_ms {
            let at = self.now_us + self.faults.between(low, high) * 1_000;
            self.schedule(at, Event::Crash);
        }
    }

    fn partition(&mut self) {
        if self.liveness {
            return;
        }
        self.blocked.clear();
        let n = self.options.nodes;
        let victim = self.faults.below(n as u64) as usize;
        match self.faults.below(3) {
            // Isolate one node (a minority) both ways.
            0 | 1 => {
                for other in (0..n).filter(|o| *o != victim) {
                    self.blocked.insert((victim, other));
                    self.blocked.insert((other, victim));
                }
            }
            // One-way: the victim hears nobody but is heard.
            _ => {
                for other in (0..n).filter(|o| *o != victim) {
                    self.blocked.insert((other, victim));
                }
            }
        }
        self.mix(&[7, self.now_us, victim as u64, self.blocked.len() as u64]);
        let heal_at = self.now_us
            + self
                .faults
                .between(self.options.partition_ms.0, self.options.partition_ms.1)
                * 1_000;
        self.schedule(heal_at, Event::Heal);
        if let Some((low, high)) = self.options.partition_every_ms {
            let at = heal_at + self.faults.between(low, high) * 1_000;
            self.schedule(at, Event::Partition);
        }
    }

    fn enter_liveness(&mut self) {
        self.liveness = true;
        self.blocked.clear();
        for node in 0..self.options.nodes {
            if self.slots[node].running.is_none() {
                self.schedule(self.now_us, Event::Restart { node });
            }
        }
    }

    fn client_send(&mut self, client: usize) {
        if self.clients[client].in_flight.is_some() {
            return;
        }
        // Once healed, a group that has shown progress gets no more writes, so that its
        // replicas can be seen to converge.
        if self.liveness
            && self.live_acks.contains(&self.clients[client].group)
            && self.clients[client].retry.is_none()
        {
            return;
        }
        let c = &mut self.clients[client];
        let (batch, value, crc) = match (&c.retry, c.kind) {
            (Some(retry), ClientKind::Idempotent) => retry.clone(),
            _ => {
                c.counter += 1;
                let value = format!("c{client}-v{}", c.counter);
                let (producer_id, sequence) = if c.kind == ClientKind::Idempotent {
                    (c.producer_id, c.sequence)
                } else {
                    (-1, -1)
                };
                let batch = encode_batch(producer_id, sequence, &value);
                let crc = u32::from_be_bytes(batch[17..21].try_into().expect("crc"));
                if c.kind == ClientKind::Idempotent {
                    c.retry = Some((batch.clone(), value.clone(), crc));
                }
                (batch, value, crc)
            }
        };
        let acks = if c.kind == ClientKind::PlainLeader {
            Acks::Leader
        } else {
            Acks::All
        };
        let group = c.group;
        let mut node = c.leader_guess;
        if self.slots[node].running.is_none() {
            node = self.workload.below(self.options.nodes as u64) as usize;
            self.clients[client].leader_guess = node;
        }
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.stats.produced += 1;
        self.checker.sent(&value);
        if self.slots[node].running.is_none() {
            // Nobody to talk to: try again shortly.
            self.checker
                .definitely_failed_attempt(&value, self.clients[client].kind);
            self.retry_later(client);
            return;
        }
        self.mix(&[20, self.now_us, client as u64, node as u64]);
        self.requests.insert(request, client);
        self.clients[client].in_flight = Some(InFlight {
            request,
            node,
            value,
            crc,
        });
        let produce = ProduceRequest {
            group,
            acks,
            batch,
            timeout_ms: REQUEST_TIMEOUT_MS,
        };
        self.feed(
            node,
            Input::Request {
                id: request,
                request: Request::Produce(produce),
            },
        );
    }

    /// A reader fetches its group from where it is, as a consumer would, every few ms.
    fn read_send(&mut self, group: GroupId) {
        let pause = self.read_rng.between(2, 20) * 1_000;
        self.schedule(self.now_us + pause, Event::Read { group });
        let (offset, node) = self.readers[&group];
        if self.slots[node].running.is_none() || self.reads.values().any(|(g, _)| *g == group) {
            let guess = self.read_rng.below(self.options.nodes as u64) as usize;
            self.readers.insert(group, (offset, guess));
            return;
        }
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.reads.insert(id, (group, node));
        self.mix(&[40, self.now_us, group.0, node as u64, offset.0 as u64]);
        let request = Request::Fetch(FetchRequest {
            group,
            offset,
            max_bytes: 64 << 10,
        });
        self.feed(node, Input::Request { id, request });
    }

    fn read_reply(&mut self, group: GroupId, response: Response) {
        let Response::Fetch(result) = response else {
            panic!("a fetch answered with {response:?}")
        };
        let (offset, node) = self.readers[&group];
        match result {
            Ok(data) => {
                let mut next = offset;
                for batch in &data.batches {
                    let decoded = RecordBatchDecoder::decode(&mut batch.clone())
                        .expect("served batches decode");
                    for record in decoded.records.into_iter().filter(|r| r.offset >= offset.0) {
                        let value = record
                            .value
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                            .unwrap_or_default();
                        self.checker.read(group, Offset(record.offset), &value);
                        next = Offset(record.offset + 1);
                    }
                }
                self.stats.records_read += next.0.saturating_sub(offset.0) as u64;
                self.readers.insert(group, (next, node));
            }
            Err(FetchError::NotLeader { leader }) => {
                let guess = match leader {
                    Some(n) => (n.0 - 1) as usize,
                    None => self.read_rng.below(self.options.nodes as u64) as usize,
                };
                self.readers.insert(group, (offset, guess));
            }
            // Retention moved the log start past the reader, or a new leader's log is behind
            // what it read (it must catch up): start again from the log start.
            Err(FetchError::OffsetOutOfRange {
                log_start_offset,
                high_watermark,
            }) => {
                let restart = if offset < log_start_offset {
                    log_start_offset
                } else {
                    offset.min(high_watermark)
                };
                self.readers.insert(group, (restart, node));
            }
            Err(FetchError::UnknownTopicOrPartition) => {}
        }
    }

    fn admin_command(&self) -> Option<MetadataCommand> {
        let create = |name: &str, partitions: u32, replication_factor: u16| {
            MetadataCommand::CreateTopic(CreateTopic {
                name: name.into(),
                partitions,
                replication_factor,
                configs: BTreeMap::new(),
            })
        };
        let nodes = self.options.nodes as u16;
        match self.admin.step {
            0 => Some(create("sim", self.options.groups as u32, nodes)),
            1 => Some(create("scratch", SCRATCH_PARTITIONS, nodes.min(2))),
            2 => Some(MetadataCommand::DeleteTopic {
                name: "scratch".into(),
            }),
            _ => None,
        }
    }

    fn admin_send(&mut self) {
        if self.admin.in_flight.is_some() {
            return;
        }
        let Some(command) = self.admin_command() else {
            return;
        };
        let node = self.admin.guess;
        if self.slots[node].running.is_none() {
            self.admin.guess = self.admin_rng.below(self.options.nodes as u64) as usize;
            return self.admin_later();
        }
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.admin.in_flight = Some((id, node));
        self.mix(&[30, self.now_us, node as u64, self.admin.step as u64]);
        let request = Request::Admin(AdminRequest {
            command,
            validate_only: false,
            forward: false,
            timeout_ms: REQUEST_TIMEOUT_MS,
        });
        self.feed(node, Input::Request { id, request });
    }

    fn admin_later(&mut self) {
        let pause = self.admin_rng.between(50, 300) * 1_000;
        self.schedule(self.now_us + pause, Event::Admin);
    }

    /// The step is done once its outcome is known: applied now, or found applied by an
    /// earlier attempt whose answer was lost.
    fn admin_reply(&mut self, response: Response) {
        self.admin.in_flight = None;
        let Response::Admin(result) = response else {
            panic!("an admin request answered with {response:?}")
        };
        let done = match (&result, self.admin.step) {
            (Ok(Some(_)), _) => true,
            (Err(AdminError::TopicAlreadyExists), 0 | 1) => true,
            (Err(AdminError::UnknownTopic), 2) => true,
            (Err(AdminError::NotController { leader }), _) => {
                self.admin.guess = match leader {
                    Some(n) => (n.0 - 1) as usize,
                    None => self.admin_rng.below(self.options.nodes as u64) as usize,
                };
                false
            }
            (Err(AdminError::TimedOut | AdminError::Backpressure), _) => false,
            (other, step) => {
                self.checker
                    .violation(format!("admin step {step}: unexpected answer {other:?}"));
                false
            }
        };
        if done {
            self.admin.step += 1;
        }
        self.admin_later();
    }

    fn retry_later(&mut self, client: usize) {
        let pause = self.workload.between(
            self.options.produce_pause_ms.0,
            self.options.produce_pause_ms.1,
        ) * 1_000;
        self.schedule(self.now_us + pause, Event::ClientSend { client });
    }

    fn client_reply(&mut self, id: RequestId, response: Response) {
        let Some(client) = self.requests.remove(&id) else {
            return; // a reply to a request whose node crashed and came back cannot happen; fetches
        };
        let flight = self.clients[client]
            .in_flight
            .take()
            .expect("a request in flight");
        assert_eq!(flight.request, id);
        let Response::Produce(result) = response else {
            panic!("produce answered with a fetch response")
        };
        let kind = self.clients[client].kind;
        let group = self.clients[client].group;
        let ok = match result {
            Ok(ack) => {
                self.stats.acknowledged += 1;
                if kind != ClientKind::PlainLeader {
                    self.checker
                        .acknowledged(group, ack.base_offset, &flight.value, flight.crc);
                    if self.liveness {
                        self.live_acks.insert(group);
                    }
                }
                true
            }
            Err(error) => {
                if let ProduceError::NotLeader { leader } = &error {
                    self.clients[client].leader_guess = match leader {
                        Some(n) => (n.0 - 1) as usize,
                        None => self.workload.below(self.options.nodes as u64) as usize,
                    };
                }
                if let ProduceError::OutOfOrderSequence { expected, received } = &error {
                    self.checker.violation(format!(
                        "client {client}: idempotent batch refused as out of order (expected {expected}, sent {received}) \
                         although it retried in order"
                    ));
                }
                if error.is_indeterminate() {
                    self.checker.indeterminate(&flight.value);
                } else {
                    self.checker.definitely_failed_attempt(&flight.value, kind);
                }
                false
            }
        };
        self.after_attempt(client, ok);
    }

    fn after_attempt(&mut self, client: usize, ok: bool) {
        let c = &mut self.clients[client];
        if ok && c.kind == ClientKind::Idempotent {
            c.retry = None;
            c.sequence += 1;
        }
        self.retry_later(client);
    }

    /// Reads entries back from a running node's log.
    fn read_log(&mut self, node: usize, read: &DiskRead) -> Vec<Entry> {
        self.stats.disk_reads += 1;
        let running = self.slots[node].running.as_mut().expect("running");
        running
            .log
            .read_entries(read.group, read.from.0, read.to.0, read.read_bytes)
            .expect("the simulated disk does not fail")
    }

    /// Asks a running node for a fetch directly (not through the workload).
    fn fetch_direct(
        &mut self,
        node: usize,
        group: GroupId,
        offset: Offset,
        max_bytes: u32,
    ) -> Result<FetchData, FetchError> {
        let now = self.now_of(node);
        let mut out = Vec::new();
        let running = self.slots[node].running.as_mut().expect("running");
        let request = Request::Fetch(FetchRequest {
            group,
            offset,
            max_bytes,
        });
        running.node.handle(
            now,
            Input::Request {
                id: RequestId(u64::MAX),
                request,
            },
            &mut out,
        );
        match out.into_iter().next() {
            Some(Output::Reply {
                response: Response::Fetch(result),
                ..
            }) => result.map(|mut data| {
                if let Some(read) = data.read.take() {
                    let entries = self.read_log(node, &read);
                    data.batches = read.batches(entries);
                }
                data
            }),
            other => panic!("a fetch answers at once with a fetch response, not {other:?}"),
        }
    }

    fn status(&self, node: usize, group: GroupId) -> Option<GroupStatus> {
        self.slots[node].running.as_ref()?.node.group_status(group)
    }

    fn serving_leader(&self, group: GroupId) -> Option<usize> {
        (0..self.options.nodes).find(|node| self.status(*node, group).is_some_and(|s| s.serving))
    }

    /// Healed and caught up: every node up, every group led, every node at the leader's high
    /// watermark, and every group has acknowledged a write since healing.
    fn converged(&self) -> bool {
        self.convergence_problem().is_none()
    }

    fn convergence_problem(&self) -> Option<String> {
        if let Some(down) = self.slots.iter().position(|s| s.running.is_none()) {
            return Some(format!("node {} is down", down + 1));
        }
        if self.admin_command().is_some() {
            return Some(format!("admin step {} is not done", self.admin.step));
        }
        // Every node applied the metadata to the end: the scratch topic's groups are gone
        // and none of the disk's groups is left unclaimed.
        for (node, slot) in self.slots.iter().enumerate() {
            let running = slot.running.as_ref().expect("all up");
            let scratch =
                self.options.groups + 1..=self.options.groups + u64::from(SCRATCH_PARTITIONS);
            if let Some(g) = scratch
                .clone()
                .find(|g| running.node.group_status(GroupId(*g)).is_some())
            {
                return Some(format!("node {}: deleted group {g} still runs", node + 1));
            }
            if running.node.parked_groups().next().is_some() {
                return Some(format!("node {}: groups parked after replay", node + 1));
            }
        }
        for g in 1..=self.options.groups {
            let group = GroupId(g);
            let Some(leader) = self.serving_leader(group) else {
                return Some(format!("group {group} has no serving leader"));
            };
            let high_watermark = |node| self.status(node, group).map(|s| s.high_watermark);
            let all: Vec<_> = (0..self.options.nodes).map(high_watermark).collect();
            if all.iter().any(|h| *h != high_watermark(leader)) {
                return Some(format!("group {group}: high watermarks differ: {all:?}"));
            }
            if !self.live_acks.contains(&group) {
                return Some(format!("group {group} acknowledged no write since healing"));
            }
        }
        None
    }

    /// Every node's linear-time invariants (the cheap ones run after every input).
    fn full_invariants(&self) {
        for slot in &self.slots {
            if let Some(running) = &slot.running {
                running.node.invariants();
                running.log.invariants();
            }
        }
    }

    fn finish(mut self) -> Report {
        self.full_invariants();
        if let Some(problem) = self.convergence_problem() {
            self.checker.violation(format!(
                "liveness: not converged {} ms after healing: {problem}",
                self.options.liveness_ms
            ));
        } else {
            for g in 1..=self.options.groups {
                self.verify_group(GroupId(g));
            }
        }
        self.checker.finish();
        Report {
            trace_hash: self.hash,
            violations: self.checker.violations.clone(),
            stats: self.stats,
            options: self.options,
        }
    }

    /// Reads a group back from its leader and hands every record to the checker.
    fn verify_group(&mut self, group: GroupId) {
        let leader = self.serving_leader(group).expect("converged");
        let log_start = self
            .status(leader, group)
            .expect("serving")
            .log_start_offset;
        let mut records = Vec::new();
        let mut offset = log_start;
        loop {
            let data = match self.fetch_direct(leader, group, offset, 1 << 20) {
                Ok(data) => data,
                Err(error) => {
                    self.checker.violation(format!(
                        "group {group}: final read at {offset:?} failed: {error:?}"
                    ));
                    return;
                }
            };
            let mut next = offset;
            for batch in &data.batches {
                let decoded =
                    RecordBatchDecoder::decode(&mut batch.clone()).expect("stored batches decode");
                for record in decoded.records.into_iter().filter(|r| r.offset >= offset.0) {
                    let value = record
                        .value
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_default();
                    records.push((Offset(record.offset), value));
                    next = Offset(record.offset + 1);
                }
            }
            if next >= data.high_watermark || data.batches.is_empty() {
                break;
            }
            offset = next;
        }
        self.stats.records_verified += records.len() as u64;
        self.checker.final_log(group, log_start, &records);
    }
}

fn encode_batch(producer_id: i64, sequence: i32, value: &str) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: if producer_id >= 0 { 0 } else { -1 },
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: EPOCH_MS,
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: IndexMap::new(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

/// Runs one seed.
pub fn run(options: Options) -> Report {
    Cluster::new(options).run()
}
