//! The checker: each anomaly class with a count and up to a few examples.

use std::collections::BTreeMap;

use crate::history::{Delivery, History, Outcome};

/// Examples kept per anomaly class.
pub(crate) const EXAMPLES: usize = 3;

/// The kinds of anomaly the checker knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Anomaly {
    /// An acknowledged write (acks=all) is never read.
    LostWrite,
    /// A value is read where it was not acknowledged.
    OffsetMismatch,
    /// A value of an idempotent producer is read twice.
    Duplicate,
    /// A value whose send definitely failed is read.
    ReadOfFailedSend,
    /// A value nobody sent is read.
    Phantom,
    /// A send never resolved.
    UnresolvedSend,
    /// An idempotent producer's values are not in send order within a partition.
    NonmonotonicSend,
    /// One offset read with two values (during the run, or against the final log).
    InconsistentOffset,
    /// A reader skipped offsets, or a read was not dense.
    PollSkip,
    /// A reader went back to offsets it had read.
    NonmonotonicPoll,
    /// The final read never finished.
    Liveness,
    /// A consumer group's committed offset of a partition went back (in generation order).
    CommittedOffsetBackwards,
    /// One record was read by two members of a consumer group in the same generation.
    GroupDoubleDelivery,
    /// An acknowledged write (acks=all) was never read by any member of the consumer group.
    NeverDeliveredToGroup,
    /// The consumer group's members never read every acknowledged write.
    GroupLiveness,
    /// A log start offset went back: the final read began below an offset an acknowledged
    /// DeleteRecords moved it to, or a reader's reset went past where the final read began.
    LogStartWentBack,
    /// Records vanished above every log start offset a DeleteRecords call asked for (in a run
    /// without retention, nothing else may move it).
    LogStartUnasked,
}

impl Anomaly {
    /// The class's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::LostWrite => "lost acknowledged write",
            Self::OffsetMismatch => "acknowledged offset differs from the read",
            Self::Duplicate => "duplicate",
            Self::ReadOfFailedSend => "read of a definitely failed send",
            Self::Phantom => "phantom",
            Self::UnresolvedSend => "unresolved send",
            Self::NonmonotonicSend => "nonmonotonic send",
            Self::InconsistentOffset => "inconsistent offset",
            Self::PollSkip => "poll skip",
            Self::NonmonotonicPoll => "nonmonotonic poll",
            Self::Liveness => "liveness",
            Self::CommittedOffsetBackwards => "committed offset went backwards",
            Self::GroupDoubleDelivery => "record read by two members in one generation",
            Self::NeverDeliveredToGroup => "acknowledged write never read by the group",
            Self::GroupLiveness => "group liveness",
            Self::LogStartWentBack => "log start offset went back",
            Self::LogStartUnasked => "log start offset moved unasked",
        }
    }
}

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Each anomaly class found: its count and a few examples.
    pub anomalies: BTreeMap<Anomaly, (u64, Vec<String>)>,
    /// Sends invoked.
    pub sent: u64,
    /// Sends acknowledged.
    pub acknowledged: u64,
    /// Sends that definitely failed.
    pub failed: u64,
    /// Sends whose outcome is unknown.
    pub indeterminate: u64,
    /// Records in the final read.
    pub records_read: u64,
    /// Acknowledged acks=1 writes that were lost (allowed).
    pub lost_leader_only: u64,
    /// Acknowledged writes below the final read's log start offset, gone by DeleteRecords
    /// or retention (allowed).
    pub trimmed: u64,
}

impl Verdict {
    /// Whether nothing is wrong.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// One line per anomaly class: name, count, examples.
    pub fn lines(&self) -> Vec<String> {
        self.anomalies
            .iter()
            .map(|(class, (count, examples))| {
                format!("{}: {count} (e.g. {})", class.name(), examples.join("; "))
            })
            .collect()
    }

    fn report(&mut self, class: Anomaly, example: impl FnOnce() -> String) {
        let (count, examples) = self.anomalies.entry(class).or_default();
        *count += 1;
        if examples.len() < EXAMPLES {
            examples.push(example());
        }
    }
}

