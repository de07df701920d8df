//! The replicated state: [`Command`], the entries of a coordinator partition's log (offset
//! commits, a group's membership after a rebalance, deletions, transactional offset commits
//! and the markers that end them) and their codec, the stored types they carry, and
//! [`StoredState`], which applying them builds on every replica (encoded, it is the snapshot of
//! a coordinator's log). The transactional part of the state is in `txn.rs`.

mod txn;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

pub use txn::{PendingOffsets, TxnEnd, ENDED_KEEP_MS};

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{Generation, ProducerEpoch, ProducerId};

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// The leader epoch of the record before it, or -1.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When the commit was accepted (the coordinator's wall clock, Unix ms).
    pub commit_time_ms: i64,
}

/// A member as stored with its generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Subscription for the chosen protocol.
    pub subscription: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// A group's membership as of its last completed rebalance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMeta {
    /// Generation.
    pub generation: Generation,
    /// Protocol type ("" when the group is empty).
    pub protocol_type: String,
    /// Chosen assignor ("" when the group is empty).
    pub protocol: String,
    /// Leader's member id ("" when empty).
    pub leader: String,
    /// Members; empty for an empty group.
    pub members: Vec<StoredMember>,
    /// When the coordinator stored this membership (its wall clock, Unix ms; Kafka's
    /// `currentStateTimestamp`), or -1 for one stored before memberships carried a time. An
    /// empty group's offsets retention counts from it, on whichever replica coordinates.
    pub state_time_ms: i64,
}

/// One entry of a coordinator partition's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Offsets committed by a group.
    Offsets {
        /// The group.
        group_id: String,
        /// (topic, partition, offset).
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// A group's membership after a rebalance.
    Group {
        /// The group.
        group_id: String,
        /// Its membership.
        meta: GroupMeta,
    },
    /// A group and its offsets are deleted.
    Delete {
        /// The group.
        group_id: String,
    },
    /// Some of a group's committed offsets are deleted (OffsetDelete).
    DeleteOffsets {
        /// The group.
        group_id: String,
        /// (topic, partition).
        partitions: Vec<(String, i32)>,
    },
    /// Offsets a transaction commits for a group (TxnOffsetCommit): pending until the
    /// transaction's marker on this partition ([`Command::TxnEnd`]) makes them the group's
    /// committed offsets or drops them.
    TxnOffsets {
        /// The group.
        group_id: String,
        /// The transactional producer.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: ProducerEpoch,
        /// The transaction's start on its coordinator: what names it (as in a partition's
        /// producer table), so a marker ends exactly it.
        txn_start_ms: i64,
        /// (topic, partition, offset).
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// A transaction's marker on this partition: its pending offsets, in every group, become
    /// committed offsets (commit) or are dropped (abort).
    TxnEnd(TxnEnd),
}

const VERSION: u8 = 1;
/// The tag of a [`Command::Group`] written before memberships carried their time (decoded with
/// `state_time_ms` -1).
const GROUP_WITHOUT_TIME: u8 = 2;
/// The tag of a [`Command::Group`] with its `state_time_ms`.
const GROUP_WITH_TIME: u8 = 5;
/// The tag of a [`Command::TxnOffsets`].
const TXN_OFFSETS: u8 = 6;
/// The tag of a [`Command::TxnEnd`].
const TXN_END: u8 = 7;

fn put_str(w: &mut Writer, s: &str) {
    w.bytes(s.as_bytes());
}

fn put_opt(w: &mut Writer, s: &Option<String>) {
    match s {
        Some(s) => {
            w.u8(1);
            put_str(w, s);
        }
        None => w.u8(0),
    }
}

fn get_str(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
}

fn put_offsets(w: &mut Writer, offsets: &[(String, i32, CommittedOffset)]) {
    w.u32(offsets.len() as u32);
    for (topic, partition, o) in offsets {
        put_str(w, topic);
        w.i32(*partition);
        w.i64(o.offset);
        w.i32(o.leader_epoch);
        put_str(w, &o.metadata);
        w.i64(o.commit_time_ms);
    }
}

fn get_offsets(r: &mut Reader<'_>) -> Result<Vec<(String, i32, CommittedOffset)>, DecodeError> {
    let count = r.u32()?;
    let mut offsets = Vec::new();
    for _ in 0..count {
        let topic = get_str(r)?;
        let partition = r.i32()?;
        let offset = CommittedOffset {
            offset: r.i64()?,
            leader_epoch: r.i32()?,
            metadata: get_str(r)?,
            commit_time_ms: r.i64()?,
        };
        offsets.push((topic, partition, offset));
    }
    Ok(offsets)
}

fn get_opt(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_str(r)?)),
        _ => Err(DecodeError("bad option tag")),
    }
}

