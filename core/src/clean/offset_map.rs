//! The log cleaner's offset map: each key's latest offset over the dirty part of a log, in a
//! fixed amount of memory (Kafka's `SkimpyOffsetMap`).
//!
//! A key is stored as a 128-bit hash, not as itself, so the memory is fixed whatever the keys
//! are: `bytes / 24` slots (16 bytes of hash, 8 of offset), allocated once, open addressing
//! with linear probing, at most `LOAD_FACTOR` of them used (Kafka's
//! `log.cleaner.io.buffer.load.factor`, 0.9) so a probe stays short. The hash is SHA-256 of
//! the key cut to 128 bits (Kafka uses MD5): a collision would make the cleaner drop the
//! latest record of one key for another's, so the hash must be one a producer cannot aim at;
//! SHA-256 is, and `sha2` is already in the tree (the peer handshake's HMAC), so the core
//! takes no new crate for it. A non-cryptographic hash (xxh3) would be faster, but anyone
//! who can produce to the topic could then craft colliding keys.

use sha2::{Digest, Sha256};

use crate::ids::Offset;

/// Bytes each slot costs: the key's hash and its latest offset.
pub const SLOT_BYTES: usize = 16 + 8;

/// The most of the slots used: past it the map is full.
const LOAD_FACTOR_PERCENT: usize = 90;

/// A key's 128-bit hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash([u8; 16]);

impl KeyHash {
    /// SHA-256 of `key`, its first 16 bytes.
    pub fn of(key: &[u8]) -> Self {
        let digest = Sha256::digest(key);
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&digest[..16]);
        Self(hash)
    }

    /// Where a probe for it starts among `slots` slots.
    fn start(&self, slots: usize) -> usize {
        let word = u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"));
        (word % slots as u64) as usize
    }
}

/// Each key's latest offset, keys by their hash, in a fixed number of slots.
#[derive(Clone, Debug)]
pub struct OffsetMap {
    hashes: Vec<KeyHash>,
    /// A slot's offset, or `EMPTY`.
    offsets: Vec<i64>,
    /// Slots holding a key.
    used: usize,
    /// The most slots that may hold a key.
    used_max: usize,
    /// The largest offset put.
    latest: Option<Offset>,
}

const EMPTY: i64 = -1;

impl OffsetMap {
    /// A map in `bytes` of memory (Kafka's `log.cleaner.dedupe.buffer.size`): at least one
    /// usable slot.
    pub fn new(bytes: usize) -> Self {
        let slots = (bytes / SLOT_BYTES).max(2);
        let used_max = (slots * LOAD_FACTOR_PERCENT / 100).max(1);
        let map = Self {
            hashes: vec![KeyHash([0; 16]); slots],
            offsets: vec![EMPTY; slots],
            used: 0,
            used_max,
            latest: None,
        };
        map.invariants();
        map
    }

    /// How many more keys it takes at least: a batch of `records` records fits if this is at
    /// least `records` (each record may be a new key).
    pub fn room(&self) -> usize {
        self.used_max - self.used
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The largest offset put, if any.
    pub fn latest_offset(&self) -> Option<Offset> {
        self.latest
    }

    /// Records `offset` as `key`'s latest. Offsets are put in increasing order (a log is
    /// read forward). Returns false, changing nothing, if the key is new and the map full.
    pub fn put(&mut self, key: &[u8], offset: Offset) -> bool {
        assert!(offset.0 >= 0);
        assert!(
            self.latest.is_none_or(|latest| offset > latest),
            "offsets are put in order"
        );
        let hash = KeyHash::of(key);
        let slot = self.probe(&hash);
        if self.offsets[slot] == EMPTY {
            if self.used == self.used_max {
                return false;
            }
            self.used += 1;
            self.hashes[slot] = hash;
        }
        self.offsets[slot] = offset.0;
        self.latest = Some(offset);
        true
    }

    /// `key`'s latest offset, if the map holds the key.
    pub fn get(&self, key: &[u8]) -> Option<Offset> {
        let slot = self.probe(&KeyHash::of(key));
        (self.offsets[slot] != EMPTY).then(|| Offset(self.offsets[slot]))
    }

    /// The slot holding `hash`, or the empty one where it would go. There is always an empty
    /// slot (`used_max` is below the slots), so the probe ends.
    fn probe(&self, hash: &KeyHash) -> usize {
        let slots = self.offsets.len();
        let mut slot = hash.start(slots);
        loop {
            if self.offsets[slot] == EMPTY || self.hashes[slot] == *hash {
                return slot;
            }
            slot = (slot + 1) % slots;
        }
    }

    /// Forgets every key, keeping the memory.
    pub fn clear(&mut self) {
        self.offsets.fill(EMPTY);
        self.used = 0;
        self.latest = None;
    }

    /// The counts agree with the slots, and an empty slot always remains.
    pub fn invariants(&self) {
        assert_eq!(self.hashes.len(), self.offsets.len());
        assert!(self.used_max < self.offsets.len());
        assert!(self.used <= self.used_max);
        debug_assert_eq!(
            self.offsets.iter().filter(|o| **o != EMPTY).count(),
            self.used
        );
        if let Some(latest) = self.latest {
            debug_assert!(self.offsets.iter().all(|o| *o <= latest.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::test_support::fixed_seed_config;

    proptest! {
        #![proptest_config(fixed_seed_config(256))]

        /// Against a model: every key put while there was room maps to its latest offset, a
        /// new key past the room is refused and changes nothing, and keys never put are
        /// absent.
        #[test]
        fn holds_each_keys_latest_offset(keys in prop::collection::vec(0u16..64, 1..200), bytes in 24usize..2_000) {
            let mut map = OffsetMap::new(bytes);
            let mut model = BTreeMap::new();
            for (offset, key) in keys.iter().enumerate() {
                let key = key.to_be_bytes();
                let fits = model.contains_key(&key) || model.len() < map.used_max;
                prop_assert_eq!(map.room(), map.used_max - model.len());
                prop_assert_eq!(map.put(&key, Offset(offset as i64)), fits);
                if fits {
                    model.insert(key, Offset(offset as i64));
                }
                map.invariants();
            }
            prop_assert_eq!(map.len(), model.len());
            for key in 0u16..70 {
                let key = key.to_be_bytes();
                prop_assert_eq!(map.get(&key), model.get(&key).copied());
            }
            map.clear();
            prop_assert!(map.is_empty());
            prop_assert_eq!(map.get(&keys[0].to_be_bytes()), None);
        }
    }

    #[test]
    fn its_memory_is_what_it_is_given() {
        let map = OffsetMap::new(32 << 20);
        assert_eq!(map.offsets.len(), (32 << 20) / SLOT_BYTES);
        assert_eq!(map.room(), map.offsets.len() * 9 / 10);
        // Distinct keys hash apart (a 128-bit hash: no collision among these).
        let hashes: std::collections::BTreeSet<KeyHash> = (0u32..10_000)
            .map(|k| KeyHash::of(&k.to_le_bytes()))
            .collect();
        assert_eq!(hashes.len(), 10_000);
    }
}