/// Checks the consumer group: one owner per record and generation, committed offsets that
/// never go back across generations, and every acknowledged write read by some member.
fn check_group(history: &History, verdict: &mut Verdict) {
    let group = &history.group;
    if !group.ran {
        return;
    }
    let mut owner: BTreeMap<(i32, i32, i64), usize> = BTreeMap::new();
    for d in &group.deliveries {
        if let Some(other) = owner.insert((d.generation, d.partition, d.offset), d.member) {
            if other != d.member {
                verdict.report(Anomaly::GroupDoubleDelivery, || {
                    format!(
                        "{}@{} (value {}) read by members {other} and {} in generation {}",
                        d.partition, d.offset, d.value, d.member, d.generation
                    )
                });
            }
        }
    }
    let mut commits: Vec<&crate::history::GroupCommit> = group.commits.iter().collect();
    commits.sort_by_key(|c| (c.partition, c.generation, c.at_ms));
    for pair in commits.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.partition == b.partition && b.offset < a.offset {
            verdict.report(Anomaly::CommittedOffsetBackwards, || {
                format!(
                    "partition {}: {} (member {}, generation {}) then {} (member {}, generation {})",
                    a.partition, a.offset, a.member, a.generation, b.offset, b.member, b.generation
                )
            });
        }
    }
    if !group.finished {
        verdict.report(Anomaly::GroupLiveness, || {
            format!(
                "the members read {} records and never caught up",
                group.deliveries.len()
            )
        });
        return;
    }
    let delivered: std::collections::BTreeSet<u64> =
        group.deliveries.iter().map(|d| d.value).collect();
    for send in history.sends.values() {
        let Outcome::Ok { partition, offset } = send.outcome else {
            continue;
        };
        if send.kind == Delivery::LeaderOnly {
            continue;
        }
        let start = history
            .group_starts
            .get(&partition)
            .copied()
            .unwrap_or(0)
            .max(start_of(history, partition));
        if offset < start {
            continue; // gone by DeleteRecords or retention before the group read it
        }
        if !delivered.contains(&send.value) {
            verdict.report(Anomaly::NeverDeliveredToGroup, || {
                format!(
                    "value {} acknowledged at {} ms",
                    send.value, send.completed_ms
                )
            });
        }
    }
}

/// Where the final read of `partition` began: its log start offset then.
fn start_of(history: &History, partition: i32) -> i64 {
    history.final_starts.get(&partition).copied().unwrap_or(0)
}

/// Checks log start offsets: they never go back below what DeleteRecords acknowledged or what
/// was seen earlier, and, without retention, they move only as far as DeleteRecords asked.
fn check_log_starts(history: &History, verdict: &mut Verdict) {
    if !history.finished {
        return;
    }
    // Per partition: the highest acknowledged log start, and the furthest any call may have
    // moved it.
    let mut acknowledged: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    let mut asked: BTreeMap<i32, i64> = BTreeMap::new();
    for trim in &history.trims {
        let furthest = match (trim.low_watermark, trim.offset) {
            (Some(low), offset) => {
                let entry = acknowledged.entry(trim.partition).or_insert((0, 0));
                if low > entry.0 {
                    *entry = (low, trim.completed_ms);
                }
                low.max(offset.unwrap_or(low))
            }
            // Unknown: it may have moved the log start as far as it asked.
            (None, offset) => offset.unwrap_or(i64::MAX),
        };
        let entry = asked.entry(trim.partition).or_insert(0);
        *entry = (*entry).max(furthest);
    }
    for (&partition, &start) in &history.final_starts {
        if let Some(&(low, at_ms)) = acknowledged.get(&partition) {
            if start < low {
                verdict.report(Anomaly::LogStartWentBack, || {
                    format!(
                        "partition {partition}: DeleteRecords acknowledged log start {low} at {at_ms} ms; the final read began at {start}"
                    )
                });
            }
        }
        if let Some(&later) = history.group_starts.get(&partition) {
            if later < start {
                verdict.report(Anomaly::LogStartWentBack, || {
                    format!("partition {partition}: the final read began at {start}, the log start was {later} later")
                });
            }
        }
        let furthest = asked.get(&partition).copied().unwrap_or(0);
        if !history.retention && start > furthest {
            verdict.report(Anomaly::LogStartUnasked, || {
                format!(
                    "partition {partition}: the final read began at {start}; DeleteRecords asked for at most {furthest}"
                )
            });
        }
    }
}

