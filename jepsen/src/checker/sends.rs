//! The order of each producer's sends in a partition: between operations (nonmonotonic
//! send, for idempotent producers, whose values grow in send order) and within one operation
//! of several sends (int-nonmonotonic-send, and int-send-skip as information).

use std::collections::BTreeMap;

use super::order::Orders;
use super::{Anomaly, Verdict, EXAMPLES};
use crate::history::{Delivery, History, Outcome, SendOp};

/// Where `send`'s record is: where the final read first read it, else where it was
/// acknowledged (unless acks=1, whose acknowledgement may name an offset its leader lost).
fn position(send: &SendOp, read_at: &BTreeMap<u64, Vec<(i32, i64)>>) -> Option<(i32, i64)> {
    if let Some(&first) = read_at.get(&send.value).and_then(|r| r.first()) {
        return Some(first);
    }
    match send.outcome {
        Outcome::Ok { partition, offset } if offset >= 0 && send.kind != Delivery::LeaderOnly => {
            Some((partition, offset))
        }
        _ => None,
    }
}

/// Checks that each producer's records of a partition are in send order.
pub(super) fn check_send_order(
    history: &History,
    orders: &Orders,
    read_at: &BTreeMap<u64, Vec<(i32, i64)>>,
    verdict: &mut Verdict,
) {
    // Between operations: an idempotent producer's records of one partition are in send order
    // (values grow in send order). Two sends of one operation are the next check's.
    let mut last: BTreeMap<(usize, i32), (u64, i64, Option<u64>)> = BTreeMap::new();
    for send in history.sends.values() {
        if send.kind != Delivery::Idempotent {
            continue;
        }
        let Some(&(partition, offset)) = read_at.get(&send.value).and_then(|r| r.first()) else {
            continue;
        };
        if let Some((previous, previous_offset, previous_op)) =
            last.insert((send.producer, partition), (send.value, offset, send.op))
        {
            let same_op = send.op.is_some() && previous_op == send.op;
            if previous_offset > offset && !same_op {
                verdict.report(Anomaly::NonmonotonicSend, || {
                    format!(
                        "producer {} sent {previous} before {}, read at {partition}@{previous_offset} and @{offset}",
                        send.producer, send.value
                    )
                });
            }
        }
    }
    // Within an operation: its sends, in send order (invocation, then value), land in each
    // partition one after the other; other records between them are allowed (int-send-skip).
    let mut ops: BTreeMap<(usize, u64), Vec<&SendOp>> = BTreeMap::new();
    for send in history.sends.values() {
        if let Some(op) = send.op {
            ops.entry((send.producer, op)).or_default().push(send);
        }
    }
    for ((producer, op), mut sends) in ops {
        sends.sort_by_key(|s| (s.invoked_ms, s.value));
        let mut last: BTreeMap<i32, (u64, i64, usize)> = BTreeMap::new();
        for send in sends {
            let Some((partition, offset)) = position(send, read_at) else {
                continue;
            };
            let Some(index) = orders.index(partition, offset) else {
                continue;
            };
            if let Some((previous, previous_offset, previous_index)) =
                last.insert(partition, (send.value, offset, index))
            {
                if index <= previous_index {
                    verdict.report(Anomaly::IntNonmonotonicSend, || {
                        format!(
                            "producer {producer}, operation {op}: sent {previous} before {}, at {partition}@{previous_offset} and @{offset}",
                            send.value
                        )
                    });
                } else if index > previous_index + 1 {
                    verdict.int_send_skips += 1;
                    if verdict.int_send_skip_examples.len() < EXAMPLES {
                        verdict.int_send_skip_examples.push(format!(
                            "producer {producer}, operation {op}: {previous} at {partition}@{previous_offset}, {} at @{offset}, {} records between",
                            send.value,
                            index - previous_index - 1
                        ));
                    }
                }
            }
        }
    }
}
