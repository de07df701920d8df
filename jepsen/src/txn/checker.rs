//! The transactional checker: judges a consume-transform-produce [`TxnHistory`] against what
//! a correct Kafka promises, and reports each [`TxnAnomaly`] class with a count and examples.
//!
//! **Each attempt's fate.** Acknowledged commit: committed. Acknowledged abort, or a failure
//! before the commit was sent: not committed. Indeterminate or fenced with the commit never
//! sent: not committed (only EndTxn(commit) commits; a timeout or a newer instance aborts).
//! Indeterminate or fenced after the commit was sent: decided by the finished final read,
//! committed if any of its records is there and not committed otherwise; undecided (and then
//! judged by nothing that needs its fate) without a finished final read, or when it sent no
//! records.
//!
//! **What the workload must do**, or the checker reports what a correct Kafka allows: values
//! unique in the run; the output topic written only by the recorded attempts and keeping
//! every record (no retention, no DeleteRecords: the final read starts at offset 0); after an
//! attempt that did not commit for sure (aborted, fenced, indeterminate), the next one
//! consumes from the group's committed offsets, fetched after the previous attempt settled
//! (KIP-447's `require_stable`, or after a new instance's InitProducerId), so that no input
//! a committed attempt processed is processed again; and the group's offsets move only
//! through transactions. Each attempt records its first commit send, and outputs only for
//! sends it invoked.
//!
//! **Zombies.** An attempt of instance A began after the InitProducerId of an instance B of
//! the same transactional id was answered, where B's was sent after A's was answered (so B's
//! epoch is newer): every request of the attempt came after B fenced A, so it can neither
//! commit nor be seen by read_committed.
//!
//! **What it cannot see.** An indeterminate attempt that committed and then lost every record
//! reads as not committed (its offsets, if fetched, show up as
//! [`TxnAnomaly::OffsetsWithoutTxn`]). An aborted attempt's records are aborted reads
//! whenever read, but the checker cannot tell when an abort was decided (a correct coordinator
//! may abort at any time: a timeout, a newer instance), so [`TxnAnomaly::ReadPastLso`] is only
//! about attempts that committed. Records missing inside one partition during the run (a
//! read_committed reader that passes over part of a committed attempt in one partition) are
//! not checked: only the final read is held to whole transactions. An input consumed by no
//! committed attempt is not judged (the run may end before it is). Poll skips and rewinds are
//! not checked here (read_committed leaves gaps where aborted records and markers are; the
//! plain checker's poll checks assume a dense log). Consumer-group generations (KIP-447's
//! fencing of TxnOffsetCommit) are not in the history, nor are hanging transactions (a final
//! read that cannot reach the end is for the recorder to report as unfinished).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::history::{
    InputId, InstanceId, Isolation, OutputRecord, TxnHistory, TxnId, TxnOp, TxnOutcome,
};
use super::verdict::{TxnAnomaly, TxnVerdict};

/// Whether an attempt committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Committed,
    NotCommitted,
    Undecided,
}

/// Who read a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reader {
    Poll(usize),
    Final,
}

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Poll(reader) => write!(f, "reader {reader}"),
            Self::Final => write!(f, "the final read"),
        }
    }
}

/// One record one reader returned.
#[derive(Clone, Copy, Debug)]
struct Observation {
    reader: Reader,
    isolation: Isolation,
    at_ms: u64,
    partition: i32,
    offset: i64,
    value: u64,
}

/// What the checker works from: the history, each value's writer, each attempt's fate.
struct Run<'a> {
    history: &'a TxnHistory,
    /// Every output value: the attempt that sent it, and the record.
    writers: BTreeMap<u64, (TxnId, OutputRecord)>,
    /// Whether the final read finished and covered every partition written to.
    complete: bool,
    /// Where the final read holds each value.
    in_final: BTreeMap<u64, BTreeSet<(i32, i64)>>,
    fates: BTreeMap<TxnId, Fate>,
    /// The attempts begun after a newer instance of their transactional id was initialized,
    /// each with that instance's initialization.
    zombies: BTreeMap<TxnId, (InstanceId, u64)>,
    /// Every record any reader returned (polls in order, then the final read if finished).
    observations: Vec<Observation>,
}