/// Checks `history` against what each producer promised.
pub fn check(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    check_group(history, &mut verdict);
    // Where each value was read in the final read.
    let mut read_at: BTreeMap<u64, Vec<(i32, i64)>> = BTreeMap::new();
    check_log_starts(history, &mut verdict);
    for (partition, reads) in &history.reads {
        let mut expected = start_of(history, *partition);
        let mut seen = BTreeMap::new();
        for (offset, value) in reads {
            verdict.records_read += 1;
            if let Some(other) = seen.insert(*offset, *value) {
                if other != *value {
                    verdict.report(Anomaly::InconsistentOffset, || {
                        format!("{partition}@{offset} read as {other} and as {value}")
                    });
                }
                continue;
            }
            if *offset != expected {
                verdict.report(Anomaly::PollSkip, || {
                    format!(
                        "final read of partition {partition}: offset {offset} after {}",
                        expected - 1
                    )
                });
            }
            expected = offset + 1;
            read_at
                .entry(*value)
                .or_default()
                .push((*partition, *offset));
        }
    }
    for send in history.sends.values() {
        verdict.sent += 1;
        let reads = read_at.get(&send.value).map_or(&[][..], Vec::as_slice);
        match &send.outcome {
            Outcome::Pending => verdict.report(Anomaly::UnresolvedSend, || {
                format!(
                    "value {} of producer {} never resolved",
                    send.value, send.producer
                )
            }),
            Outcome::Ok { partition, offset } => {
                verdict.acknowledged += 1;
                if *offset >= 0 && *offset < start_of(history, *partition) {
                    // Below the log start: gone by DeleteRecords or retention (whether it was
                    // allowed to move there is `check_log_starts`'s question).
                    verdict.trimmed += 1;
                } else if reads.is_empty() {
                    if send.kind == Delivery::LeaderOnly {
                        verdict.lost_leader_only += 1;
                    } else {
                        verdict.report(Anomaly::LostWrite, || {
                            format!(
                                "value {} acknowledged at {partition}@{offset} at {} ms",
                                send.value, send.completed_ms
                            )
                        });
                    }
                } else if !reads.contains(&(*partition, *offset)) {
                    if send.kind == Delivery::LeaderOnly {
                        // The acknowledged copy was lost with its leader; an earlier attempt's
                        // copy (a retry after no answer) survived elsewhere: allowed for acks=1.
                        verdict.lost_leader_only += 1;
                        continue;
                    }
                    verdict.report(Anomaly::OffsetMismatch, || {
                        format!(
                            "value {} acknowledged at {partition}@{offset}, read at {reads:?}",
                            send.value
                        )
                    });
                }
            }
            Outcome::Fail(why) => {
                verdict.failed += 1;
                if !reads.is_empty() {
                    verdict.report(Anomaly::ReadOfFailedSend, || {
                        format!("value {} failed ({why}), read at {reads:?}", send.value)
                    });
                }
            }
            Outcome::Info(_) => verdict.indeterminate += 1,
        }
        if reads.len() > 1 && send.kind == Delivery::Idempotent {
            verdict.report(Anomaly::Duplicate, || {
                format!(
                    "value {} of an idempotent producer read at {reads:?}",
                    send.value
                )
            });
        }
    }
    for value in read_at.keys() {
        if !history.sends.contains_key(value) {
            verdict.report(Anomaly::Phantom, || format!("value {value}"));
        }
    }
    // An idempotent producer's records of one partition are in send order (values grow in
    // send order).
    let mut last: BTreeMap<(usize, i32), (u64, i64)> = BTreeMap::new();
    for send in history.sends.values() {
        if send.kind != Delivery::Idempotent {
            continue;
        }
        let Some(&(partition, offset)) = read_at.get(&send.value).and_then(|r| r.first()) else {
            continue;
        };
        if let Some((previous, previous_offset)) =
            last.insert((send.producer, partition), (send.value, offset))
        {
            if previous_offset > offset {
                verdict.report(Anomaly::NonmonotonicSend, || {
                    format!(
                        "producer {} sent {previous} before {}, read at {partition}@{previous_offset} and @{offset}",
                        send.producer, send.value
                    )
                });
            }
        }
    }
    // Polls during the run: each reader moves through each partition one offset at a time, and
    // everything it read is in the final log at the same offset.
    let final_log: BTreeMap<(i32, i64), u64> = history
        .reads
        .iter()
        .flat_map(|(p, reads)| reads.iter().map(move |(o, v)| ((*p, *o), *v)))
        .collect();
    let mut next: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    let mut reset: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    for poll in &history.polls {
        for &(partition, from) in &poll.resets {
            reset.insert((poll.reader, partition), from);
        }
        for &(partition, offset, value) in &poll.records {
            let start = start_of(history, partition);
            if history.finished && offset >= start {
                match final_log.get(&(partition, offset)) {
                    Some(v) if *v == value => {}
                    Some(v) => verdict.report(Anomaly::InconsistentOffset, || {
                        format!(
                            "reader {} read {value} at {partition}@{offset} at {} ms; the final log has {v}",
                            poll.reader, poll.at_ms
                        )
                    }),
                    None => verdict.report(Anomaly::InconsistentOffset, || {
                        format!(
                            "reader {} read {value} at {partition}@{offset} at {} ms; the final log ends before it",
                            poll.reader, poll.at_ms
                        )
                    }),
                }
            }
            let expected = next.entry((poll.reader, partition)).or_insert(0);
            let previous = *expected - 1;
            let was_reset = reset.remove(&(poll.reader, partition)).is_some();
            if was_reset && offset > *expected {
                // Reset to the log start offset: it may lie ahead, never past where the
                // final read began (the log start only moves up).
                if history.finished && offset > start {
                    verdict.report(Anomaly::LogStartWentBack, || {
                        format!(
                            "reader {} reset from {partition}@{previous} to @{offset} at {} ms; the final read began at @{start}",
                            poll.reader, poll.at_ms
                        )
                    });
                }
            } else if offset > *expected {
                verdict.report(Anomaly::PollSkip, || {
                    format!(
                        "reader {} jumped from {partition}@{previous} to @{offset} at {} ms",
                        poll.reader, poll.at_ms
                    )
                });
            } else if offset < *expected {
                verdict.report(Anomaly::NonmonotonicPoll, || {
                    format!(
                        "reader {} went back from {partition}@{previous} to @{offset} at {} ms",
                        poll.reader, poll.at_ms
                    )
                });
            }
            *expected = offset + 1;
        }
    }
    if !history.finished {
        verdict.report(Anomaly::Liveness, || {
            "the client never finished its final read".into()
        });
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{GroupCommit, GroupDelivery, GroupHistory, Poll, SendOp, TrimOp};

    fn send(value: u64, kind: Delivery, outcome: Outcome) -> SendOp {
        SendOp {
            producer: 0,
            kind,
            key: 0,
            value,
            invoked_ms: 0,
            outcome,
            completed_ms: 1,
            op: None,
        }
    }

    fn ok(partition: i32, offset: i64) -> Outcome {
        Outcome::Ok { partition, offset }
    }

    fn history(sends: Vec<SendOp>, reads: Vec<(i64, u64)>) -> History {
        History {
            sends: sends.into_iter().map(|s| (s.value, s)).collect(),
            polls: Vec::new(),
            reads: BTreeMap::from([(0, reads)]),
            finished: true,
            ..History::default()
        }
    }

    fn delivery(member: usize, generation: i32, offset: i64, value: u64) -> GroupDelivery {
        GroupDelivery {
            member,
            generation,
            partition: 0,
            offset,
            value,
        }
    }

    fn commit(member: usize, generation: i32, offset: i64, at_ms: u64) -> GroupCommit {
        GroupCommit {
            member,
            generation,
            partition: 0,
            offset,
            at_ms,
        }
    }

    #[test]
    fn group_anomalies_are_found() {
        let sends = vec![
            send(1, Delivery::Idempotent, ok(0, 0)),
            send(2, Delivery::Idempotent, ok(0, 1)),
            send(3, Delivery::LeaderOnly, ok(0, 2)),
        ];
        let mut h = history(sends, vec![(0, 1), (1, 2), (2, 3)]);
        h.group = GroupHistory {
            ran: true,
            // Rereading after a rebalance is fine; two members in one generation are not.
            deliveries: vec![
                delivery(0, 1, 0, 1),
                delivery(1, 2, 0, 1),
                delivery(2, 2, 0, 1),
            ],
            commits: vec![
                commit(0, 1, 1, 10),
                commit(1, 2, 0, 20),
                commit(1, 2, 1, 30),
            ],
            finished: true,
        };
        let verdict = check(&h);
        assert_eq!(
            classes(&verdict),
            vec![
                Anomaly::CommittedOffsetBackwards,
                Anomaly::GroupDoubleDelivery,
                Anomaly::NeverDeliveredToGroup
            ],
            "{:?}",
            verdict.lines()
        );
        assert_eq!(
            verdict.anomalies[&Anomaly::NeverDeliveredToGroup].0,
            1,
            "acks=1 may be lost"
        );
        h.group.finished = false;
        assert!(classes(&check(&h)).contains(&Anomaly::GroupLiveness));
    }

    fn classes(verdict: &Verdict) -> Vec<Anomaly> {
        verdict.anomalies.keys().copied().collect()
    }

    #[test]
    fn a_clean_history_is_valid() {
        let h = history(
            vec![
                send(1, Delivery::Idempotent, ok(0, 0)),
                send(2, Delivery::Idempotent, ok(0, 1)),
                send(3, Delivery::AtLeastOnce, Outcome::Info("timeout".into())),
            ],
            vec![(0, 1), (1, 2)],
        );
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{:?}", verdict.lines());
        assert_eq!((verdict.acknowledged, verdict.indeterminate), (2, 1));
    }

    #[test]
    fn an_acks_1_write_may_survive_only_as_an_earlier_attempt() {
        // Acknowledged at 1 by a leader that then lost it; the first attempt (no answer,
        // retried) survived at 0. Found by the turmoil world, seed 20.
        let h = history(vec![send(7, Delivery::LeaderOnly, ok(0, 1))], vec![(0, 7)]);
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{:?}", verdict.lines());
        assert_eq!(verdict.lost_leader_only, 1);
        let h = history(vec![send(7, Delivery::AtLeastOnce, ok(0, 1))], vec![(0, 7)]);
        assert_eq!(classes(&check(&h)), vec![Anomaly::OffsetMismatch]);
    }

    #[test]
    fn each_anomaly_is_named() {
        let h = history(
            vec![
                send(1, Delivery::Idempotent, ok(0, 0)),
                send(2, Delivery::Idempotent, ok(0, 5)),
                send(3, Delivery::AtLeastOnce, ok(0, 9)),
                send(4, Delivery::Idempotent, Outcome::Fail("refused".into())),
                send(5, Delivery::LeaderOnly, ok(0, 7)),
                send(6, Delivery::Idempotent, Outcome::Pending),
            ],
            // 2 read twice and below 1; 4 failed yet read; 99 nobody sent; 3 never read.
            vec![(0, 2), (1, 1), (2, 2), (3, 4), (4, 99)],
        );
        let verdict = check(&h);
        assert_eq!(
            classes(&verdict),
            vec![
                Anomaly::LostWrite,
                Anomaly::OffsetMismatch,
                Anomaly::Duplicate,
                Anomaly::ReadOfFailedSend,
                Anomaly::Phantom,
                Anomaly::UnresolvedSend,
                Anomaly::NonmonotonicSend,
            ]
        );
        assert_eq!(
            verdict.lost_leader_only, 1,
            "a lost acks=1 write is allowed"
        );
        assert_eq!(verdict.anomalies[&Anomaly::OffsetMismatch].0, 2);
    }

    #[test]
    fn reads_during_the_run_must_agree_with_the_final_log_and_move_forward() {
        let mut h = history(
            vec![
                send(1, Delivery::Idempotent, ok(0, 0)),
                send(2, Delivery::Idempotent, ok(0, 1)),
            ],
            vec![(0, 1), (1, 2)],
        );
        h.polls = vec![
            Poll {
                invoked_ms: None,
                reader: 0,
                at_ms: 5,
                records: vec![(0, 0, 1), (0, 1, 7)],
                resets: Vec::new(),
            },
            Poll {
                invoked_ms: None,
                reader: 0,
                at_ms: 6,
                records: vec![(0, 0, 1)],
                resets: Vec::new(),
            },
            Poll {
                invoked_ms: None,
                reader: 1,
                at_ms: 6,
                records: vec![(0, 1, 2)],
                resets: Vec::new(),
            },
        ];
        let verdict = check(&h);
        assert_eq!(
            classes(&verdict),
            vec![
                Anomaly::InconsistentOffset,
                Anomaly::PollSkip,
                Anomaly::NonmonotonicPoll
            ]
        );
        h.finished = false;
        assert!(check(&h).anomalies.contains_key(&Anomaly::Liveness));
    }

    fn trim(offset: Option<i64>, low_watermark: Option<i64>) -> TrimOp {
        TrimOp {
            partition: 0,
            offset,
            invoked_ms: 1,
            completed_ms: 2,
            low_watermark,
        }
    }

    #[test]
    fn records_below_the_log_start_may_be_gone_and_only_there() {
        // Four writes; DeleteRecords moved the log start to 2; a reader read 0, was reset from
        // 1 (below the log start) to 2, and the final read holds 2 and 3.
        let sends = vec![
            send(1, Delivery::Idempotent, ok(0, 0)),
            send(2, Delivery::Idempotent, ok(0, 1)),
            send(3, Delivery::Idempotent, ok(0, 2)),
            send(4, Delivery::Idempotent, ok(0, 3)),
        ];
        let mut h = history(sends, vec![(2, 3), (3, 4)]);
        h.final_starts = BTreeMap::from([(0, 2)]);
        h.trims = vec![trim(Some(2), Some(2))];
        h.polls = vec![
            Poll {
                invoked_ms: None,
                reader: 0,
                at_ms: 1,
                records: vec![(0, 0, 1)],
                resets: Vec::new(),
            },
            Poll {
                invoked_ms: None,
                reader: 0,
                at_ms: 3,
                records: vec![(0, 2, 3)],
                resets: vec![(0, 1)],
            },
        ];
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{:?}", verdict.lines());
        assert_eq!(verdict.trimmed, 2);

        // The same jump without a reset is a skip.
        let mut skipped = h.polls.clone();
        skipped[1].resets.clear();
        let mut g = history(h.sends.values().cloned().collect(), vec![(2, 3), (3, 4)]);
        g.final_starts = h.final_starts.clone();
        g.trims = h.trims.clone();
        g.polls = skipped;
        assert_eq!(classes(&check(&g)), vec![Anomaly::PollSkip]);

        // The final read began below the acknowledged log start: it went back.
        let mut back = history(
            h.sends.values().cloned().collect(),
            vec![(1, 2), (2, 3), (3, 4)],
        );
        back.final_starts = BTreeMap::from([(0, 1)]);
        back.trims = h.trims.clone();
        back.polls = h.polls.clone();
        assert_eq!(
            classes(&check(&back)),
            vec![Anomaly::LogStartWentBack],
            "{:?}",
            check(&back).lines()
        );

        // Records gone above every offset DeleteRecords asked for: unasked, unless retention
        // may have moved it.
        let mut unasked = history(h.sends.values().cloned().collect(), vec![(3, 4)]);
        unasked.final_starts = BTreeMap::from([(0, 3)]);
        unasked.trims = vec![trim(Some(2), Some(2))];
        assert_eq!(classes(&check(&unasked)), vec![Anomaly::LogStartUnasked]);
        unasked.retention = true;
        assert!(check(&unasked).is_valid());
        // A call whose outcome is unknown may have moved it as far as it asked (-1: the end).
        unasked.retention = false;
        unasked.trims.push(trim(None, None));
        assert!(check(&unasked).is_valid());
    }
}
