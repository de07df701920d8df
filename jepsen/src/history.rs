//! The history of a run: every operation a client invoked, how and when it ended, and what
//! the readers saw. Operations follow Jepsen's model: an invocation, then ok (acknowledged),
//! fail (definitely did not happen) or info (may have happened), each with its process and
//! time.
//!
//! A history may be of a compacted topic ([`Compaction`], `cleanup.policy=compact`): its sends
//! are keyed, some are tombstones (a record with a null value, [`History::tombstones`]), and
//! the checker then lets a record vanish only where a log cleaner may remove it.

use std::collections::{BTreeMap, BTreeSet};

/// What a producer promises, which decides what the checker holds it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Idempotent, acks=all: no acknowledged write lost, no duplicate, no reordering.
    Idempotent,
    /// acks=all without idempotence: at least once (duplicates allowed).
    AtLeastOnce,
    /// acks=1: an acknowledged write may be lost when the leader fails.
    LeaderOnly,
}

/// How one send ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not answered yet.
    Pending,
    /// Acknowledged at this partition and offset.
    Ok {
        /// Partition.
        partition: i32,
        /// Offset (-1 for acks=0).
        offset: i64,
    },
    /// Definitely not written.
    Fail(String),
    /// May have been written.
    Info(String),
}

/// One send of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendOp {
    /// The producer (process).
    pub producer: usize,
    /// What it promises.
    pub kind: Delivery,
    /// The key.
    pub key: u64,
    /// The value (unique in the run).
    pub value: u64,
    /// When it was invoked (simulated ms).
    pub invoked_ms: u64,
    /// How it ended, and when.
    pub outcome: Outcome,
    /// When it ended (simulated ms; 0 while pending).
    pub completed_ms: u64,
    /// The operation it was part of, when one operation of its producer sent several values
    /// (a batch, or the sends of a transaction): an id unique in the run. Within one operation
    /// the sends are ordered by invocation time, then value. `None`: the send was an operation
    /// of its own.
    pub op: Option<u64>,
}

/// One poll of a reader during the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// The reader (process).
    pub reader: usize,
    /// When it was invoked (ms), when known: realtime lag is measured from it (else from
    /// `at_ms`).
    pub invoked_ms: Option<u64>,
    /// When it returned (simulated ms).
    pub at_ms: u64,
    /// What it returned, in order: (partition, offset, value).
    pub records: Vec<(i32, i64, u64)>,
    /// The partitions whose position was out of range in this poll and went to the log start
    /// offset (`auto.offset.reset=earliest`), each with the position it left. The reset came
    /// before any of the partition's records in `records`.
    pub resets: Vec<(i32, i64)>,
    /// Whether the reader was assigned partitions anew or subscribed (Jepsen's `:assign`,
    /// `:subscribe`, or a group rebalance) before this poll: its position in every partition
    /// may then be anywhere, so this poll's first record of each partition is not judged
    /// against what the reader read before (within the poll, records still are).
    pub repositioned: bool,
}

/// How an operation of several sends and polls ended (Jepsen's operation types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Completion {
    /// Never completed.
    #[default]
    Pending,
    /// Succeeded: a transaction committed, a batch was acknowledged.
    Ok,
    /// Definitely did not take effect (a transaction aborted).
    Fail,
    /// May have taken effect.
    Info,
}

/// An operation that sent and polled several values at once: Jepsen's `:txn` (a
/// transaction of sends and polls) or a `:send` of several values. Its sends name it in
/// [`SendOp::op`]; its polls are listed here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    /// The client that ran it.
    pub process: usize,
    /// Whether it was a transaction: its sends take effect together, when it commits, and
    /// its polls read with read_committed.
    pub txn: bool,
    /// When it was invoked (ms).
    pub invoked_ms: u64,
    /// When it completed (ms; 0 while pending).
    pub completed_ms: u64,
    /// How it ended.
    pub completion: Completion,
    /// Its polls: indexes into [`History::polls`], ascending.
    pub polls: Vec<usize>,
}