/// Checks `history` (see the module documentation for what each fate and class means).
pub fn check(history: &TxnHistory) -> TxnVerdict {
    let mut verdict = TxnVerdict::default();
    let run = Run::new(history, &mut verdict);
    run.count(&mut verdict);
    run.check_reads(&mut verdict);
    run.check_visible_to_read_committed(&mut verdict);
    if run.complete {
        run.check_final(&mut verdict);
    }
    run.check_exactly_once(&mut verdict);
    run.check_stability(&mut verdict);
    run.check_offsets(&mut verdict);
    verdict
}

/// When an attempt's commit may first have been decided: when it was sent (an acknowledged
/// commit without one recorded: when the attempt began, the earliest it can have been).
fn commit_ms(op: &TxnOp) -> Option<u64> {
    match (op.commit_sent_ms, op.outcome) {
        (Some(at), _) => Some(at),
        (None, TxnOutcome::Committed) => Some(op.invoked_ms),
        (None, _) => None,
    }
}

impl<'a> Run<'a> {
    fn new(history: &'a TxnHistory, verdict: &mut TxnVerdict) -> Self {
        let mut writers = BTreeMap::new();
        for (&id, op) in &history.txns {
            for record in &op.produced {
                writers.entry(record.value).or_insert((id, *record));
            }
        }
        let final_read = &history.final_read;
        let mut complete = final_read.finished;
        if !final_read.finished {
            verdict.report(TxnAnomaly::Unfinished, || {
                "the final read never finished".into()
            });
        }
        let written: BTreeSet<i32> = writers.values().map(|(_, r)| r.partition).collect();
        for partition in written {
            if final_read.finished && !final_read.partitions.contains_key(&partition) {
                complete = false;
                verdict.report(TxnAnomaly::Unfinished, || {
                    format!("output partition {partition} is not in the final read")
                });
            }
        }
        let mut in_final: BTreeMap<u64, BTreeSet<(i32, i64)>> = BTreeMap::new();
        let mut observations = Vec::new();
        for poll in &history.polls {
            for &(partition, offset, value) in &poll.records {
                observations.push(Observation {
                    reader: Reader::Poll(poll.reader),
                    isolation: poll.isolation,
                    at_ms: poll.at_ms,
                    partition,
                    offset,
                    value,
                });
            }
        }
        if final_read.finished {
            for (&partition, reads) in &final_read.partitions {
                for &(offset, value) in reads {
                    in_final
                        .entry(value)
                        .or_default()
                        .insert((partition, offset));
                    observations.push(Observation {
                        reader: Reader::Final,
                        isolation: Isolation::ReadCommitted,
                        at_ms: final_read.completed_ms,
                        partition,
                        offset,
                        value,
                    });
                }
            }
        }
        let mut run = Self {
            history,
            writers,
            complete,
            in_final,
            fates: BTreeMap::new(),
            zombies: BTreeMap::new(),
            observations,
        };
        run.fates = history
            .txns
            .iter()
            .map(|(&id, op)| (id, run.fate(op)))
            .collect();
        run.zombies = run.find_zombies();
        run
    }

    /// Whether the final read holds `record` (in the partition it was sent to).
    fn visible(&self, record: &OutputRecord) -> bool {
        self.in_final
            .get(&record.value)
            .is_some_and(|at| at.iter().any(|(p, _)| *p == record.partition))
    }

    fn fate(&self, op: &TxnOp) -> Fate {
        match op.outcome {
            TxnOutcome::Committed => Fate::Committed,
            TxnOutcome::Aborted => Fate::NotCommitted,
            TxnOutcome::Indeterminate | TxnOutcome::Fenced => {
                if op.commit_sent_ms.is_none() {
                    Fate::NotCommitted
                } else if !self.complete || op.produced.is_empty() {
                    Fate::Undecided
                } else if op.produced.iter().any(|r| self.visible(r)) {
                    Fate::Committed
                } else {
                    Fate::NotCommitted
                }
            }
        }
    }

