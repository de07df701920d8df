//! Drives one `Node` through `handle` and compares the exact outputs: the contract between the
//! core and its drivers (write before persisted messages, replies after durability).

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use oxbow_core::batch::TimestampType as Timestamps;
use oxbow_core::ids::{GroupId, IoSeq, NodeId, Offset, RequestId, Sequence, Term};
use oxbow_core::io::{
    Acks, FetchError, FetchRequest, Input, Output, ProduceAck, ProduceError, ProduceRequest,
    Request, Response, TraceEvent, WalRecord,
};
use oxbow_core::node::{DurableState, GroupConfig, Node, NodeConfig};
use oxbow_core::raft::eraftpb::Entry;
use oxbow_core::time::{Instant, Now};

const GROUP: GroupId = GroupId(1);

fn batch(count: i32, producer_id: i64, base_sequence: i32) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: base_sequence.wrapping_add(i),
            timestamp: 1_000 + i64::from(i),
            key: None,
            value: Some(Bytes::from(vec![b'x'; 10])),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

struct Harness {
    node: Node,
    now: Now,
}

impl Harness {
    fn single_voter() -> Self {
        Self::single_voter_from(DurableState::default(), 0)
    }

    /// A single-voter node of `GROUP` started from what a disk held.
    fn single_voter_from(durable: DurableState, incarnation: u64) -> Self {
        Self::single_voter_with(durable, incarnation, |_| {})
    }

    /// As [`Harness::single_voter_from`], with a configuration `tweak` changes.
    fn single_voter_with(
        durable: DurableState,
        incarnation: u64,
        tweak: fn(&mut NodeConfig),
    ) -> Self {
        let mut config = NodeConfig::new(
            NodeId(1),
            vec![GroupConfig {
                id: GROUP,
                voters: vec![NodeId(1)],
                timestamps: Timestamps::CreateTime,
            }],
        );
        tweak(&mut config);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = Node::new(config, 7, incarnation, durable, &logger);
        Self {
            node,
            now: Now {
                mono: Instant(0),
                wall_ms: 1_000_000,
            },
        }
    }

    fn handle(&mut self, input: Input) -> Vec<Output> {
        self.now.mono = self.now.mono.plus_ms(1);
        let mut out = Vec::new();
        self.node.handle(self.now, input, &mut out);
        out
    }

    /// Ticks until the node writes something (its election), and returns that output.
    fn tick_until_output(&mut self) -> Vec<Output> {
        for _ in 0..100 {
            let out = self.handle(Input::Tick);
            if !out.is_empty() {
                return out;
            }
        }
        panic!("no output after 100 ticks");
    }

    fn produce(&mut self, id: u64, acks: Acks, bytes: Bytes) -> Vec<Output> {
        let request = ProduceRequest {
            group: GROUP,
            acks,
            batch: bytes,
            timeout_ms: 1_000,
            transactional_id: None,
        };
        self.handle(Input::Request {
            id: RequestId(id),
            request: Request::Produce(request),
        })
    }

    fn elect(&mut self) {
        // A single voter elects itself and appends its no-op in one write; completing writes
        // commits and applies the no-op, after which the leader serves.
        let mut out = self.tick_until_output();
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Trace(TraceEvent::BecameLeader { .. }))),
            "{out:?}"
        );
        for _ in 0..3 {
            let seq = only_write(&out);
            out = self.handle(Input::WriteDone { seq });
            if out
                .iter()
                .any(|o| matches!(o, Output::Trace(TraceEvent::Applied { .. })))
            {
                // The Raft commit index moved: one more (unsynced) hard-state write.
                let seq = only_write(&out);
                assert!(self.handle(Input::WriteDone { seq }).is_empty());
                return;
            }
        }
        panic!("the no-op was never applied");
    }
}

