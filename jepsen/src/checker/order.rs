//! Each partition's order: every offset known to hold a record, from the final read,
//! acknowledged sends, the readers' polls and the group's reads, with the value known there.
//! An offset's *dense index* is its rank among them (Jepsen's version order without the holes
//! that transaction markers and lost records leave), so that "the next record" means the next
//! known one, whatever the offsets between.

use std::collections::BTreeMap;

use crate::history::{Delivery, History, Outcome};

/// One partition's known offsets, in order, each with the value known there.
#[derive(Debug, Default)]
pub(crate) struct Order {
    /// Known offsets, ascending.
    offsets: Vec<i64>,
    /// The value at each known offset: the final read's, else an acknowledged send's, else
    /// the first poll's that returned it.
    values: Vec<u64>,
}

/// Every partition's order.
#[derive(Debug, Default)]
pub(crate) struct Orders {
    partitions: BTreeMap<i32, Order>,
}

impl Orders {
    /// The orders `history` shows.
    pub fn of(history: &History) -> Self {
        // (partition, offset) → (priority, value): lower priority wins.
        let mut known: BTreeMap<(i32, i64), (u8, u64)> = BTreeMap::new();
        let mut note = |partition: i32, offset: i64, priority: u8, value: u64| {
            let entry = known
                .entry((partition, offset))
                .or_insert((priority, value));
            if priority < entry.0 {
                *entry = (priority, value);
            }
        };
        for (&partition, reads) in &history.reads {
            for &(offset, value) in reads {
                note(partition, offset, 0, value);
            }
        }
        for send in history.sends.values() {
            if let Outcome::Ok { partition, offset } = send.outcome {
                // An acks=1 acknowledgement may name an offset its leader lost.
                if offset >= 0 && send.kind != Delivery::LeaderOnly {
                    note(partition, offset, 1, send.value);
                }
            }
        }
        for poll in &history.polls {
            for &(partition, offset, value) in &poll.records {
                note(partition, offset, 2, value);
            }
        }
        for d in &history.group.deliveries {
            note(d.partition, d.offset, 3, d.value);
        }
        let mut partitions: BTreeMap<i32, Order> = BTreeMap::new();
        for ((partition, offset), (_, value)) in known {
            let order = partitions.entry(partition).or_default();
            order.offsets.push(offset);
            order.values.push(value);
        }
        Self { partitions }
    }

    /// The dense index of `offset` in `partition`'s order (`None` if nothing is known there).
    pub fn index(&self, partition: i32, offset: i64) -> Option<usize> {
        self.partitions
            .get(&partition)?
            .offsets
            .binary_search(&offset)
            .ok()
    }

    /// The offset at dense index `index` of `partition`'s order.
    pub fn offset(&self, partition: i32, index: usize) -> Option<i64> {
        self.partitions.get(&partition)?.offsets.get(index).copied()
    }

    /// The partitions with known records.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    /// The values of `partition`'s known records, by dense index.
    pub fn values(&self, partition: i32) -> &[u64] {
        self.partitions
            .get(&partition)
            .map_or(&[][..], |o| o.values.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Poll, SendOp};

    #[test]
    fn offsets_are_ranked_without_their_holes() {
        // Offsets 0, 2 (a marker at 1), 5 by a poll; 3 acknowledged; 4 acknowledged acks=1.
        let mut h = History::default();
        h.reads.insert(0, vec![(0, 10), (2, 12)]);
        for (value, offset, kind) in [(13, 3, Delivery::Idempotent), (14, 4, Delivery::LeaderOnly)]
        {
            h.sends.insert(
                value,
                SendOp {
                    producer: 0,
                    kind,
                    key: 0,
                    value,
                    invoked_ms: 0,
                    outcome: Outcome::Ok {
                        partition: 0,
                        offset,
                    },
                    completed_ms: 1,
                    op: None,
                },
            );
        }
        h.polls.push(Poll {
            reader: 0,
            invoked_ms: None,
            at_ms: 2,
            records: vec![(0, 5, 15), (0, 2, 99)],
            resets: Vec::new(),
            repositioned: false,
        });
        let orders = Orders::of(&h);
        let ranks: Vec<Option<usize>> = (0..7).map(|o| orders.index(0, o)).collect();
        assert_eq!(
            ranks,
            vec![Some(0), None, Some(1), Some(2), None, Some(3), None]
        );
        assert_eq!(
            orders.values(0),
            [10, 12, 13, 15],
            "the final read's value wins"
        );
        assert!(orders.values(1).is_empty());
        assert_eq!(orders.index(1, 0), None);
    }
}