/// A DeleteRecords call: a partition's log start offset asked to move up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimOp {
    /// Partition.
    pub partition: i32,
    /// The offset asked for; `None`: the high watermark (Kafka's -1).
    pub offset: Option<i64>,
    /// When it was invoked (simulated ms).
    pub invoked_ms: u64,
    /// When it ended (simulated ms).
    pub completed_ms: u64,
    /// The log start offset it answered once acknowledged; `None` when it failed or its
    /// outcome is unknown (it may then have moved the log start up to `offset`).
    pub low_watermark: Option<i64>,
}

/// A record a consumer-group member read, in the generation it read it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDelivery {
    /// The member (process; a restarted member is a new one).
    pub member: usize,
    /// Its generation when it read the record.
    pub generation: i32,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Value.
    pub value: u64,
}

/// An acknowledged offset commit of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// The member.
    pub member: usize,
    /// The generation it committed in.
    pub generation: i32,
    /// Partition.
    pub partition: i32,
    /// The committed offset (the next to read).
    pub offset: i64,
    /// When it was acknowledged (simulated ms).
    pub at_ms: u64,
}

/// What one consumer group's members did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupHistory {
    /// Whether a group ran in this history (otherwise the group checks are skipped).
    pub ran: bool,
    /// Every record a member read.
    pub deliveries: Vec<GroupDelivery>,
    /// Every acknowledged commit, in acknowledgement order.
    pub commits: Vec<GroupCommit>,
    /// Set when the members had read every acknowledged write (the group's liveness).
    pub finished: bool,
}

/// A compacted topic's settings (`cleanup.policy=compact`), which decide what its log cleaner
/// may remove and when; times are on the history's one clock (the broker's, which the
/// checker takes to be the history's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// `delete.retention.ms`: a tombstone stays at least this long after it was written, so a
    /// consumer that reads from the log start and passes the tombstone's offset within it
    /// sees the tombstone (or a later record of its key).
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long after it was
    /// written (0, Kafka's default: no lower bound).
    pub min_compaction_lag_ms: u64,
}

/// What the client hosts observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The consumer group's members.
    pub group: GroupHistory,
    /// Every send, by value.
    pub sends: BTreeMap<u64, SendOp>,
    /// The polls of the readers that run alongside the producers: every non-empty one, in the
    /// order they returned (empty ones may be left out; recorded, they count in the realtime
    /// lag).
    pub polls: Vec<Poll>,
    /// The final read: per partition, (offset, value) in read order, from where the final
    /// read began (`final_starts`).
    pub reads: BTreeMap<i32, Vec<(i64, u64)>>,
    /// Per partition, the log start offset the final read began at (its first record, or its
    /// position when the partition held none). Records below it may be gone.
    pub final_starts: BTreeMap<i32, i64>,
    /// Per partition, the log start offset last seen while waiting for the consumer group to
    /// catch up (asked only when retention may move it); the group need not read records
    /// below it, nor below `final_starts`.
    pub group_starts: BTreeMap<i32, i64>,
    /// The operations of several sends and polls, by the id their sends carry in
    /// [`SendOp::op`]. An id the sends carry without an entry here is an operation of sends
    /// alone, not a transaction, acknowledged when all its sends were.
    pub operations: BTreeMap<u64, Operation>,
    /// Every DeleteRecords call.
    pub trims: Vec<TrimOp>,
    /// Whether the topic has retention, which moves log start offsets unasked (so no
    /// DeleteRecords call need justify them).
    pub retention: bool,
    /// Set when the client finished its final read.
    pub finished: bool,
    /// Whether offsets may have holes (transaction markers, as in Jepsen's histories with
    /// transactions): the final read must then only go up, not take every offset.
    pub sparse_offsets: bool,
    /// Set when the topic is compacted: a record may then vanish once a later record of its
    /// key (same key, same partition) supersedes it, and a tombstone once
    /// `delete.retention.ms` has passed; offsets may have holes (as with `sparse_offsets`).
    pub compaction: Option<Compaction>,
    /// The values of the sends that were tombstones (a record with the send's key and a null
    /// value; the value here is the send's id in the history, which readers learn from the
    /// record's [`ID_HEADER`] header). Each is a key of `sends`.
    pub tombstones: BTreeSet<u64>,
    /// When the final read ended (simulated ms: its last fetch had returned), when known. The
    /// final read passed each of its offsets by then, so a compacted history's tombstone
    /// younger than `delete.retention.ms` at that time must still be in it.
    pub final_read_ms: Option<u64>,
    /// When the final read began (simulated ms: its first fetch was sent), when known. Each
    /// record it holds was in the log from its write until then at least, so in a compacted
    /// history a reader that passed over one before then skipped it; after then, a cleaner
    /// running during the final read may have removed it.
    pub final_read_began_ms: Option<u64>,
}

