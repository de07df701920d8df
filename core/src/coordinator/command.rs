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

/// The applied state of one coordinator partition: the same on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Groups by id.
    pub groups: BTreeMap<String, StoredGroup>,
}

impl StoredState {
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

    /// Applies one command.
    pub fn apply(&mut self, command: &Command) {
        match command {
            Command::Offsets { group_id, offsets } => {
                let group = self.groups.entry(group_id.clone()).or_default();
                for (topic, partition, offset) in offsets {
                    group
                        .offsets
                        .insert((topic.clone(), *partition), offset.clone());
                }
            }
            Command::Group { group_id, meta } => {
                let group = self.groups.entry(group_id.clone()).or_default();
                if let Some(old) = &group.meta {
                    assert!(
                        meta.generation >= old.generation,
                        "a group's stored generation never goes back"
                    );
                }
                group.meta = Some(meta.clone());
            }
            Command::Delete { group_id } => {
                self.groups.remove(group_id);
            }
            Command::DeleteOffsets {
                group_id,
                partitions,
            } => {
                if let Some(group) = self.groups.get_mut(group_id) {
                    for (topic, partition) in partitions {
                        group.offsets.remove(&(topic.clone(), *partition));
                    }
                }
            }
        }
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
}
