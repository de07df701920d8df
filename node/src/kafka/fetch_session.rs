//! Incremental fetch sessions (KIP-227): a consumer of many partitions names them once, then
//! each Fetch carries only what changed, and each answer only the partitions with something
//! new (records, an error, or a moved high watermark, last stable offset or log start).
//!
//! A session lives on the node that made it, shared by every connection (as Kafka's are);
//! the cache holds at most `max_incremental_fetch_session_cache_slots` of them. When it is
//! full, a new session takes the place of the least recently used one if that one has been
//! idle for `EVICTION_IDLE` (Kafka's `min.incremental.fetch.session.eviction.ms`); otherwise
//! the fetch is answered without a session (session id 0), which clients accept: they go on
//! with full fetches.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::indexmap::IndexMap;
use tokio::time::Instant;

/// How long a session must be idle before a new one may take its place in a full cache
/// (Kafka's `min.incremental.fetch.session.eviction.ms`).
pub const EVICTION_IDLE: Duration = Duration::from_secs(120);

/// A partition in a fetch: topic name and index.
pub type Key = (String, i32);

/// What the session knows of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Where the client reads next.
    pub fetch_offset: i64,
    /// The most bytes it takes from the partition in one answer.
    pub max_bytes: i32,
    /// The leader epoch it believes current (v9+; -1: no check), checked at every answer.
    pub current_leader_epoch: i32,
}

/// What an answer told the client of a partition; a partition is answered again only when
/// this changed (or it has records or an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Told {
    /// The high watermark.
    pub high_watermark: i64,
    /// The last stable offset.
    pub last_stable_offset: i64,
    /// The log start offset.
    pub log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    /// The partitions, in the order they were added (the order answers fill `max_bytes` in).
    partitions: IndexMap<Key, (Wanted, Option<Told>)>,
    last_used: Instant,
}

/// Why a request's session is refused (the response's top-level error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// FETCH_SESSION_ID_NOT_FOUND (70).
    NotFound,
    /// INVALID_FETCH_SESSION_EPOCH (71).
    InvalidEpoch,
}

impl SessionError {
    /// The Kafka error code.
    pub fn kafka_code(self) -> i16 {
        match self {
            Self::NotFound => 70,
            Self::InvalidEpoch => 71,
        }
    }
}

/// How one Fetch request uses sessions.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every partition the request names, answered in full; `create` asks for a new session
    /// holding them.
    Full {
        /// Whether to make a session of them.
        create: bool,
    },
    /// Session `id`'s partitions (updated by the request), answered incrementally.
    Incremental {
        /// The session.
        id: i32,
        /// Its partitions, in order, with what the session last told of each (`None`:
        /// nothing yet).
        partitions: Vec<(Key, Wanted, Option<Told>)>,
    },
}

/// The node's fetch sessions.
#[derive(Debug)]
pub struct FetchSessions {
    slots: usize,
    sessions: BTreeMap<i32, Session>,
    next: u32,
}

impl FetchSessions {
    /// A cache of at most `slots` sessions; `start` spreads session ids of different nodes
    /// and starts apart.
    pub fn new(slots: usize, start: u32) -> Self {
        Self {
            slots,
            sessions: BTreeMap::new(),
            next: start,
        }
    }

    /// How many sessions are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Reads a request's session fields and updates the session with its partitions
    /// (`added`, in request order) and `forgotten` ones.
    /// An incremental request is taken at once: the session moves to its next epoch, so a
    /// second request with the same epoch is refused, as Kafka refuses it.
    pub fn plan(
        &mut self,
        session_id: i32,
        epoch: i32,
        added: &[(Key, Wanted)],
        forgotten: &[Key],
        now: Instant,
    ) -> Result<Plan, SessionError> {
        match epoch {
            // A full fetch without a session, closing the one named, if any.
            -1 => {
                self.sessions.remove(&session_id);
                Ok(Plan::Full { create: false })
            }
            // A full fetch that opens a new session (closing the one named).
            0 => {
                self.sessions.remove(&session_id);
                Ok(Plan::Full { create: true })
            }
            epoch => {
                let session = self
                    .sessions
                    .get_mut(&session_id)
                    .ok_or(SessionError::NotFound)?;
                if epoch != session.epoch {
                    return Err(SessionError::InvalidEpoch);
                }
                // After i32::MAX comes 1 (0 opens a session, -1 closes one).
                session.epoch = epoch.checked_add(1).unwrap_or(1);
                session.last_used = now;
                for key in forgotten {
                    session.partitions.shift_remove(key);
                }
                for (key, wanted) in added {
                    match session.partitions.get_mut(key) {
                        Some(entry) => entry.0 = wanted.clone(),
                        None => {
                            session
                                .partitions
                                .insert(key.clone(), (wanted.clone(), None));
                        }
                    }
                }
                Ok(Plan::Incremental {
                    id: session_id,
                    partitions: session
                        .partitions
                        .iter()
                        .map(|(key, (wanted, told))| (key.clone(), wanted.clone(), *told))
                        .collect(),
                })
            }
        }
    }