    /// The zombies (see the module documentation).
    fn find_zombies(&self) -> BTreeMap<TxnId, (InstanceId, u64)> {
        let instances = &self.history.instances;
        let mut zombies = BTreeMap::new();
        for (&id, op) in &self.history.txns {
            let Some(a) = instances.get(&id.instance) else {
                continue;
            };
            let newer = instances.iter().find(|(&b_id, b)| {
                b_id != id.instance
                    && b.transactional_id == a.transactional_id
                    && b.init_invoked_ms > a.init_completed_ms
                    && op.invoked_ms > b.init_completed_ms
            });
            if let Some((&b_id, b)) = newer {
                zombies.insert(id, (b_id, b.init_completed_ms));
            }
        }
        zombies
    }

    fn count(&self, verdict: &mut TxnVerdict) {
        let counts = &mut verdict.counts;
        for (id, op) in &self.history.txns {
            counts.attempts += 1;
            match op.outcome {
                TxnOutcome::Committed => counts.committed += 1,
                TxnOutcome::Aborted => counts.aborted += 1,
                TxnOutcome::Indeterminate => counts.indeterminate += 1,
                TxnOutcome::Fenced => counts.fenced += 1,
            }
            if matches!(op.outcome, TxnOutcome::Indeterminate | TxnOutcome::Fenced) {
                match self.fates[id] {
                    Fate::Committed => counts.resolved_committed += 1,
                    Fate::NotCommitted => counts.resolved_aborted += 1,
                    Fate::Undecided => counts.unresolved += 1,
                }
            }
        }
        counts.records_read = self.in_final.values().map(|at| at.len() as u64).sum();
    }

    /// Every record read agrees with the others at its offset and with its writer's
    /// partition.
    fn check_reads(&self, verdict: &mut TxnVerdict) {
        let mut at_offset: BTreeMap<(i32, i64), Observation> = BTreeMap::new();
        let mut inconsistent = BTreeSet::new();
        let mut phantoms = BTreeSet::new();
        for o in &self.observations {
            let first = *at_offset.entry((o.partition, o.offset)).or_insert(*o);
            if first.value != o.value && inconsistent.insert((o.partition, o.offset)) {
                verdict.report(TxnAnomaly::InconsistentOffset, || {
                    format!(
                        "{}@{}: {} read {} at {} ms, {} read {} at {} ms",
                        o.partition,
                        o.offset,
                        first.reader,
                        first.value,
                        first.at_ms,
                        o.reader,
                        o.value,
                        o.at_ms
                    )
                });
            }
            let written_to = self.writers.get(&o.value).map(|(_, r)| r.partition);
            if written_to != Some(o.partition) && phantoms.insert(o.value) {
                verdict.report(TxnAnomaly::Phantom, || match written_to {
                    None => format!(
                        "{} read value {} at {}@{}, which no transaction sent",
                        o.reader, o.value, o.partition, o.offset
                    ),
                    Some(p) => format!(
                        "{} read value {} at {}@{}; it was sent to partition {p}",
                        o.reader, o.value, o.partition, o.offset
                    ),
                });
            }
        }
    }

    /// read_committed sees nothing of an attempt that did not commit, nor of a zombie; a
    /// zombie's commit is never acknowledged. read_uncommitted may see anything written.
    fn check_visible_to_read_committed(&self, verdict: &mut TxnVerdict) {
        let mut zombie_seen: BTreeMap<TxnId, String> = BTreeMap::new();
        for (id, op) in &self.history.txns {
            if self.zombies.contains_key(id) && op.outcome == TxnOutcome::Committed {
                zombie_seen.insert(
                    *id,
                    format!("its commit was acknowledged at {} ms", op.completed_ms),
                );
            }
        }
        let mut aborted_seen = BTreeSet::new();
        let mut uncommitted_seen = BTreeSet::new();
        for o in &self.observations {
            let Some(&(id, _)) = self.writers.get(&o.value) else {
                continue;
            };
            let zombie = self.zombies.contains_key(&id);
            let fate = self.fates[&id];
            if o.isolation == Isolation::ReadUncommitted {
                if zombie || fate == Fate::NotCommitted {
                    uncommitted_seen.insert(o.value);
                }
                continue;
            }
            if zombie {
                zombie_seen.entry(id).or_insert_with(|| {
                    format!(
                        "{} read its value {} at {}@{} at {} ms",
                        o.reader, o.value, o.partition, o.offset, o.at_ms
                    )
                });
            } else if fate == Fate::NotCommitted && aborted_seen.insert((id, o.reader)) {
                let op = &self.history.txns[&id];
                verdict.report(TxnAnomaly::AbortedRead, || {
                    format!(
                        "{} read value {} at {}@{} at {} ms, of transaction {id} ({})",
                        o.reader,
                        o.value,
                        o.partition,
                        o.offset,
                        o.at_ms,
                        why_not_committed(op)
                    )
                });
            }
        }
        for (id, what) in zombie_seen {
            let (newer, at_ms) = self.zombies[&id];
            verdict.report(TxnAnomaly::FencedWriteVisible, || {
                format!(
                    "transaction {id} began at {} ms, after {newer} was initialized at {at_ms} ms; {what}",
                    self.history.txns[&id].invoked_ms
                )
            });
        }
        verdict.counts.uncommitted_reads_of_aborted = uncommitted_seen.len() as u64;
    }

