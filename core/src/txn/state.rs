//! The replicated state of one `__transaction_state` partition: [`TxnCommand`], the entries of
//! its log, and [`TxnStored`], which applying them builds on every replica (encoded, it is the
//! snapshot of the partition's log).
//!
//! As in Kafka's `__transaction_state`, an entry is the whole metadata of one transactional id
//! ([`TxnMeta`]), so the log compacts by key and the snapshot is the latest of each.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{ProducerEpoch, ProducerId};

/// Where a transactional id's transaction stands (Kafka's `TransactionState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// A transaction is open: partitions have been added to it.
    Ongoing,
    /// An EndTxn with `committed` was taken; markers are being written.
    PrepareCommit,
    /// An EndTxn without `committed`, a timeout or a new instance aborts; markers are being
    /// written.
    PrepareAbort,
    /// Every partition has its COMMIT marker.
    CompleteCommit,
    /// Every partition has its ABORT marker.
    CompleteAbort,
}

impl TxnState {
    /// Every state, in Kafka's order.
    pub const ALL: [Self; 6] = [
        Self::Empty,
        Self::Ongoing,
        Self::PrepareCommit,
        Self::PrepareAbort,
        Self::CompleteCommit,
        Self::CompleteAbort,
    ];

    /// Kafka's name of the state (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }

    /// Whether no transaction is open or ending: a new one may begin, or an InitProducerId
    /// bump the epoch at once.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Empty | Self::CompleteCommit | Self::CompleteAbort
        )
    }

    fn code(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).expect("listed") as u8
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .ok_or(DecodeError("unknown transaction state"))
    }
}

/// What the coordinator keeps of one transactional id (Kafka's `TransactionMetadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMeta {
    /// The producer id of its current instance.
    pub producer_id: ProducerId,
    /// The current instance's epoch: a request with an older one is fenced.
    pub epoch: ProducerEpoch,
    /// The producer id and epoch before the last InitProducerId: an instance that retries that
    /// InitProducerId (KIP-360, with the id and epoch it had) gets the current ones back.
    pub last: Option<(ProducerId, ProducerEpoch)>,
    /// The instance's `transaction.timeout.ms`.
    pub timeout_ms: u32,
    /// Where its transaction stands.
    pub state: TxnState,
    /// The partitions of the open transaction, (topic, partition), sorted.
    pub partitions: Vec<(String, i32)>,
    /// When the open transaction began (the coordinator's wall clock, Unix ms), or -1.
    pub start_ms: i64,
    /// When this metadata was stored (the coordinator's wall clock, Unix ms).
    pub updated_ms: i64,
}

/// One entry of a `__transaction_state` partition's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnCommand {
    /// A transactional id's metadata, replacing what was stored for it.
    Put {
        /// The transactional id.
        transactional_id: String,
        /// Its metadata.
        meta: TxnMeta,
    },
    /// A transactional id expired (`transactional.id.expiration.ms` without a request): its
    /// metadata is removed (Kafka's tombstone).
    Remove {
        /// The transactional id.
        transactional_id: String,
    },
}

const VERSION: u8 = 1;
const PUT: u8 = 1;
const REMOVE: u8 = 2;

impl TxnCommand {
    /// Encodes the command for the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        match self {
            Self::Put {
                transactional_id,
                meta,
            } => {
                w.u8(PUT);
                w.bytes(transactional_id.as_bytes());
                w.i64(meta.producer_id.0);
                w.i16(meta.epoch.0);
                match meta.last {
                    Some((id, epoch)) => {
                        w.u8(1);
                        w.i64(id.0);
                        w.i16(epoch.0);
                    }
                    None => w.u8(0),
                }
                w.u32(meta.timeout_ms);
                w.u8(meta.state.code());
                w.u32(meta.partitions.len() as u32);
                for (topic, partition) in &meta.partitions {
                    w.bytes(topic.as_bytes());
                    w.i32(*partition);
                }
                w.i64(meta.start_ms);
                w.i64(meta.updated_ms);
            }
            Self::Remove { transactional_id } => {
                w.u8(REMOVE);
                w.bytes(transactional_id.as_bytes());
            }
        }
        w.bytes
    }

    /// The transactional id the command is about.
    pub fn transactional_id(&self) -> &str {
        match self {
            Self::Put {
                transactional_id, ..
            }
            | Self::Remove { transactional_id } => transactional_id,
        }
    }

    /// Decodes a command written by [`TxnCommand::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown transaction command version"));
        }
        let command = match r.u8()? {
            PUT => {
                let transactional_id = string(&mut r)?;
                let producer_id = ProducerId(r.i64()?);
                let epoch = ProducerEpoch(r.i16()?);
                let last = match r.u8()? {
                    0 => None,
                    1 => Some((ProducerId(r.i64()?), ProducerEpoch(r.i16()?))),
                    _ => return Err(DecodeError("bad option tag")),
                };
                let timeout_ms = r.u32()?;
                let state = TxnState::from_code(r.u8()?)?;
                let count = r.u32()?;
                let mut partitions = Vec::new();
                for _ in 0..count {
                    let topic = string(&mut r)?;
                    partitions.push((topic, r.i32()?));
                }
                if producer_id.0 < 0 || epoch.0 < 0 {
                    return Err(DecodeError("a stored producer id or epoch is negative"));
                }
                Self::Put {
                    transactional_id,
                    meta: TxnMeta {
                        producer_id,
                        epoch,
                        last,
                        timeout_ms,
                        state,
                        partitions,
                        start_ms: r.i64()?,
                        updated_ms: r.i64()?,
                    },
                }
            }
            REMOVE => Self::Remove {
                transactional_id: string(&mut r)?,
            },
            _ => return Err(DecodeError("unknown transaction command")),
        };
        r.finish()?;
        Ok(command)
    }
}

