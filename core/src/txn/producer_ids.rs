//! The producer ids of the transaction coordinators: each `__transaction_state` partition hands
//! out its own range, above the ids nodes hand out to idempotent producers.

use crate::ids::ProducerId;

/// The producer ids of one `__transaction_state` partition: `1 << 62 | index << 40 | counter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIds {
    /// The partition's index in the topic.
    pub index: u32,
}

impl ProducerIds {
    /// The bit every transactional producer id has (nodes hand out ids below it).
    pub const BIT: i64 = 1 << 62;
    /// Counters have 40 bits.
    const COUNTER_BITS: u32 = 40;
    /// Indexes have 21 bits (62 less the counter's 40, less one).
    pub const INDEX_MAX: u32 = (1 << 21) - 1;

    /// The range of the partition at `index`.
    pub fn new(index: u32) -> Self {
        assert!(index <= Self::INDEX_MAX);
        Self { index }
    }

    /// The id with `counter`.
    pub fn id(self, counter: u64) -> ProducerId {
        assert!(
            counter < 1 << Self::COUNTER_BITS,
            "producer id range exhausted"
        );
        ProducerId(Self::BIT | (i64::from(self.index) << Self::COUNTER_BITS) | counter as i64)
    }

    /// The counter of `id`, if it is of this range.
    pub fn counter(self, id: ProducerId) -> Option<u64> {
        let own = id.0 >= 0
            && id.0 & Self::BIT != 0
            && (id.0 & !Self::BIT) >> Self::COUNTER_BITS == i64::from(self.index);
        own.then_some((id.0 & ((1 << Self::COUNTER_BITS) - 1)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_id_ranges_are_disjoint_and_above_node_ids() {
        let a = ProducerIds::new(0);
        let b = ProducerIds::new(ProducerIds::INDEX_MAX);
        for counter in [0, 1, (1 << 40) - 1] {
            assert_eq!(a.counter(a.id(counter)), Some(counter));
            assert_eq!(b.counter(b.id(counter)), Some(counter));
            assert_eq!(a.counter(b.id(counter)), None);
            assert_eq!(b.counter(a.id(counter)), None);
            assert!(a.id(counter).0 >= ProducerIds::BIT && b.id(counter).0 > 0);
        }
        // Nodes hand out `node_id << 40 | counter` with 22-bit node ids: below bit 62.
        let node_max = ((1_i64 << 22) - 1) << 40 | ((1 << 40) - 1);
        assert!(node_max < ProducerIds::BIT);
        assert_eq!(a.counter(ProducerId(node_max)), None);
        assert_eq!(a.counter(ProducerId(-1)), None);
    }
}