fn only_write(out: &[Output]) -> IoSeq {
    let writes: Vec<IoSeq> = out
        .iter()
        .filter_map(|o| match o {
            Output::Write(w) => Some(w.seq),
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 1, "exactly one write expected: {out:?}");
    writes[0]
}

fn replies(out: &[Output]) -> Vec<(RequestId, Response)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply { id, response } => Some((*id, response.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn acks_all_is_answered_only_after_the_write_completes() {
    let mut h = Harness::single_voter();
    h.elect();
    let out = h.produce(1, Acks::All, batch(3, -1, -1));
    assert!(
        replies(&out).is_empty(),
        "no answer before the disk: {out:?}"
    );
    let seq = only_write(&out);
    let Output::Write(write) = out
        .iter()
        .find(|o| matches!(o, Output::Write(_)))
        .expect("write")
    else {
        unreachable!()
    };
    assert!(write.sync, "an entry write must be synced");
    assert!(
        matches!(&write.records[0], WalRecord::Entries { group: GROUP, entries } if entries.len() == 1)
    );
    let out = h.handle(Input::WriteDone { seq });
    let seq = only_write(&out); // the Raft commit index moves: hard state
    assert_eq!(
        replies(&out),
        vec![(
            RequestId(1),
            Response::Produce(Ok(ProduceAck {
                base_offset: Offset(0),
                log_append_time_ms: -1,
                log_start_offset: Offset(0)
            }))
        )]
    );
    h.handle(Input::WriteDone { seq });
    let out = h.produce(2, Acks::All, batch(2, -1, -1));
    let out = h.handle(Input::WriteDone {
        seq: only_write(&out),
    });
    assert_eq!(
        replies(&out)[0].1,
        Response::Produce(Ok(ProduceAck {
            base_offset: Offset(3),
            log_append_time_ms: -1,
            log_start_offset: Offset(0)
        }))
    );
    assert_eq!(
        h.node.group_status(GROUP).map(|s| s.high_watermark),
        Some(Offset(5))
    );
}

#[test]
fn acks_zero_is_never_answered_and_acks_one_waits_for_the_leader_write() {
    let mut h = Harness::single_voter();
    h.elect();
    let out = h.produce(1, Acks::None, batch(1, -1, -1));
    assert!(replies(&out).is_empty());
    let out = h.handle(Input::WriteDone {
        seq: only_write(&out),
    });
    assert!(
        replies(&out).is_empty(),
        "acks=0 gets no answer, ever: {out:?}"
    );
    h.handle(Input::WriteDone {
        seq: only_write(&out),
    });
    let out = h.produce(2, Acks::Leader, batch(1, -1, -1));
    assert!(replies(&out).is_empty());
    let seq = only_write(&out);
    let out = h.handle(Input::WriteDone { seq });
    assert_eq!(
        replies(&out)[0].1,
        Response::Produce(Ok(ProduceAck {
            base_offset: Offset(1),
            log_append_time_ms: -1,
            log_start_offset: Offset(0)
        }))
    );
}

#[test]
fn idempotent_retries_get_the_original_offset_and_gaps_are_refused() {
    let mut h = Harness::single_voter();
    h.elect();
    let first = batch(2, 42, 0);
    let out = h.produce(1, Acks::All, first.clone());
    let out = h.handle(Input::WriteDone {
        seq: only_write(&out),
    });
    assert_eq!(
        replies(&out)[0].1,
        Response::Produce(Ok(ProduceAck {
            base_offset: Offset(0),
            log_append_time_ms: -1,
            log_start_offset: Offset(0)
        }))
    );
    h.handle(Input::WriteDone {
        seq: only_write(&out),
    });
    let out = h.produce(2, Acks::All, first);
    assert_eq!(
        replies(&out),
        vec![(
            RequestId(2),
            Response::Produce(Ok(ProduceAck {
                base_offset: Offset(0),
                log_append_time_ms: -1,
                log_start_offset: Offset(0)
            }))
        )],
        "duplicate answered at once, with the original offset, nothing written"
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Write(_))));
    let out = h.produce(3, Acks::All, batch(1, 42, 5));
    assert_eq!(
        replies(&out)[0].1,
        Response::Produce(Err(ProduceError::OutOfOrderSequence {
            expected: Sequence(2),
            received: Sequence(5)
        }))
    );
}

fn traces(out: &[Output]) -> Vec<TraceEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Trace(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

/// Produces `bytes` with acks=all and completes the writes: the reply and the trace events.
/// The acknowledgement of a one-record batch at `offset` of a log that starts at 0.
fn acked_at(offset: i64) -> Response {
    Response::Produce(Ok(ProduceAck {
        base_offset: Offset(offset),
        log_append_time_ms: -1,
        log_start_offset: Offset(0),
    }))
}

fn produce_applied(h: &mut Harness, id: u64, bytes: Bytes) -> (Response, Vec<TraceEvent>) {
    let mut out = h.produce(id, Acks::All, bytes);
    let mut events = traces(&out);
    while replies(&out).is_empty() {
        out = h.handle(Input::WriteDone {
            seq: only_write(&out),
        });
        events.extend(traces(&out));
    }
    let reply = replies(&out)[0].1.clone();
    if out.iter().any(|o| matches!(o, Output::Write(_))) {
        h.handle(Input::WriteDone {
            seq: only_write(&out),
        });
    }
    (reply, events)
}

#[test]
fn a_full_producer_table_refuses_new_ids_and_says_so_once_per_change() {
    let mut h = Harness::single_voter_with(DurableState::default(), 0, |c| {
        c.producers_max = 2;
        c.producer_expiration_ms = 60_000;
    });
    h.elect();
    for pid in [1, 2] {
        let (reply, events) = produce_applied(&mut h, pid as u64, batch(1, pid, 0));
        assert_eq!(reply, acked_at(pid - 1));
        assert!(!events
            .iter()
            .any(|e| matches!(e, TraceEvent::ProducerTableFull { .. })));
    }
    let out = h.produce(3, Acks::All, batch(1, 3, 0));
    assert_eq!(
        replies(&out),
        vec![(
            RequestId(3),
            Response::Produce(Err(ProduceError::TooManyProducers))
        )]
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Write(_))),
        "nothing written"
    );
    assert_eq!(
        traces(&out),
        vec![TraceEvent::ProducerTableFull {
            group: GROUP,
            producers: 2,
            limit: 2
        }]
    );
    assert_eq!(
        ProduceError::TooManyProducers.kafka_code(),
        44,
        "POLICY_VIOLATION"
    );
    // Refusing again says nothing new; known producers go on.
    let out = h.produce(4, Acks::All, batch(1, 4, 0));
    assert!(matches!(
        &replies(&out)[0].1,
        Response::Produce(Err(ProduceError::TooManyProducers))
    ));
    assert!(traces(&out).is_empty());
    let (reply, events) = produce_applied(&mut h, 5, batch(1, 1, 1));
    assert_eq!(reply, acked_at(2));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, TraceEvent::ProducerTableHasRoom { .. })),
        "{events:?}"
    );
    // A minute after their last writes, producers 1 and 2 have expired: producer 3 gets in,
    // and the table has room again.
    h.now.wall_ms += 60_000;
    let (reply, events) = produce_applied(&mut h, 6, batch(1, 3, 0));
    assert_eq!(reply, acked_at(3));
    assert!(
        events.contains(&TraceEvent::ProducerTableHasRoom {
            group: GROUP,
            producers: 1,
            limit: 2
        }),
        "{events:?}"
    );
    let out = h.produce(7, Acks::All, batch(1, 4, 0));
    assert!(traces(&out).is_empty(), "not full: nothing to say: {out:?}");
}

