//! The metadata log's entries: each command's encoding (older entries keep decoding), and the
//! envelope of a command forwarded from another node with its origin.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::NodeId;

use super::{CreateTopic, MetadataCommand, PartitionLimits, PARTITIONS_PER_TOPIC_MAX};

const VERSION: u8 = 1;
const KIND_CREATE_TOPIC: u8 = 1;
const KIND_DELETE_TOPIC: u8 = 2;
const KIND_CREATE_PARTITIONS: u8 = 3;
const KIND_ALTER_TOPIC_CONFIGS: u8 = 4;
/// [`KIND_CREATE_TOPIC`] with a manual replica assignment after it (the older kinds are
/// written as before when there is none, so older entries and their encodings are unchanged).
const KIND_CREATE_TOPIC_ASSIGNED: u8 = 5;
/// [`KIND_CREATE_PARTITIONS`] with a manual replica assignment after it.
const KIND_CREATE_PARTITIONS_ASSIGNED: u8 = 6;
/// The first byte of an entry forwarded from another node (a command starts with `VERSION`).
const FORWARDED: u8 = 0xf1;
/// The first byte of an entry that carries the partition limits of the node that took the
/// request (a creation's), before the rest of the entry (forwarded or not).
const LIMITED: u8 = 0xf2;

/// The node that took a client's admin request and handed it to the metadata leader, with
/// its token: when the entry applies there, that node answers the client with the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The node that forwarded the command.
    pub node: NodeId,
    /// Its token for the waiting request (unique per node across restarts).
    pub token: u64,
}

/// A metadata log entry, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The change.
    pub command: MetadataCommand,
    /// The node that forwarded it, if one did.
    pub origin: Option<Origin>,
    /// The limits applying it checks: those it carries, else
    /// [`PartitionLimits::UNCARRIED`].
    pub limits: PartitionLimits,
}

/// Encodes a metadata log entry: the command, tagged with its origin if it was forwarded, and,
/// if it creates partitions, with `limits` (the node's that took the request), so that every
/// replica checks the same limits when it applies the entry.
pub fn encode_entry(
    command: &MetadataCommand,
    origin: Option<Origin>,
    limits: PartitionLimits,
) -> Vec<u8> {
    let mut w = Writer::default();
    if matches!(
        command,
        MetadataCommand::CreateTopic(_) | MetadataCommand::CreatePartitions { .. }
    ) {
        w.u8(LIMITED);
        w.u64(limits.cluster as u64);
        w.u64(limits.per_node as u64);
    }
    if let Some(origin) = origin {
        w.u8(FORWARDED);
        w.u64(origin.node.0);
        w.u64(origin.token);
    }
    let mut bytes = w.bytes;
    bytes.extend_from_slice(&command.encode());
    bytes
}

/// Decodes a metadata log entry written by [`encode_entry`] (or by an older version: a bare
/// command, or one with its origin).
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut rest = bytes;
    let mut limits = PartitionLimits::UNCARRIED;
    if rest.first() == Some(&LIMITED) {
        let mut r = Reader::new(&rest[1..]);
        let mut limit = || -> Result<usize, DecodeError> {
            usize::try_from(r.u64()?).map_err(|_| DecodeError("partition limit out of range"))
        };
        limits = PartitionLimits {
            cluster: limit()?,
            per_node: limit()?,
        };
        rest = &rest[17.min(rest.len())..];
    }
    let mut origin = None;
    if rest.first() == Some(&FORWARDED) {
        let mut r = Reader::new(&rest[1..]);
        origin = Some(Origin {
            node: NodeId(r.u64()?),
            token: r.u64()?,
        });
        rest = &rest[17.min(rest.len())..];
    }
    let command = MetadataCommand::decode(rest)?;
    let creates = matches!(
        command,
        MetadataCommand::CreateTopic(_) | MetadataCommand::CreatePartitions { .. }
    );
    if !creates && limits != PartitionLimits::UNCARRIED {
        // `encode_entry` writes limits only with a command that creates partitions.
        return Err(DecodeError(
            "partition limits with a command that creates none",
        ));
    }
    Ok(Entry {
        command,
        origin,
        limits,
    })
}