/// The header a record carries its history value in when its own value cannot: a tombstone's
/// (its value is null). The header's value is the history value's 8 big-endian bytes
/// (`id_header_value`); `record_value` reads either.
pub const ID_HEADER: &str = "oxbow-value";

/// The [`ID_HEADER`] header's value for history value `value`.
pub fn id_header_value(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

/// The history value of a record read: its bytes' (`queue_value`) when it has a value, else
/// its [`ID_HEADER`] header's (a tombstone), else `u64::MAX` (a phantom).
pub fn record_value(value: Option<&[u8]>, id_header: Option<&[u8]>) -> u64 {
    match value {
        Some(bytes) => queue_value(Some(bytes)),
        None => queue_value(id_header),
    }
}

/// The queue workload's record value for `value`: its 8 big-endian bytes, then 24 `x`s.
pub fn queue_payload(value: u64) -> Vec<u8> {
    let mut payload = value.to_be_bytes().to_vec();
    payload.extend_from_slice(&[b'x'; 24]);
    payload
}

/// The value a queue record's bytes start with (what a producer sent, see `queue_payload`), or
/// `u64::MAX` for a record the workload did not write (no value, or fewer than 8 bytes: the
/// checker calls it a phantom).
pub fn queue_value(bytes: Option<&[u8]>) -> u64 {
    bytes.and_then(|v| v.get(..8)).map_or(u64::MAX, |v| {
        u64::from_be_bytes(v.try_into().expect("8 bytes"))
    })
}

impl History {
    /// Per partition, the highest offset an acks=all send was acknowledged at (-1 when only
    /// acks=0 sends, which answer -1, were). acks=1 writes may be lost, offsets and all: only
    /// acks=all ones must be read back, so the others are left out.
    pub fn highest_acknowledged(&self) -> BTreeMap<i32, i64> {
        let mut highest = BTreeMap::new();
        for send in self.sends.values() {
            if send.kind == Delivery::LeaderOnly {
                continue;
            }
            if let Outcome::Ok { partition, offset } = send.outcome {
                let entry = highest.entry(partition).or_insert(-1);
                *entry = (*entry).max(offset);
            }
        }
        highest
    }

    /// The acknowledged acks=all sends no consumer-group member has read, in value order,
    /// leaving out those below `starts` (per partition; a partition not in it starts at 0):
    /// records retention or DeleteRecords may have removed before the group read them. In a
    /// compacted history, only those the final read holds as their key's latest in their
    /// partition: the others may have been cleaned away before the group came to them
    /// (whether they were allowed to vanish is the checker's question). A superseded record
    /// the final read still holds may be gone from the replica the group read, since each
    /// replica cleans on its own schedule. So call it after the final read. And no tombstone:
    /// one the final read held may expire (`delete.retention.ms`) before a lagging group comes
    /// to it.
    pub fn unread_by_group<'a>(
        &'a self,
        starts: &'a BTreeMap<i32, i64>,
    ) -> impl Iterator<Item = &'a SendOp> + 'a {
        let delivered: BTreeSet<u64> = self.group.deliveries.iter().map(|d| d.value).collect();
        let in_final_read: Option<BTreeSet<(i32, i64, u64)>> =
            self.compaction.map(|_| self.final_latest());
        self.sends.values().filter(move |send| match send.outcome {
            Outcome::Ok { partition, offset } => {
                send.kind != Delivery::LeaderOnly
                    && offset >= starts.get(&partition).copied().unwrap_or(0)
                    && !delivered.contains(&send.value)
                    && in_final_read.as_ref().is_none_or(|read| {
                        read.contains(&(partition, offset, send.value))
                            && !self.tombstones.contains(&send.value)
                    })
            }
            _ => false,
        })
    }

    /// Per partition and key, the final read's last record, as (partition, offset, value):
    /// what no replica's cleaner may have removed by the time of the final read. A superseded
    /// record the final read still holds may already be gone from another replica (each
    /// cleans on its own schedule and by its own clock), so only these are owed to every
    /// reader of a compacted topic. Records of values no send made are left out.
    pub fn final_latest(&self) -> BTreeSet<(i32, i64, u64)> {
        let mut latest: BTreeMap<(i32, u64), (i64, u64)> = BTreeMap::new();
        for (&p, reads) in &self.reads {
            for &(o, v) in reads {
                if let Some(send) = self.sends.get(&v) {
                    latest.insert((p, send.key), (o, v));
                }
            }
        }
        latest
            .into_iter()
            .map(|((p, _), (o, v))| (p, o, v))
            .collect()
    }

    /// Whether the send of `value` was a tombstone.
    pub fn is_tombstone(&self, value: u64) -> bool {
        self.tombstones.contains(&value)
    }

    /// Ends the final read: records, for each of the `partitions`, where it began (its first
    /// record read, else `position` of the partition, else 0) in `final_starts`, and sets
    /// `finished`.
    pub fn finish_final_read(
        &mut self,
        partitions: i32,
        mut position: impl FnMut(i32) -> Option<i64>,
    ) {
        for partition in 0..partitions {
            let start = match self.reads.get(&partition).and_then(|r| r.first()) {
                Some((offset, _)) => *offset,
                None => position(partition).unwrap_or(0),
            };
            self.final_starts.insert(partition, start);
        }
        self.finished = true;
    }

    /// Ends a final read that began at `began_ms` (its first fetch was sent), ended at
    /// `ended_ms` (its last fetch had returned), and began each partition at the log start
    /// offset `log_start` answers (ListOffsets earliest, asked as it began): what a compacted
    /// topic's final read records, since its first record may lie above the log start (cleaned
    /// away) and the checker bounds what the cleaner may have done by those times. Records
    /// `final_read_began_ms` and `final_read_ms`, and, for each of the `partitions`, in
    /// `final_starts` the log start (never above the partition's first record read), else its
    /// first record read, else 0; sets `finished`.
    pub fn finish_final_read_at(
        &mut self,
        partitions: i32,
        began_ms: u64,
        ended_ms: u64,
        mut log_start: impl FnMut(i32) -> Option<i64>,
    ) {
        for partition in 0..partitions {
            let first = self
                .reads
                .get(&partition)
                .and_then(|r| r.first())
                .map(|(offset, _)| *offset);
            let start = match (log_start(partition), first) {
                (Some(start), Some(first)) => start.min(first),
                (Some(start), None) => start,
                (None, Some(first)) => first,
                (None, None) => 0,
            };
            self.final_starts.insert(partition, start);
        }
        self.final_read_began_ms = Some(began_ms);
        self.final_read_ms = Some(ended_ms);
        self.finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(value: u64, kind: Delivery, outcome: Outcome) -> SendOp {
        SendOp {
            producer: 0,
            kind,
            key: value,
            value,
            invoked_ms: value,
            outcome,
            completed_ms: value + 1,
            op: None,
        }
    }

    fn ok(partition: i32, offset: i64) -> Outcome {
        Outcome::Ok { partition, offset }
    }

    fn delivery(value: u64, partition: i32, offset: i64) -> GroupDelivery {
        GroupDelivery {
            member: 0,
            generation: 1,
            partition,
            offset,
            value,
        }
    }

    /// A history of every kind of send on partitions 0 to 2.
    fn history() -> History {
        let sends = [
            send(1, Delivery::Idempotent, ok(0, 4)),
            send(2, Delivery::AtLeastOnce, ok(0, 7)),
            send(3, Delivery::Idempotent, ok(0, 5)),
            // acks=1: may be lost, so neither the highest nor owed to the group.
            send(4, Delivery::LeaderOnly, ok(0, 9)),
            send(5, Delivery::LeaderOnly, ok(2, 3)),
            // acks=0 answers -1.
            send(6, Delivery::AtLeastOnce, ok(1, -1)),
            send(7, Delivery::Idempotent, ok(1, 2)),
            send(8, Delivery::Idempotent, Outcome::Info("timeout".into())),
            send(9, Delivery::Idempotent, Outcome::Fail("rejected".into())),
            send(10, Delivery::Idempotent, Outcome::Pending),
            send(11, Delivery::AtLeastOnce, ok(1, 0)),
        ];
        let mut history = History {
            sends: sends.into_iter().map(|s| (s.value, s)).collect(),
            ..History::default()
        };
        history.group.deliveries = vec![delivery(1, 0, 4), delivery(7, 1, 2)];
        history
    }

    #[test]
    fn a_queue_payload_is_the_value_big_endian_then_24_xs_and_reads_back() {
        assert_eq!(
            queue_payload(0x0102_0304_0506_0708),
            [&[1, 2, 3, 4, 5, 6, 7, 8][..], &[b'x'; 24][..]].concat()
        );
        for value in [
            0,
            1,
            255,
            256,
            0x0102_0304_0506_0708,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let payload = queue_payload(value);
            assert_eq!(payload.len(), 32);
            assert_eq!(queue_value(Some(&payload)), value);
            // Only the first 8 bytes count.
            assert_eq!(queue_value(Some(&payload[..8])), value);
        }
        assert_eq!(queue_value(None), u64::MAX);
        assert_eq!(queue_value(Some(&[])), u64::MAX);
        assert_eq!(queue_value(Some(&[1, 2, 3, 4, 5, 6, 7])), u64::MAX);
    }

    #[test]
    fn highest_acknowledged_takes_the_highest_acks_all_offset_of_each_partition() {
        assert_eq!(
            history().highest_acknowledged(),
            BTreeMap::from([(0, 7), (1, 2)])
        );
        assert_eq!(History::default().highest_acknowledged(), BTreeMap::new());
        let mut acks_zero = History::default();
        acks_zero
            .sends
            .insert(1, send(1, Delivery::AtLeastOnce, ok(3, -1)));
        assert_eq!(acks_zero.highest_acknowledged(), BTreeMap::from([(3, -1)]));
    }

    #[test]
    fn unread_by_group_is_every_acknowledged_acks_all_send_unread_at_or_above_its_start() {
        let history = history();
        let values = |starts: &BTreeMap<i32, i64>| -> Vec<u64> {
            history.unread_by_group(starts).map(|s| s.value).collect()
        };
        // No starts: every partition from 0 (acks=0's -1 is below it).
        assert_eq!(values(&BTreeMap::new()), vec![2, 3, 11]);
        // A start leaves out what is below it, and only in its partition.
        assert_eq!(values(&BTreeMap::from([(0, 6)])), vec![2, 11]);
        assert_eq!(values(&BTreeMap::from([(0, 5), (1, 1)])), vec![2, 3]);
        assert_eq!(values(&BTreeMap::from([(0, 8), (1, 1)])), Vec::<u64>::new());
        // A negative start takes acks=0's -1 too.
        assert_eq!(values(&BTreeMap::from([(1, -1)])), vec![2, 3, 6, 11]);
        assert_eq!(
            History::default().unread_by_group(&BTreeMap::new()).count(),
            0
        );
    }

    #[test]
    fn a_record_s_value_is_its_bytes_else_its_id_header() {
        let payload = queue_payload(7);
        let header = id_header_value(9);
        assert_eq!(record_value(Some(&payload), Some(&header)), 7);
        assert_eq!(record_value(None, Some(&header)), 9, "a tombstone");
        assert_eq!(record_value(None, None), u64::MAX);
        assert_eq!(record_value(None, Some(&header[..4])), u64::MAX);
    }

    #[test]
    fn in_a_compacted_history_the_group_owes_only_each_key_s_latest_in_the_final_read() {
        let mut history = history();
        history.reads.insert(0, vec![(5, 3), (7, 2)]);
        // Values 3 and 2 are in the final read where acknowledged, unread by the group; 11,
        // acknowledged at 1@0, is not in it (cleaned away).
        history.compaction = Some(Compaction::default());
        let owed = |h: &History| -> Vec<u64> {
            h.unread_by_group(&BTreeMap::new())
                .map(|s| s.value)
                .collect()
        };
        assert_eq!(owed(&history), vec![2, 3]);
        // Read at another offset than acknowledged: not what was acknowledged.
        history.reads.insert(0, vec![(6, 3), (7, 2)]);
        assert_eq!(owed(&history), vec![2]);
        // Two records of one key: only the later is owed. The earlier may be gone from the
        // replica the group read (replicas clean on their own schedules) while the final read,
        // from another, still held it.
        history.reads.insert(0, vec![(5, 3), (7, 2)]);
        history.sends.get_mut(&3).expect("sent").key = 2;
        assert_eq!(owed(&history), vec![2]);
        history.reads.insert(0, vec![(5, 3)]);
        assert_eq!(owed(&history), vec![3]);
        assert!(history.tombstones.is_empty() && !history.is_tombstone(2));
        history.tombstones.insert(2);
        assert!(history.is_tombstone(2));
    }

    #[test]
    fn finish_final_read_at_starts_each_partition_at_its_log_start() {
        let mut history = History::default();
        history.reads.insert(0, vec![(3, 30), (4, 40)]);
        history.reads.insert(2, vec![(5, 1)]);
        history.reads.insert(3, vec![(2, 1)]);
        // Partition 0: log start 0, first record at 3 (cleaned below it); 1: nothing read;
        // 2: log start unknown; 3: a log start above the first record read; 4: nothing known.
        history.finish_final_read_at(5, 800, 900, |partition| match partition {
            0 => Some(0),
            1 => Some(8),
            3 => Some(4),
            _ => None,
        });
        assert_eq!(
            history.final_starts,
            BTreeMap::from([(0, 0), (1, 8), (2, 5), (3, 2), (4, 0)])
        );
        assert_eq!(history.final_read_began_ms, Some(800));
        assert_eq!(history.final_read_ms, Some(900));
        assert!(history.finished);
    }

    #[test]
    fn finish_final_read_starts_each_partition_at_its_first_read_else_its_position() {
        let mut history = History::default();
        history.reads.insert(0, vec![(3, 30), (4, 40)]);
        history.reads.insert(2, vec![(0, 1)]);
        history.reads.insert(5, vec![(9, 2)]); // not one of the partitions
        let mut asked = Vec::new();
        history.finish_final_read(4, |partition| {
            asked.push(partition);
            (partition == 1).then_some(12)
        });
        assert_eq!(asked, vec![1, 3]);
        assert_eq!(
            history.final_starts,
            BTreeMap::from([(0, 3), (1, 12), (2, 0), (3, 0)])
        );
        assert!(history.finished);
    }
}