    /// After an incremental answer: records what it told, and moves the partitions that
    /// returned records to the end of the session, so that the next answers fill their
    /// byte budget from the others first (as Kafka does; the order never changes otherwise,
    /// and the partitions after the budget would wait for good). `false` if the session is
    /// gone meanwhile (closed or evicted).
    pub fn answered(&mut self, id: i32, told: Vec<(Key, Told, bool)>, now: Instant) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        for (key, told, had_records) in told {
            if had_records {
                if let Some((wanted, _)) = session.partitions.shift_remove(&key) {
                    session.partitions.insert(key, (wanted, Some(told)));
                }
            } else if let Some(entry) = session.partitions.get_mut(&key) {
                entry.1 = Some(told);
            }
        }
        session.last_used = now;
        true
    }

    /// Makes a session of a full answer's partitions; its id, or 0 when the cache is full of
    /// sessions in use.
    pub fn create(&mut self, partitions: Vec<(Key, Wanted, Told)>, now: Instant) -> i32 {
        if self.slots == 0 {
            return 0;
        }
        if self.sessions.len() >= self.slots {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(id, s)| (s.last_used, **id))
                .map(|(id, s)| (*id, s.last_used))
                .expect("full, so not empty");
            if now.saturating_duration_since(oldest.1) < EVICTION_IDLE {
                return 0;
            }
            self.sessions.remove(&oldest.0);
        }
        let id = loop {
            self.next = self.next.wrapping_add(1);
            // A bijection of the counter, so ids do not look sequential; positive, not 0.
            let id = (self.next.wrapping_mul(0x9E37_79B1) & 0x7FFF_FFFF) as i32;
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(
            id,
            Session {
                epoch: 1,
                partitions: partitions
                    .into_iter()
                    .map(|(key, wanted, told)| (key, (wanted, Some(told))))
                    .collect(),
                last_used: now,
            },
        );
        self.invariants();
        id
    }

    /// Checks the cache's bound.
    pub fn invariants(&self) {
        assert!(self.sessions.len() <= self.slots, "the cache is bounded");
        assert!(!self.sessions.contains_key(&0), "0 means no session");
        assert!(
            self.sessions.values().all(|s| s.epoch > 0),
            "a live session's next epoch is positive"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> Key {
        ("t".into(), p)
    }

    fn wanted(offset: i64) -> Wanted {
        Wanted {
            current_leader_epoch: -1,
            fetch_offset: offset,
            max_bytes: 1 << 20,
        }
    }

    const TOLD: Told = Told {
        high_watermark: 5,
        last_stable_offset: 5,
        log_start_offset: 0,
    };

    #[test]
    fn a_session_follows_its_epochs_and_partitions() {
        let now = Instant::now();
        let mut cache = FetchSessions::new(2, 7);
        assert_eq!(
            cache.plan(0, 0, &[], &[], now),
            Ok(Plan::Full { create: true })
        );
        let id = cache.create(
            vec![(key(0), wanted(0), TOLD), (key(1), wanted(0), TOLD)],
            now,
        );
        assert!(id > 0);
        // Epoch 1 adds partition 2 and forgets 0; the order is kept.
        let plan = cache.plan(id, 1, &[(key(2), wanted(3))], &[key(0)], now);
        assert_eq!(
            plan,
            Ok(Plan::Incremental {
                id,
                partitions: vec![(key(1), wanted(0), Some(TOLD)), (key(2), wanted(3), None)]
            })
        );
        // Epoch 1 again, even before the answer: refused.
        assert_eq!(
            cache.plan(id, 1, &[], &[], now),
            Err(SessionError::InvalidEpoch)
        );
        // Partition 1 returned records: it moves behind partition 2.
        let newer = Told {
            high_watermark: 9,
            ..TOLD
        };
        assert!(cache.answered(id, vec![(key(1), newer, true), (key(2), TOLD, false)], now));
        assert_eq!(
            cache.plan(id, 2, &[], &[], now),
            Ok(Plan::Incremental {
                id,
                partitions: vec![
                    (key(2), wanted(3), Some(TOLD)),
                    (key(1), wanted(0), Some(newer))
                ]
            })
        );
        assert_eq!(
            cache.plan(id ^ 1, 3, &[], &[], now),
            Err(SessionError::NotFound)
        );
        // Epoch -1 closes it.
        assert_eq!(
            cache.plan(id, -1, &[], &[], now),
            Ok(Plan::Full { create: false })
        );
        assert!(cache.is_empty());
        cache.invariants();
    }

    #[test]
    fn a_full_cache_evicts_only_sessions_idle_long_enough() {
        let start = Instant::now();
        let mut cache = FetchSessions::new(2, 0);
        let first = cache.create(vec![(key(0), wanted(0), TOLD)], start);
        let second = cache.create(
            vec![(key(0), wanted(0), TOLD)],
            start + Duration::from_secs(1),
        );
        assert!(first > 0 && second > 0 && first != second);
        assert_eq!(
            cache.create(vec![], start + Duration::from_secs(60)),
            0,
            "both in use: no session"
        );
        let third = cache.create(vec![], start + EVICTION_IDLE + Duration::from_millis(1));
        assert!(third > 0);
        assert_eq!(
            cache.plan(first, 1, &[], &[], start),
            Err(SessionError::NotFound),
            "the least recently used one went"
        );
        assert!(matches!(
            cache.plan(second, 1, &[], &[], start),
            Ok(Plan::Incremental { .. })
        ));
        assert_eq!(cache.len(), 2);
        assert_eq!(FetchSessions::new(0, 0).create(vec![], start), 0);
    }
}