#[test]
fn bad_input_is_refused_without_touching_the_log() {
    let mut h = Harness::single_voter();
    h.elect();
    let mut corrupt = BytesMut::from(&batch(1, -1, -1)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let out = h.produce(1, Acks::All, corrupt.freeze());
    assert!(matches!(&replies(&out)[0].1, Response::Produce(Err(e)) if e.kafka_code() == 2));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Write(_))),
        "nothing written for a bad batch"
    );
    let out = h.produce(2, Acks::All, Bytes::from_static(b"short"));
    assert!(matches!(&replies(&out)[0].1, Response::Produce(Err(e)) if e.kafka_code() == 2));
    let request = ProduceRequest {
        group: GroupId(99),
        acks: Acks::All,
        batch: batch(1, -1, -1),
        timeout_ms: 10,
        transactional_id: None,
    };
    let out = h.handle(Input::Request {
        id: RequestId(3),
        request: Request::Produce(request),
    });
    assert_eq!(
        replies(&out)[0].1,
        Response::Produce(Err(ProduceError::UnknownTopicOrPartition))
    );
    let fetch = FetchRequest {
        group: GROUP,
        offset: Offset(5),
        max_bytes: 1 << 20,
        current_leader_epoch: -1,
        read_committed: false,
    };
    let out = h.handle(Input::Request {
        id: RequestId(4),
        request: Request::Fetch(fetch),
    });
    assert_eq!(
        replies(&out)[0].1,
        Response::Fetch(Err(FetchError::OffsetOutOfRange {
            log_start_offset: Offset(0),
            high_watermark: Offset(0)
        }))
    );
}