impl MetadataCommand {
    /// Encodes for a metadata log entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        match self {
            Self::CreateTopic(create) => {
                w.u8(if create.assignment.is_empty() {
                    KIND_CREATE_TOPIC
                } else {
                    KIND_CREATE_TOPIC_ASSIGNED
                });
                w.bytes(create.name.as_bytes());
                w.u32(create.partitions);
                w.u32(u32::from(create.replication_factor));
                w.u32(create.configs.len() as u32);
                for (key, value) in &create.configs {
                    w.bytes(key.as_bytes());
                    w.bytes(value.as_bytes());
                }
                if !create.assignment.is_empty() {
                    encode_assignment(&mut w, &create.assignment);
                }
            }
            Self::DeleteTopic { name } => {
                w.u8(KIND_DELETE_TOPIC);
                w.bytes(name.as_bytes());
            }
            Self::CreatePartitions {
                name,
                count,
                assignment,
            } => {
                w.u8(if assignment.is_empty() {
                    KIND_CREATE_PARTITIONS
                } else {
                    KIND_CREATE_PARTITIONS_ASSIGNED
                });
                w.bytes(name.as_bytes());
                w.u32(*count);
                if !assignment.is_empty() {
                    encode_assignment(&mut w, assignment);
                }
            }
            Self::AlterTopicConfigs {
                name,
                set,
                remove,
                replace,
            } => {
                w.u8(KIND_ALTER_TOPIC_CONFIGS);
                w.bytes(name.as_bytes());
                w.u32(set.len() as u32);
                for (key, value) in set {
                    w.bytes(key.as_bytes());
                    w.bytes(value.as_bytes());
                }
                w.u32(remove.len() as u32);
                for key in remove {
                    w.bytes(key.as_bytes());
                }
                w.u8(u8::from(*replace));
            }
        }
        w.bytes
    }

    /// Decodes bytes written by [`MetadataCommand::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown metadata command version"));
        }
        let string = |r: &mut Reader<'_>| -> Result<String, DecodeError> {
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("name is not UTF-8"))
        };
        let kind = r.u8()?;
        let command = match kind {
            KIND_CREATE_TOPIC | KIND_CREATE_TOPIC_ASSIGNED => {
                let name = string(&mut r)?;
                let partitions = r.u32()?;
                let replication_factor = u16::try_from(r.u32()?)
                    .map_err(|_| DecodeError("replication factor out of range"))?;
                let count = r.u32()?;
                let mut configs = BTreeMap::new();
                for _ in 0..count {
                    let key = string(&mut r)?;
                    let value = string(&mut r)?;
                    configs.insert(key, value);
                }
                let assignment = if kind == KIND_CREATE_TOPIC_ASSIGNED {
                    decode_assignment(&mut r)?
                } else {
                    Vec::new()
                };
                Self::CreateTopic(CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                    assignment,
                })
            }
            KIND_DELETE_TOPIC => Self::DeleteTopic {
                name: string(&mut r)?,
            },
            KIND_CREATE_PARTITIONS | KIND_CREATE_PARTITIONS_ASSIGNED => Self::CreatePartitions {
                name: string(&mut r)?,
                count: r.u32()?,
                assignment: if kind == KIND_CREATE_PARTITIONS_ASSIGNED {
                    decode_assignment(&mut r)?
                } else {
                    Vec::new()
                },
            },
            KIND_ALTER_TOPIC_CONFIGS => {
                let name = string(&mut r)?;
                let mut set = BTreeMap::new();
                for _ in 0..r.u32()? {
                    let key = string(&mut r)?;
                    set.insert(key, string(&mut r)?);
                }
                let mut remove = Vec::new();
                for _ in 0..r.u32()? {
                    remove.push(string(&mut r)?);
                }
                let replace = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("bad replace flag")),
                };
                Self::AlterTopicConfigs {
                    name,
                    set,
                    remove,
                    replace,
                }
            }
            _ => return Err(DecodeError("unknown metadata command")),
        };
        r.finish()?;
        Ok(command)
    }
}

/// Writes a manual replica assignment: the count of partitions, then each one's replicas.
fn encode_assignment(w: &mut Writer, assignment: &[Vec<NodeId>]) {
    w.u32(assignment.len() as u32);
    for replicas in assignment {
        w.u32(replicas.len() as u32);
        for replica in replicas {
            w.u64(replica.0);
        }
    }
}

/// Reads what [`encode_assignment`] wrote; never empty (an empty one is not written). Counts
/// are bounded by the bytes left, so hostile bytes cannot make it allocate without bound.
fn decode_assignment(r: &mut Reader<'_>) -> Result<Vec<Vec<NodeId>>, DecodeError> {
    let count = r.u32()?;
    if count == 0 || count > PARTITIONS_PER_TOPIC_MAX {
        return Err(DecodeError("bad replica assignment count"));
    }
    let mut assignment = Vec::new();
    for _ in 0..count {
        let replicas = r.u32()?;
        if replicas == 0 || replicas > u32::from(u16::MAX) {
            return Err(DecodeError("bad replica count"));
        }
        let mut list = Vec::new();
        for _ in 0..replicas {
            list.push(NodeId(r.u64()?));
        }
        assignment.push(list);
    }
    Ok(assignment)
}