impl Command {
    /// The group the command is about; `None` for a marker, which is about every group with
    /// offsets of its transaction.
    pub fn group_id(&self) -> Option<&str> {
        match self {
            Self::Offsets { group_id, .. }
            | Self::Group { group_id, .. }
            | Self::Delete { group_id }
            | Self::DeleteOffsets { group_id, .. }
            | Self::TxnOffsets { group_id, .. } => Some(group_id),
            Self::TxnEnd(_) => None,
        }
    }

    /// Encodes the command for the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        match self {
            Self::Offsets { group_id, offsets } => {
                w.u8(1);
                put_str(&mut w, group_id);
                put_offsets(&mut w, offsets);
            }
            Self::Group { group_id, meta } => {
                w.u8(GROUP_WITH_TIME);
                put_str(&mut w, group_id);
                w.i64(meta.state_time_ms);
                w.i32(meta.generation.0);
                put_str(&mut w, &meta.protocol_type);
                put_str(&mut w, &meta.protocol);
                put_str(&mut w, &meta.leader);
                w.u32(meta.members.len() as u32);
                for m in &meta.members {
                    put_str(&mut w, &m.member_id);
                    put_opt(&mut w, &m.instance_id);
                    put_str(&mut w, &m.client_id);
                    put_str(&mut w, &m.client_host);
                    w.i32(m.session_timeout_ms);
                    w.i32(m.rebalance_timeout_ms);
                    w.bytes(&m.subscription);
                    w.bytes(&m.assignment);
                }
            }
            Self::Delete { group_id } => {
                w.u8(3);
                put_str(&mut w, group_id);
            }
            Self::DeleteOffsets {
                group_id,
                partitions,
            } => {
                w.u8(4);
                put_str(&mut w, group_id);
                w.u32(partitions.len() as u32);
                for (topic, partition) in partitions {
                    put_str(&mut w, topic);
                    w.i32(*partition);
                }
            }
            Self::TxnOffsets {
                group_id,
                producer_id,
                epoch,
                txn_start_ms,
                offsets,
            } => {
                w.u8(TXN_OFFSETS);
                put_str(&mut w, group_id);
                w.i64(producer_id.0);
                w.i16(epoch.0);
                w.i64(*txn_start_ms);
                put_offsets(&mut w, offsets);
            }
            Self::TxnEnd(end) => {
                w.u8(TXN_END);
                w.i64(end.producer_id.0);
                w.i16(end.epoch.0);
                w.i64(end.txn_start_ms);
                w.u8(u8::from(end.commit));
                w.i64(end.ended_ms);
            }
        }
        w.bytes
    }

    /// Decodes a command written by [`Command::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown coordinator command version"));
        }
        let command = match r.u8()? {
            1 => {
                let group_id = get_str(&mut r)?;
                let offsets = get_offsets(&mut r)?;
                Self::Offsets { group_id, offsets }
            }
            TXN_OFFSETS => Self::TxnOffsets {
                group_id: get_str(&mut r)?,
                producer_id: ProducerId(r.i64()?),
                epoch: ProducerEpoch(r.i16()?),
                txn_start_ms: r.i64()?,
                offsets: get_offsets(&mut r)?,
            },
            TXN_END => Self::TxnEnd(TxnEnd {
                producer_id: ProducerId(r.i64()?),
                epoch: ProducerEpoch(r.i16()?),
                txn_start_ms: r.i64()?,
                commit: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("bad transaction marker type")),
                },
                ended_ms: r.i64()?,
            }),
            tag @ (GROUP_WITHOUT_TIME | GROUP_WITH_TIME) => {
                let group_id = get_str(&mut r)?;
                let state_time_ms = if tag == GROUP_WITH_TIME { r.i64()? } else { -1 };
                let generation = Generation(r.i32()?);
                let protocol_type = get_str(&mut r)?;
                let protocol = get_str(&mut r)?;
                let leader = get_str(&mut r)?;
                let count = r.u32()?;
                let mut members = Vec::new();
                for _ in 0..count {
                    members.push(StoredMember {
                        member_id: get_str(&mut r)?,
                        instance_id: get_opt(&mut r)?,
                        client_id: get_str(&mut r)?,
                        client_host: get_str(&mut r)?,
                        session_timeout_ms: r.i32()?,
                        rebalance_timeout_ms: r.i32()?,
                        subscription: Bytes::copy_from_slice(r.bytes()?),
                        assignment: Bytes::copy_from_slice(r.bytes()?),
                    });
                }
                Self::Group {
                    group_id,
                    meta: GroupMeta {
                        generation,
                        protocol_type,
                        protocol,
                        leader,
                        members,
                        state_time_ms,
                    },
                }
            }
            3 => Self::Delete {
                group_id: get_str(&mut r)?,
            },
            4 => {
                let group_id = get_str(&mut r)?;
                let count = r.u32()?;
                let mut partitions = Vec::new();
                for _ in 0..count {
                    let topic = get_str(&mut r)?;
                    partitions.push((topic, r.i32()?));
                }
                Self::DeleteOffsets {
                    group_id,
                    partitions,
                }
            }
            _ => return Err(DecodeError("unknown coordinator command")),
        };
        r.finish()?;
        Ok(command)
    }
}