    /// In the finished final read, a committed attempt is whole: an acknowledged one has every
    /// output, and any committed one has all or none of its records.
    fn check_final(&self, verdict: &mut TxnVerdict) {
        for (id, op) in &self.history.txns {
            if self.fates[id] != Fate::Committed {
                continue;
            }
            let (seen, missing): (Vec<&OutputRecord>, Vec<&OutputRecord>) =
                op.produced.iter().partition(|r| self.visible(r));
            if missing.is_empty() {
                continue;
            }
            if op.outcome == TxnOutcome::Committed {
                let mut by_input: BTreeMap<InputId, Vec<&OutputRecord>> = BTreeMap::new();
                for record in &missing {
                    by_input.entry(record.input).or_default().push(record);
                }
                for (input, records) in by_input {
                    verdict.report(TxnAnomaly::LostOutput, || {
                        format!(
                            "{input} of transaction {id}, committed at {} ms: {} of its outputs missing ({})",
                            op.completed_ms,
                            records.len(),
                            describe(&records)
                        )
                    });
                }
            }
            if !seen.is_empty() {
                verdict.report(TxnAnomaly::TornTransaction, || {
                    format!(
                        "transaction {id} ({}): visible {}; missing {}",
                        outcome_name(op.outcome),
                        describe(&seen),
                        describe(&missing)
                    )
                });
            }
        }
    }

    /// Each input is processed by at most one committed attempt, and no value is visible to
    /// read_committed at two positions.
    fn check_exactly_once(&self, verdict: &mut TxnVerdict) {
        let mut processed: BTreeMap<InputId, BTreeSet<TxnId>> = BTreeMap::new();
        for (id, op) in &self.history.txns {
            if self.fates[id] != Fate::Committed {
                continue;
            }
            let inputs = op.consumed.iter().map(|c| c.input);
            for input in inputs.chain(op.produced.iter().map(|r| r.input)) {
                processed.entry(input).or_default().insert(*id);
            }
        }
        for (input, txns) in &processed {
            if txns.len() == 1 {
                verdict.counts.inputs_once += 1;
                continue;
            }
            verdict.report(TxnAnomaly::DuplicateOutput, || {
                let each: Vec<String> = txns
                    .iter()
                    .map(|id| {
                        let op = &self.history.txns[id];
                        format!("{id} ({})", outcome_name(op.outcome))
                    })
                    .collect();
                format!("{input} processed by committed {}", each.join(", "))
            });
        }
        let mut positions: BTreeMap<u64, BTreeSet<(i32, i64)>> = BTreeMap::new();
        for o in &self.observations {
            if o.isolation == Isolation::ReadCommitted {
                positions
                    .entry(o.value)
                    .or_default()
                    .insert((o.partition, o.offset));
            }
        }
        for (value, at) in positions {
            if at.len() > 1 {
                verdict.report(TxnAnomaly::DuplicateOutput, || {
                    format!("value {value} visible to read_committed at {at:?}")
                });
            }
        }
    }