fn string(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
}

/// The applied state of one `__transaction_state` partition: the same on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnStored {
    /// Each transactional id's metadata.
    pub ids: BTreeMap<String, TxnMeta>,
    /// The next counter of this partition's producer id range (see `ProducerIds`): above every
    /// producer id stored here, so an id is never handed out twice.
    pub next_counter: u64,
}

impl TxnStored {
    /// Applies one command. `counter_of` maps a producer id of this partition's range to its
    /// counter (`None` for an id outside it).
    pub fn apply(&mut self, command: &TxnCommand, counter_of: impl Fn(ProducerId) -> Option<u64>) {
        match command {
            TxnCommand::Put {
                transactional_id,
                meta,
            } => {
                if let Some(counter) = counter_of(meta.producer_id) {
                    self.next_counter = self.next_counter.max(counter + 1);
                }
                self.ids.insert(transactional_id.clone(), meta.clone());
            }
            TxnCommand::Remove { transactional_id } => {
                self.ids.remove(transactional_id);
            }
        }
    }

    /// Bytes the encoded state holds besides its ids' entries.
    pub const HEADER_BYTES: usize = 1 + 8 + 4;

    /// Bytes one transactional id's entry takes in the encoded state.
    pub fn entry_bytes(transactional_id: &str, meta: &TxnMeta) -> usize {
        let command = TxnCommand::Put {
            transactional_id: transactional_id.to_string(),
            meta: meta.clone(),
        };
        4 + command.encode().len()
    }

    /// Bytes of the encoded state (what [`TxnStored::encode`] returns), summed entry by entry.
    pub fn encoded_len(&self) -> usize {
        let entries: usize = self.ids.iter().map(|(i, m)| Self::entry_bytes(i, m)).sum();
        Self::HEADER_BYTES + entries
    }

    /// Encodes the state: the counter, then each transactional id's latest `Put`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u64(self.next_counter);
        w.u32(self.ids.len() as u32);
        for (transactional_id, meta) in &self.ids {
            let command = TxnCommand::Put {
                transactional_id: transactional_id.clone(),
                meta: meta.clone(),
            };
            w.bytes(&command.encode());
        }
        w.bytes
    }

    /// Decodes a state written by [`TxnStored::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown transaction state version"));
        }
        let next_counter = r.u64()?;
        if next_counter >= 1 << 40 {
            return Err(DecodeError("a producer id counter past its 40 bits"));
        }
        let mut state = Self {
            next_counter,
            ..Self::default()
        };
        for _ in 0..r.u32()? {
            let TxnCommand::Put {
                transactional_id,
                meta,
            } = TxnCommand::decode(r.bytes()?)?
            else {
                return Err(DecodeError("a stored transactional id without metadata"));
            };
            state.ids.insert(transactional_id, meta);
        }
        r.finish()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TxnMeta {
        TxnMeta {
            producer_id: ProducerId((1 << 62) | 7),
            epoch: ProducerEpoch(3),
            last: Some((ProducerId((1 << 62) | 7), ProducerEpoch(2))),
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: vec![("a".into(), 0), ("b".into(), 2)],
            start_ms: 1_000,
            updated_ms: 2_000,
        }
    }

    #[test]
    fn commands_and_states_round_trip_and_refuse_truncation() {
        for state in TxnState::ALL {
            let command = TxnCommand::Put {
                transactional_id: "t".into(),
                meta: TxnMeta { state, ..meta() },
            };
            let bytes = command.encode();
            assert_eq!(TxnCommand::decode(&bytes), Ok(command));
            assert!(TxnCommand::decode(&bytes[..bytes.len() - 1]).is_err());
        }
        let remove = TxnCommand::Remove {
            transactional_id: "t".into(),
        };
        assert_eq!(TxnCommand::decode(&remove.encode()), Ok(remove));
        let mut stored = TxnStored::default();
        stored.apply(
            &TxnCommand::Put {
                transactional_id: "t".into(),
                meta: meta(),
            },
            |id| Some((id.0 & 0xff) as u64),
        );
        assert_eq!(stored.next_counter, 8);
        assert_eq!(stored.encode().len(), stored.encoded_len());
        assert_eq!(TxnStored::decode(&stored.encode()), Ok(stored));
    }
}