/// What one group has in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredGroup {
    /// Its membership as of the last completed rebalance.
    pub meta: Option<GroupMeta>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Offsets of open transactions, by producer: not committed offsets until their marker.
    pub pending: BTreeMap<ProducerId, PendingOffsets>,
}

impl StoredGroup {
    /// When the group's stored state last changed by the coordinators' wall clocks (its latest
    /// membership or offset commit), if any of them carries a time: a coordinator that takes
    /// the group over counts its offsets retention from here, not from when it took over.
    pub fn changed_ms(&self) -> Option<i64> {
        let membership = self.meta.as_ref().map(|m| m.state_time_ms);
        let commits = self.offsets.values().map(|o| o.commit_time_ms);
        membership
            .into_iter()
            .chain(commits)
            .filter(|ms| *ms >= 0)
            .max()
    }
}

/// How applying a command changed the size of the encoded state ([`StoredState::encode`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resize {
    /// Bytes the command added.
    pub added: usize,
    /// Bytes it removed (of what was there before it).
    pub removed: usize,
}

impl Resize {
    /// The size of the encoded state after the command, given its size before.
    pub fn applied_to(self, bytes: usize) -> usize {
        (bytes + self.added)
            .checked_sub(self.removed)
            .expect("a command removes only bytes that were there")
    }
}

/// The applied state of one coordinator partition: the same on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Groups by id.
    pub groups: BTreeMap<String, StoredGroup>,
    /// The last transaction of each producer whose marker this partition applied, for
    /// [`ENDED_KEEP_MS`] after it: a transactional offset commit of a transaction already
    /// ended here (verified before its marker, applied after) is dropped, so it cannot stay
    /// pending forever.
    pub txn_ended: BTreeMap<ProducerId, TxnEnd>,
    /// The groups with pending offsets of each producer (derived from `groups`; not encoded).
    pending_groups: BTreeMap<ProducerId, BTreeSet<String>>,
    /// `txn_ended` by (when it ended, producer), to forget the oldest (derived; not encoded).
    ended_by_time: BTreeSet<(i64, ProducerId)>,
}

impl StoredState {
    /// Bytes the encoded state holds besides its groups: the version and the count of
    /// commands.
    pub const HEADER_BYTES: usize = 1 + 4;

    /// Bytes a group takes in the encoded state before its offsets and membership: its
    /// offsets command (written for every group, with or without offsets) without them: the
    /// length prefix, version, tag, group id and count. The least a group takes.
    pub fn group_bytes(group_id: &str) -> usize {
        4 + 1 + 1 + 4 + group_id.len() + 4
    }

    /// Bytes one committed offset takes in its group's offsets command.
    pub fn offset_bytes(topic: &str, offset: &CommittedOffset) -> usize {
        (4 + topic.len()) + 4 + 8 + 4 + (4 + offset.metadata.len()) + 8
    }