#[test]
fn fetch_serves_stored_bytes_up_to_the_high_watermark() {
    let mut h = Harness::single_voter();
    h.elect();
    for id in 0..3 {
        let out = h.produce(id, Acks::All, batch(2, -1, -1));
        let out = h.handle(Input::WriteDone {
            seq: only_write(&out),
        });
        h.handle(Input::WriteDone {
            seq: only_write(&out),
        });
    }
    // One more proposed but not yet committed: never served.
    let _ = h.produce(10, Acks::All, batch(2, -1, -1));
    let fetch = FetchRequest {
        group: GROUP,
        offset: Offset(3),
        max_bytes: 1 << 20,
        current_leader_epoch: -1,
        read_committed: false,
    };
    let out = h.handle(Input::Request {
        id: RequestId(4),
        request: Request::Fetch(fetch),
    });
    let Response::Fetch(Ok(data)) = &replies(&out)[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!(data.high_watermark, Offset(6));
    assert_eq!(
        data.batches.len(),
        2,
        "the batch holding offset 3, and the next"
    );
    let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut data.batches[0].clone())
        .expect("decode");
    assert_eq!(decoded.records[0].offset, 2);
}

#[test]
fn a_produce_on_the_leader_outputs_exactly_one_synced_entry_write() {
    let mut h = Harness::single_voter();
    h.elect();
    let bytes = batch(2, -1, -1);
    let out = h.produce(1, Acks::All, bytes.clone());
    let stamped = oxbow_core::batch::Batch::parse(bytes, 1 << 20, 1 << 20, false)
        .expect("valid")
        .stamp(Offset(0), Term(1), Timestamps::CreateTime, 0);
    let expected_entry = Entry {
        index: 2,
        term: 1,
        data: stamped.into_bytes(),
        ..Default::default()
    };
    let [Output::Write(write)] = &out[..] else {
        panic!("exactly one write: {out:?}")
    };
    assert_eq!(
        write.records,
        vec![WalRecord::Entries {
            group: GROUP,
            entries: vec![expected_entry]
        }]
    );
    assert!(write.sync);
}

#[test]
fn an_idempotent_batch_entry_carries_the_leaders_append_time() {
    let mut h = Harness::single_voter();
    h.elect();
    let bytes = batch(2, 42, 0);
    let out = h.produce(1, Acks::All, bytes.clone());
    let stamped = oxbow_core::batch::Batch::parse(bytes, 1 << 20, 1 << 20, false)
        .expect("valid")
        .stamp(Offset(0), Term(1), Timestamps::CreateTime, 0);
    // The context: a tag (2), the leader's wall clock (1,000,000 ms) and its producer
    // expiration (a day), little-endian.
    let mut context = vec![2u8];
    context.extend_from_slice(&1_000_000i64.to_le_bytes());
    context.extend_from_slice(&86_400_000u64.to_le_bytes());
    let expected_entry = Entry {
        index: 2,
        term: 1,
        data: stamped.into_bytes(),
        context: context.into(),
        ..Default::default()
    };
    let [Output::Write(write)] = &out[..] else {
        panic!("exactly one write: {out:?}")
    };
    assert_eq!(
        write.records,
        vec![WalRecord::Entries {
            group: GROUP,
            entries: vec![expected_entry]
        }]
    );
}