    /// A read_committed read proves its partition stable up to the furthest offset it returned
    /// (and below the last stable offset it reported) when it returned: no attempt that
    /// commits after that can have a record there.
    fn check_stability(&self, verdict: &mut TxnVerdict) {
        // Per output partition, the committed attempts' first known offsets there, sorted,
        // with the latest commit send among the attempts at or below each.
        let mut first: BTreeMap<(TxnId, i32), i64> = BTreeMap::new();
        for o in &self.observations {
            if let Some(&(id, record)) = self.writers.get(&o.value) {
                if record.partition == o.partition && self.fates[&id] == Fate::Committed {
                    let entry = first.entry((id, o.partition)).or_insert(o.offset);
                    *entry = (*entry).min(o.offset);
                }
            }
        }
        let mut open: BTreeMap<i32, Vec<(i64, u64, TxnId)>> = BTreeMap::new();
        for (&(id, partition), &offset) in &first {
            if let Some(commit) = commit_ms(&self.history.txns[&id]) {
                open.entry(partition)
                    .or_default()
                    .push((offset, commit, id));
            }
        }
        let mut latest: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
        for (partition, attempts) in &mut open {
            attempts.sort();
            let mut max = 0;
            latest.insert(
                *partition,
                attempts
                    .iter()
                    .map(|a| {
                        max = max.max(a.1);
                        max
                    })
                    .collect(),
            );
        }
        // Per read_committed read and partition: how far it proved the partition stable.
        let mut reads: Vec<(Reader, u64, i32, i64, &'static str)> = Vec::new();
        for poll in &self.history.polls {
            if poll.isolation != Isolation::ReadCommitted {
                continue;
            }
            let mut furthest: BTreeMap<i32, (i64, &'static str)> = BTreeMap::new();
            for &(partition, offset, _) in &poll.records {
                let entry = furthest.entry(partition).or_insert((offset, "read"));
                if offset > entry.0 {
                    *entry = (offset, "read");
                }
            }
            for (&partition, bounds) in &poll.bounds {
                if let Some(lso) = bounds.last_stable {
                    let entry = furthest
                        .entry(partition)
                        .or_insert((lso - 1, "reported stable"));
                    if lso - 1 > entry.0 {
                        *entry = (lso - 1, "reported stable");
                    }
                    if let Some(hw) = bounds.high_watermark.filter(|hw| lso > *hw) {
                        verdict.report(TxnAnomaly::ReadPastLso, || {
                            format!(
                                "reader {} at {} ms: partition {partition}'s last stable offset {lso} is above its high watermark {hw}",
                                poll.reader, poll.at_ms
                            )
                        });
                    }
                }
            }
            for (partition, (offset, how)) in furthest {
                reads.push((
                    Reader::Poll(poll.reader),
                    poll.at_ms,
                    partition,
                    offset,
                    how,
                ));
            }
        }
        let final_read = &self.history.final_read;
        if final_read.finished {
            for (&partition, records) in &final_read.partitions {
                if let Some(&(offset, _)) = records.iter().max() {
                    reads.push((
                        Reader::Final,
                        final_read.completed_ms,
                        partition,
                        offset,
                        "read",
                    ));
                }
            }
        }
        let mut reported = BTreeSet::new();
        for (reader, at_ms, partition, stable_to, how) in reads {
            let (Some(attempts), Some(latest)) = (open.get(&partition), latest.get(&partition))
            else {
                continue;
            };
            // The attempts at or below `stable_to`; any whose commit was sent after the read?
            let below = attempts.partition_point(|a| a.0 <= stable_to);
            if below == 0 || latest[below - 1] <= at_ms {
                continue;
            }
            for &(offset, commit, id) in &attempts[..below] {
                if commit > at_ms && reported.insert((id, partition, reader)) {
                    verdict.report(TxnAnomaly::ReadPastLso, || {
                        format!(
                            "{reader} {how} partition {partition} up to {stable_to} at {at_ms} ms; transaction {id} has a record at {offset} there and sent its commit at {commit} ms"
                        )
                    });
                }
            }
        }
    }

    /// The group's committed offsets: each fetched offset was sent by an attempt that may
    /// have committed, with its commit sent by then; and none goes back below what an earlier
    /// fetch saw unless an attempt that sent the lower one may have committed in between.
    fn check_offsets(&self, verdict: &mut TxnVerdict) {
        let mut senders: BTreeMap<(i32, i64), Vec<TxnId>> = BTreeMap::new();
        for (id, op) in &self.history.txns {
            for (&partition, &next) in &op.offsets {
                senders.entry((partition, next)).or_default().push(*id);
            }
        }
        let no_one = Vec::new();
        let senders_of = |partition, offset| senders.get(&(partition, offset)).unwrap_or(&no_one);
        let mut reported = BTreeSet::new();
        for fetch in &self.history.offset_fetches {
            for (&partition, &offset) in &fetch.offsets {
                let sent_by = senders_of(partition, offset);
                let explained = sent_by.iter().any(|id| {
                    self.fates[id] != Fate::NotCommitted
                        && commit_ms(&self.history.txns[id])
                            .is_some_and(|at| at <= fetch.completed_ms)
                });
                if explained || !reported.insert((partition, offset)) {
                    continue;
                }
                verdict.report(TxnAnomaly::OffsetsWithoutTxn, || {
                    let why = if sent_by.is_empty() {
                        "no transaction sent it".to_owned()
                    } else {
                        let each: Vec<String> = sent_by
                            .iter()
                            .map(|id| {
                                let op = &self.history.txns[id];
                                match (self.fates[id], commit_ms(op)) {
                                    (Fate::NotCommitted, _) => {
                                        format!("{id}: {}", why_not_committed(op))
                                    }
                                    (_, Some(at)) => format!("{id}: commit sent at {at} ms"),
                                    (_, None) => format!("{id}: commit never sent"),
                                }
                            })
                            .collect();
                        format!("sent by {}", each.join(", "))
                    };
                    format!(
                        "input partition {partition}'s committed offset {offset}, fetched at {} ms: {why}",
                        fetch.completed_ms
                    )
                });
            }
        }
        // Going back needs a commit of the lower offset after the earlier fetch was sent: an
        // attempt that sent it and may have committed, not acknowledged before then.
        let fetches = &self.history.offset_fetches;
        let mut reported = BTreeSet::new();
        for (later_index, later) in fetches.iter().enumerate() {
            for (&partition, &offset) in &later.offsets {
                let may_have: Vec<&TxnOp> = senders_of(partition, offset)
                    .iter()
                    .filter(|id| self.fates[*id] != Fate::NotCommitted)
                    .map(|id| &self.history.txns[id])
                    .collect();
                if may_have.is_empty() {
                    continue; // OffsetsWithoutTxn's
                }
                let earlier = fetches.iter().find(|earlier| {
                    earlier.completed_ms < later.invoked_ms
                        && earlier.offsets.get(&partition).is_some_and(|o| *o > offset)
                        && may_have.iter().all(|op| {
                            op.outcome == TxnOutcome::Committed
                                && op.completed_ms < earlier.invoked_ms
                        })
                });
                if let Some(earlier) = earlier {
                    if reported.insert((later_index, partition)) {
                        verdict.report(TxnAnomaly::OffsetsBackwards, || {
                            format!(
                                "input partition {partition}: committed offset {} fetched at {} ms, then {offset} fetched from {} ms, whose transactions were all acknowledged before {} ms",
                                earlier.offsets[&partition],
                                earlier.completed_ms,
                                later.invoked_ms,
                                earlier.invoked_ms
                            )
                        });
                    }
                }
            }
        }
    }
}

/// Why an attempt the checker holds not committed is so.
fn why_not_committed(op: &TxnOp) -> String {
    match (op.outcome, op.commit_sent_ms) {
        (TxnOutcome::Aborted, _) => format!("aborted at {} ms", op.completed_ms),
        (outcome, None) => format!(
            "{} at {} ms, commit never sent",
            outcome_name(outcome),
            op.completed_ms
        ),
        (outcome, Some(_)) => format!(
            "{} at {} ms, nothing of it in the final read",
            outcome_name(outcome),
            op.completed_ms
        ),
    }
}

fn outcome_name(outcome: TxnOutcome) -> &'static str {
    match outcome {
        TxnOutcome::Committed => "committed",
        TxnOutcome::Aborted => "aborted",
        TxnOutcome::Indeterminate => "indeterminate",
        TxnOutcome::Fenced => "fenced",
    }
}

/// Output records as `value@partition`, a few at most.
fn describe(records: &[&OutputRecord]) -> String {
    let mut each: Vec<String> = records
        .iter()
        .take(4)
        .map(|r| format!("{}@p{}", r.value, r.partition))
        .collect();
    if records.len() > 4 {
        each.push(format!("and {} more", records.len() - 4));
    }
    each.join(", ")
}