    /// Bytes a group's membership takes in the encoded state: its `Group` command, with the
    /// length prefix (what [`Command::encode`] writes, counted without encoding it).
    pub fn membership_bytes(group_id: &str, meta: &GroupMeta) -> usize {
        let members: usize = meta
            .members
            .iter()
            .map(|m| {
                let instance = m.instance_id.as_ref().map_or(1, |i| 1 + 4 + i.len());
                (4 + m.member_id.len())
                    + instance
                    + (4 + m.client_id.len())
                    + (4 + m.client_host.len())
                    + 4
                    + 4
                    + (4 + m.subscription.len())
                    + (4 + m.assignment.len())
            })
            .sum();
        4 + 1
            + 1
            + (4 + group_id.len())
            + 8
            + 4
            + (4 + meta.protocol_type.len())
            + (4 + meta.protocol.len())
            + (4 + meta.leader.len())
            + 4
            + members
    }

    /// Bytes one group takes in the encoded state, offsets and membership included.
    pub fn stored_group_bytes(group_id: &str, group: &StoredGroup) -> usize {
        let offsets: usize = group
            .offsets
            .iter()
            .map(|((topic, _), o)| Self::offset_bytes(topic, o))
            .sum();
        let membership = group
            .meta
            .as_ref()
            .map_or(0, |meta| Self::membership_bytes(group_id, meta));
        let pending: usize = group
            .pending
            .values()
            .map(|p| Self::pending_bytes(group_id, p))
            .sum();
        Self::group_bytes(group_id) + offsets + membership + pending
    }

    /// Bytes of the encoded state (what [`StoredState::encode`] returns), summed group by
    /// group: the full recount that the coordinator's count as entries apply is checked
    /// against.
    pub fn encoded_len(&self) -> usize {
        let groups: usize = self
            .groups
            .iter()
            .map(|(id, g)| Self::stored_group_bytes(id, g))
            .sum();
        Self::HEADER_BYTES + groups + self.txn_ended.len() * TxnEnd::ENCODED_BYTES
    }

    /// At most how many bytes applying `command` adds to the encoded state, whatever else
    /// applies before it: every key it writes counted at its growth over what the key holds
    /// now (nothing it shrinks counted as room), a group it creates at its header, and a
    /// deletion at 0. So the bounds of a leader's proposals not yet applied, summed, bound
    /// how far they can take the state past its size now, in any order and whatever they
    /// overwrite of each other.
    pub fn growth_bound(&self, command: &Command) -> usize {
        let Some(group_id) = command.group_id() else {
            return self.txn_growth_bound(command);
        };
        let group = self.groups.get(group_id);
        let new_group = if group.is_none() {
            Self::group_bytes(group_id)
        } else {
            0
        };
        match command {
            Command::Offsets { offsets, .. } => {
                let grown: usize = offsets
                    .iter()
                    .map(|(topic, partition, offset)| {
                        let old = group
                            .and_then(|g| g.offsets.get(&(topic.clone(), *partition)))
                            .map_or(0, |o| Self::offset_bytes(topic, o));
                        Self::offset_bytes(topic, offset).saturating_sub(old)
                    })
                    .sum();
                new_group + grown
            }
            Command::Group { group_id, meta } => {
                let old = group
                    .and_then(|g| g.meta.as_ref())
                    .map_or(0, |m| Self::membership_bytes(group_id, m));
                new_group + Self::membership_bytes(group_id, meta).saturating_sub(old)
            }
            Command::Delete { .. } | Command::DeleteOffsets { .. } => 0,
            Command::TxnOffsets { .. } => new_group + self.txn_growth_bound(command),
            Command::TxnEnd(_) => unreachable!("a marker has no group"),
        }
    }

