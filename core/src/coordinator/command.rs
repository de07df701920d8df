//! The replicated state: [`Command`], the entries of a coordinator partition's log (offset
//! commits, a group's membership after a rebalance, deletions) and their codec, the stored types
//! they carry, and [`StoredState`], which applying them builds on every replica (encoded, it is
//! the snapshot of a coordinator's log).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::Generation;

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
}

const VERSION: u8 = 1;
/// The tag of a [`Command::Group`] written before memberships carried their time (decoded with
/// `state_time_ms` -1).
const GROUP_WITHOUT_TIME: u8 = 2;
/// The tag of a [`Command::Group`] with its `state_time_ms`.
const GROUP_WITH_TIME: u8 = 5;

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

fn get_opt(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_str(r)?)),
        _ => Err(DecodeError("bad option tag")),
    }
}

impl Command {
    /// The group the command is about.
    pub fn group_id(&self) -> &str {
        match self {
            Self::Offsets { group_id, .. }
            | Self::Group { group_id, .. }
            | Self::Delete { group_id }
            | Self::DeleteOffsets { group_id, .. } => group_id,
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
                w.u32(offsets.len() as u32);
                for (topic, partition, o) in offsets {
                    put_str(&mut w, topic);
                    w.i32(*partition);
                    w.i64(o.offset);
                    w.i32(o.leader_epoch);
                    put_str(&mut w, &o.metadata);
                    w.i64(o.commit_time_ms);
                }
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
                let count = r.u32()?;
                let mut offsets = Vec::new();
                for _ in 0..count {
                    let topic = get_str(&mut r)?;
                    let partition = r.i32()?;
                    let offset = CommittedOffset {
                        offset: r.i64()?,
                        leader_epoch: r.i32()?,
                        metadata: get_str(&mut r)?,
                        commit_time_ms: r.i64()?,
                    };
                    offsets.push((topic, partition, offset));
                }
                Self::Offsets { group_id, offsets }
            }
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
        Self::group_bytes(group_id) + offsets + membership
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
        Self::HEADER_BYTES + groups
    }

    /// At most how many bytes applying `command` adds to the encoded state, whatever else
    /// applies before it: every key it writes counted at its growth over what the key holds
    /// now (nothing it shrinks counted as room), a group it creates at its header, and a
    /// deletion at 0. So the bounds of a leader's proposals not yet applied, summed, bound
    /// how far they can take the state past its size now, in any order and whatever they
    /// overwrite of each other.
    pub fn growth_bound(&self, command: &Command) -> usize {
        let group = self.groups.get(command.group_id());
        let new_group = if group.is_none() {
            Self::group_bytes(command.group_id())
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
        }
    }