#[test]
fn messages_of_all_groups_to_one_peer_leave_together() {
    let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
    let groups = (1..=8)
        .map(|g| GroupConfig {
            id: GroupId(g),
            voters: voters.clone(),
            timestamps: Timestamps::CreateTime,
        })
        .collect();
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = Node::new(
        NodeConfig::new(NodeId(1), groups),
        3,
        0,
        DurableState::default(),
        &logger,
    );
    let mut now = Now {
        mono: Instant(0),
        wall_ms: 0,
    };
    // The most groups one send carried, over every input.
    let mut groups_per_send_max = 0;
    let mut check = |out: &[Output]| {
        let peers: Vec<NodeId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        let unique: std::collections::BTreeSet<NodeId> = peers.iter().copied().collect();
        assert_eq!(
            peers.len(),
            unique.len(),
            "one send per peer per input: {peers:?}"
        );
        for o in out {
            if let Output::Send { messages, .. } = o {
                let groups: std::collections::BTreeSet<_> =
                    messages.iter().map(|m| m.group).collect();
                groups_per_send_max = groups_per_send_max.max(groups.len());
            }
        }
    };
    for _ in 0..100 {
        now.mono = now.mono.plus_ms(100);
        let mut out = Vec::new();
        node.handle(now, Input::Tick, &mut out);
        check(&out);
        // Complete writes at once so that campaigns go on.
        for o in out {
            if let Output::Write(w) = o {
                let mut more = Vec::new();
                node.handle(now, Input::WriteDone { seq: w.seq }, &mut more);
                check(&more);
            }
        }
    }
    assert!(
        groups_per_send_max > 1,
        "some send carried the messages of several groups"
    );
}

/// Regression (found by the simulator): a crash kept an installed snapshot but tore off the
/// hard state written after it in the same write, leaving a commit index below the snapshot;
/// raft-rs refused to start ("hs.commit is out of range"). A snapshot is committed, so
/// recovery raises the hard state to it.
#[test]
fn a_hard_state_torn_off_after_a_snapshot_is_raised_to_the_snapshot() {
    use oxbow_core::node::GroupDurableState;
    use oxbow_core::producer::ProducerTable;
    use oxbow_core::raft::eraftpb::{HardState, Snapshot};
    use oxbow_core::snapshot::SnapshotData;

    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 10;
    snapshot.mut_metadata().term = 3;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1];
    snapshot.data = SnapshotData {
        log_start_offset: Offset(5),
        next_offset: Offset(5),
        producers: ProducerTable::new(),
        producers_index: 0,
        epochs: oxbow_core::epoch_history::EpochHistory::new(),
    }
    .encode()
    .into();
    let hard_state = HardState {
        term: 2,
        vote: 1,
        commit: 4,
        ..HardState::default()
    };
    let mut durable = DurableState::default();
    durable.groups.insert(
        GROUP,
        GroupDurableState {
            hard_state,
            snapshot,
            ..GroupDurableState::default()
        },
    );
    let mut harness = Harness::single_voter_from(durable, 1);
    harness.elect();
    let status = harness.node.group_status(GROUP).expect("hosted");
    // Raised to the snapshot's term 3, then one election.
    assert!(status.serving, "{status:?}");
    assert_eq!(status.term, Term(4));
    assert_eq!(status.log_start_offset, Offset(5));
    assert_eq!(status.high_watermark, Offset(5));
}

/// Completes every write the outputs ask for, and those the completions ask for in turn;
/// returns every output seen.
fn complete_writes(h: &mut Harness, out: Vec<Output>) -> Vec<Output> {
    let mut seen = Vec::new();
    let mut pending = out;
    while !pending.is_empty() {
        let writes: Vec<IoSeq> = pending
            .iter()
            .filter_map(|o| match o {
                Output::Write(w) => Some(w.seq),
                _ => None,
            })
            .collect();
        seen.append(&mut pending);
        for seq in writes {
            pending.extend(h.handle(Input::WriteDone { seq }));
        }
    }
    seen
}