    /// Encodes the state as the commands that rebuild it: the transactions ended here, then
    /// per group its membership, its offsets and its pending transactional offsets, each once
    /// (a snapshot of the coordinator's log, compacted by key).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        let mut commands: Vec<Command> = self
            .txn_ended
            .values()
            .cloned()
            .map(Command::TxnEnd)
            .collect();
        for (group_id, group) in &self.groups {
            if let Some(meta) = &group.meta {
                commands.push(Command::Group {
                    group_id: group_id.clone(),
                    meta: meta.clone(),
                });
            }
            commands.push(Command::Offsets {
                group_id: group_id.clone(),
                offsets: group
                    .offsets
                    .iter()
                    .map(|((t, p), o)| (t.clone(), *p, o.clone()))
                    .collect(),
            });
            commands.extend(
                group
                    .pending
                    .iter()
                    .map(|(producer_id, p)| p.command(group_id, *producer_id)),
            );
        }
        w.u32(commands.len() as u32);
        for command in commands {
            w.bytes(&command.encode());
        }
        w.bytes
    }

    /// Decodes a state written by [`StoredState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown coordinator state version"));
        }
        let mut state = Self::default();
        for _ in 0..r.u32()? {
            let command = Command::decode(r.bytes()?)?;
            // `apply` asserts this of the log's own entries; bytes from elsewhere (a peer's
            // snapshot) are refused instead.
            if let Command::Group { group_id, meta } = &command {
                let stored = state.groups.get(group_id).and_then(|g| g.meta.as_ref());
                if stored.is_some_and(|old| meta.generation < old.generation) {
                    return Err(DecodeError(
                        "a group's generation goes back in a coordinator state",
                    ));
                }
            }
            match command {
                // As stored: a snapshot's ended transactions are those kept at its last marker.
                Command::TxnEnd(end) => {
                    state.restore_ended(end);
                }
                command => {
                    state.apply(&command);
                }
            }
        }
        r.finish()?;
        Ok(state)
    }

    /// Applies one command; returns how it changed the size of the encoded state.
    pub fn apply(&mut self, command: &Command) -> Resize {
        let mut resize = Resize::default();
        let Some(group_id) = command.group_id() else {
            let Command::TxnEnd(end) = command else {
                unreachable!("only a marker has no group")
            };
            return self.apply_txn_end(end);
        };
        if let Command::TxnOffsets {
            producer_id,
            txn_start_ms,
            ..
        } = command
        {
            if self.is_ended(*producer_id, *txn_start_ms) {
                return resize;
            }
        }
        if matches!(
            command,
            Command::Offsets { .. } | Command::Group { .. } | Command::TxnOffsets { .. }
        ) && !self.groups.contains_key(group_id)
        {
            resize.added += Self::group_bytes(group_id);
        }
        match command {
            Command::Offsets { group_id, offsets } => {
                let group = self.groups.entry(group_id.clone()).or_default();
                for (topic, partition, offset) in offsets {
                    resize.added += Self::offset_bytes(topic, offset);
                    let old = group
                        .offsets
                        .insert((topic.clone(), *partition), offset.clone());
                    if let Some(old) = old {
                        resize.removed += Self::offset_bytes(topic, &old);
                    }
                }
            }
            Command::Group { group_id, meta } => {
                let group = self.groups.entry(group_id.clone()).or_default();
                if let Some(old) = &group.meta {
                    assert!(
                        meta.generation >= old.generation,
                        "a group's stored generation never goes back"
                    );
                    resize.removed += Self::membership_bytes(group_id, old);
                }
                resize.added += Self::membership_bytes(group_id, meta);
                group.meta = Some(meta.clone());
            }
            Command::Delete { group_id } => {
                if let Some(group) = self.groups.remove(group_id) {
                    resize.removed += Self::stored_group_bytes(group_id, &group);
                    for producer_id in group.pending.keys() {
                        self.unindex_pending(*producer_id, group_id);
                    }
                }
            }
            Command::DeleteOffsets {
                group_id,
                partitions,
            } => {
                if let Some(group) = self.groups.get_mut(group_id) {
                    for (topic, partition) in partitions {
                        if let Some(old) = group.offsets.remove(&(topic.clone(), *partition)) {
                            resize.removed += Self::offset_bytes(topic, &old);
                        }
                    }
                }
            }
            Command::TxnOffsets {
                group_id,
                producer_id,
                epoch,
                txn_start_ms,
                offsets,
            } => {
                resize = self.apply_txn_offsets(
                    group_id,
                    (*producer_id, *epoch, *txn_start_ms),
                    offsets,
                    resize,
                );
            }
            Command::TxnEnd(_) => unreachable!("handled above"),
        }
        resize
    }
}

#[cfg(test)]
mod tests;