    /// Encodes the state as the commands that rebuild it: per group its membership and its
    /// offsets, each once (a snapshot of the coordinator's log, compacted by key).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        let mut commands = Vec::new();
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
            state.apply(&command);
        }
        r.finish()?;
        Ok(state)
    }

    /// Applies one command; returns how it changed the size of the encoded state.
    pub fn apply(&mut self, command: &Command) -> Resize {
        let mut resize = Resize::default();
        let group_id = command.group_id();
        if matches!(command, Command::Offsets { .. } | Command::Group { .. })
            && !self.groups.contains_key(group_id)
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
        }
        resize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `decoders` fuzz target: a state whose group's generation goes back
    /// panicked in `apply` instead of being refused.
    #[test]
    fn a_state_whose_generation_goes_back_is_refused() {
        let meta = |generation| GroupMeta {
            generation: Generation(generation),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            leader: String::new(),
            members: Vec::new(),
            state_time_ms: 1_000,
        };
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u32(2);
        for generation in [5, 4] {
            let command = Command::Group {
                group_id: "g".into(),
                meta: meta(generation),
            };
            w.bytes(&command.encode());
        }
        assert_eq!(
            StoredState::decode(&w.bytes),
            Err(DecodeError(
                "a group's generation goes back in a coordinator state"
            ))
        );
    }

    /// Memberships stored before they carried a time still decode, with the time unknown, and
    /// leave retention to the offsets' commit times.
    #[test]
    fn a_membership_without_a_time_decodes_as_unknown() {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u8(GROUP_WITHOUT_TIME);
        put_str(&mut w, "g");
        w.i32(4);
        for s in ["consumer", "range", ""] {
            put_str(&mut w, s);
        }
        w.u32(0);
        let command = Command::decode(&w.bytes).expect("decodes");
        let Command::Group { meta, .. } = &command else {
            panic!("{command:?}")
        };
        assert_eq!((meta.generation, meta.state_time_ms), (Generation(4), -1));
        let mut state = StoredState::default();
        state.apply(&command);
        assert_eq!(state.groups["g"].changed_ms(), None);
        state.apply(&Command::Offsets {
            group_id: "g".into(),
            offsets: vec![(
                "t".into(),
                0,
                CommittedOffset {
                    offset: 1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_time_ms: 7_000,
                },
            )],
        });
        assert_eq!(state.groups["g"].changed_ms(), Some(7_000));
    }

    #[test]
    fn commands_round_trip() {
        let commands = vec![
            Command::Offsets {
                group_id: "g".into(),
                offsets: vec![(
                    "t".into(),
                    3,
                    CommittedOffset {
                        offset: 42,
                        leader_epoch: 7,
                        metadata: "m".into(),
                        commit_time_ms: 1000,
                    },
                )],
            },
            Command::Group {
                group_id: "g".into(),
                meta: GroupMeta {
                    generation: Generation(3),
                    protocol_type: "consumer".into(),
                    protocol: "range".into(),
                    leader: "a".into(),
                    members: vec![StoredMember {
                        member_id: "a".into(),
                        instance_id: Some("i".into()),
                        client_id: "c".into(),
                        client_host: "/1.2.3.4".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 30_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                    state_time_ms: 1_234,
                },
            },
            Command::Delete {
                group_id: "g".into(),
            },
            Command::DeleteOffsets {
                group_id: "g".into(),
                partitions: vec![("t".into(), 3), ("u".into(), 0)],
            },
        ];
        for command in commands {
            let bytes = command.encode();
            assert_eq!(Command::decode(&bytes).unwrap(), command);
            assert!(Command::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    /// A command of a small alphabet of groups, topics and partitions, so that commands
    /// overwrite, delete and recreate each other's keys; memberships get `generation`.
    fn command(choice: (u8, u8, u8, u8, usize), generation: i32) -> Command {
        let (kind, group, key, size, members) = choice;
        let group_id = ["a", "bb"][usize::from(group % 2)].to_string();
        let topic = ["t", "topic"][usize::from(key % 2)].to_string();
        let partition = i32::from(key / 2 % 3);
        let offset = CommittedOffset {
            offset: 7,
            leader_epoch: -1,
            metadata: "m".repeat(usize::from(size)),
            commit_time_ms: 1_000,
        };
        match kind % 4 {
            0 => Command::Offsets {
                group_id,
                offsets: vec![
                    (topic.clone(), partition, offset.clone()),
                    (topic, (partition + 1) % 3, offset),
                ],
            },
            1 => Command::Group {
                group_id,
                meta: GroupMeta {
                    generation: Generation(generation),
                    protocol_type: "consumer".into(),
                    protocol: "range".repeat(usize::from(size % 3)),
                    leader: "m0".into(),
                    members: (0..members)
                        .map(|i| StoredMember {
                            member_id: format!("m{i}"),
                            instance_id: (i % 2 == 1).then(|| format!("i{i}")),
                            client_id: "c".into(),
                            client_host: "/1.2.3.4".into(),
                            session_timeout_ms: 10_000,
                            rebalance_timeout_ms: 30_000,
                            subscription: Bytes::from(vec![1; usize::from(size)]),
                            assignment: Bytes::from(vec![2; i]),
                        })
                        .collect(),
                    state_time_ms: 1_234,
                },
            },
            2 => Command::Delete { group_id },
            _ => Command::DeleteOffsets {
                group_id,
                partitions: vec![(topic, partition)],
            },
        }
    }

    fn commands(choices: &[(u8, u8, u8, u8, usize)], first: i32) -> Vec<Command> {
        (first..)
            .zip(choices)
            .map(|(g, c)| command(*c, g))
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(crate::test_support::fixed_seed_config(256))]

        /// The size each command's `Resize` gives, added up from the empty state, is the
        /// encoded state's size after every command, and so is the recount.
        #[test]
        fn applied_sizes_are_the_encoded_size(
            choices in proptest::collection::vec((0u8..4, 0u8..2, 0u8..6, 0u8..40, 0usize..3), 0..40)
        ) {
            let mut state = StoredState::default();
            let mut bytes = StoredState::HEADER_BYTES;
            proptest::prop_assert_eq!(state.encode().len(), bytes);
            for command in commands(&choices, 1) {
                bytes = state.apply(&command).applied_to(bytes);
                proptest::prop_assert_eq!(state.encode().len(), bytes, "{:?}", command);
                proptest::prop_assert_eq!(state.encoded_len(), bytes);
            }
        }

        /// Commands a leader proposed against one state, applied after it in any order and
        /// overwriting each other, never grow it past their growth bounds summed.
        #[test]
        fn growth_bounds_sum_to_at_most_what_the_commands_add(
            before in proptest::collection::vec((0u8..4, 0u8..2, 0u8..6, 0u8..40, 0usize..3), 0..20),
            proposed in proptest::collection::vec((0u8..4, 0u8..2, 0u8..6, 0u8..40, 0usize..3), 1..20),
        ) {
            let mut state = StoredState::default();
            for command in commands(&before, 1) {
                state.apply(&command);
            }
            let size = state.encode().len();
            let proposed = commands(&proposed, 100);
            let bound: usize = proposed.iter().map(|c| state.growth_bound(c)).sum();
            for command in &proposed {
                state.apply(command);
            }
            proptest::prop_assert!(state.encode().len() <= size + bound);
        }
    }

    /// The case the bound must not miss: one commit grows a key and shrinks another, whose
    /// shrinking a later commit undoes. Neither commit's net change is growth; their keys' are.
    #[test]
    fn a_shrink_a_later_commit_undoes_is_not_counted_as_room() {
        let offset = |metadata: usize| CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: "m".repeat(metadata),
            commit_time_ms: 0,
        };
        let commit = |offsets: Vec<(&str, usize)>| Command::Offsets {
            group_id: "g".into(),
            offsets: offsets
                .into_iter()
                .map(|(t, m)| (t.to_string(), 0, offset(m)))
                .collect(),
        };
        let mut state = StoredState::default();
        state.apply(&commit(vec![("a", 10), ("b", 100)]));
        let size = state.encode().len();
        let swap = commit(vec![("a", 100), ("b", 10)]);
        let back = commit(vec![("b", 100)]);
        assert_eq!(state.growth_bound(&swap), 90);
        assert_eq!(state.growth_bound(&back), 0);
        state.apply(&swap);
        state.apply(&back);
        assert_eq!(state.encode().len(), size + 90);
    }
}