fn delete_records(h: &mut Harness, id: u64, offset: Option<i64>) -> Vec<Output> {
    let request = oxbow_core::io::DeleteRecordsRequest {
        group: GROUP,
        offset: offset.map(Offset),
        timeout_ms: 1_000,
    };
    let out = h.handle(Input::Request {
        id: RequestId(id),
        request: Request::DeleteRecords(request),
    });
    complete_writes(h, out)
}

#[test]
fn delete_records_moves_the_log_start_through_the_log_and_compacts_below_it() {
    use oxbow_core::io::DeleteRecordsError;
    let mut h = Harness::single_voter();
    h.elect();
    for id in 0..5 {
        let out = h.produce(id, Acks::All, batch(2, -1, -1));
        complete_writes(&mut h, out);
    }
    // Offsets 0..10 in five batches of two. Past the high watermark: refused.
    let out = delete_records(&mut h, 20, Some(11));
    assert_eq!(
        replies(&out),
        vec![(
            RequestId(20),
            Response::DeleteRecords(Err(DeleteRecordsError::OffsetOutOfRange))
        )]
    );
    // Into the third batch: answered once applied, with the new low watermark.
    let out = delete_records(&mut h, 21, Some(5));
    assert_eq!(
        replies(&out),
        vec![(RequestId(21), Response::DeleteRecords(Ok(Offset(5))))]
    );
    let status = h.node.group_status(GROUP).expect("hosted");
    assert_eq!(status.log_start_offset, Offset(5));
    // The log start never moves back.
    let out = delete_records(&mut h, 22, Some(2));
    assert_eq!(
        replies(&out),
        vec![(RequestId(22), Response::DeleteRecords(Ok(Offset(5))))]
    );
    // Below the log start is out of range; at it, the batch holding it is served whole.
    let fetch = |offset| {
        Request::Fetch(FetchRequest {
            group: GROUP,
            offset: Offset(offset),
            max_bytes: 1 << 20,
            current_leader_epoch: -1,
            read_committed: false,
        })
    };
    let out = h.handle(Input::Request {
        id: RequestId(23),
        request: fetch(4),
    });
    assert!(
        matches!(
            &replies(&out)[0].1,
            Response::Fetch(Err(FetchError::OffsetOutOfRange {
                log_start_offset: Offset(5),
                ..
            }))
        ),
        "{out:?}"
    );
    let out = h.handle(Input::Request {
        id: RequestId(24),
        request: fetch(5),
    });
    let Response::Fetch(Ok(data)) = &replies(&out)[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!(data.log_start_offset, Offset(5));
    assert_eq!(
        data.batches.len(),
        3,
        "the batch holding offset 5, and the two after it"
    );
    // The next tick compacts the two batches wholly below the log start into a snapshot that
    // carries both the log start and the next offset after it.
    let out = h.handle(Input::Tick);
    let snapshot = out
        .iter()
        .find_map(|o| match o {
            Output::Write(w) => w.records.iter().find_map(|r| match r {
                WalRecord::Snapshot {
                    snapshot,
                    install: false,
                    ..
                } => Some(snapshot.clone()),
                _ => None,
            }),
            _ => None,
        })
        .expect("a compaction snapshot");
    let data = oxbow_core::snapshot::SnapshotData::decode(&snapshot.data).expect("decodes");
    assert_eq!(
        (data.log_start_offset, data.next_offset),
        (Offset(5), Offset(4))
    );
    // To the high watermark (Kafka's -1).
    complete_writes(&mut h, out);
    let out = delete_records(&mut h, 25, None);
    assert_eq!(
        replies(&out),
        vec![(RequestId(25), Response::DeleteRecords(Ok(Offset(10))))]
    );
    h.node.invariants();
}
