//! What the transactional checker reports: the anomaly classes, each with a count and a few
//! examples (as [`crate::checker::Verdict`] reports the plain workload's), and the counts of
//! how the run's transaction attempts ended.

use std::collections::BTreeMap;
use std::fmt;

use crate::checker::EXAMPLES;

/// The kinds of anomaly the transactional checker knows. Each variant's documentation says
/// what it detects and how it is counted; the checker's module documentation says what it
/// cannot see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnAnomaly {
    /// An attempt whose commit was acknowledged has outputs missing from the final read
    /// (counted per input).
    LostOutput,
    /// Exactly-once broken: an input was processed by two or more committed attempts (each
    /// consumed it or wrote an output of it; committed = acknowledged, or resolved committed
    /// by the final read), counted per input; or one value visible to read_committed at two
    /// positions, counted per value.
    DuplicateOutput,
    /// G1a: a read_committed reader (a poll, or the final read) saw a record of an attempt
    /// that did not commit: aborted, fenced or indeterminate before its commit was sent, or
    /// commit sent but nothing of it in the final read. A zombie's records are
    /// [`TxnAnomaly::FencedWriteVisible`] instead. Counted per attempt and reader.
    AbortedRead,
    /// A committed attempt (acknowledged, or resolved committed by the final read) with some
    /// of its records in the final read and others not (counted per attempt).
    TornTransaction,
    /// A read_committed poll (or the final read) showed a partition stable up to an offset
    /// (it returned a record there, or reported a last stable offset above it) at or past a
    /// record of an attempt that committed but sent its commit only after the poll returned:
    /// that attempt was open there when the poll was served, so the last stable offset was at
    /// or below its record. Counted per attempt, partition and reader. Also a last stable
    /// offset reported above the high watermark of the same response, counted per poll and
    /// partition.
    ReadPastLso,
    /// An OffsetFetch returned a committed offset of an input partition that no attempt sent
    /// to its transaction, or that only attempts which did not commit sent, or only attempts
    /// that sent their commit after the fetch was answered: committed offsets move only with
    /// their transaction's commit. Counted per input partition and offset.
    OffsetsWithoutTxn,
    /// A committed offset went back: one OffsetFetch answered before another was sent, and the
    /// later returned a lower offset that only attempts acknowledged before the earlier fetch
    /// was sent had sent (so none of them can have committed in between). A lower offset that
    /// no attempt which may have committed sent is [`TxnAnomaly::OffsetsWithoutTxn`]'s
    /// instead. Counted per later fetch and partition.
    OffsetsBackwards,
    /// An attempt begun after a newer instance of its transactional id was initialized (a
    /// zombie) had its commit acknowledged or a record seen by read_committed (counted per
    /// attempt).
    FencedWriteVisible,
    /// A reader saw a value no attempt sent to that partition (counted per value).
    Phantom,
    /// One offset of a partition read with two values, by any readers (counted per offset).
    InconsistentOffset,
    /// The final read did not finish, or left out a partition an attempt wrote to; the
    /// checks that need it were skipped.
    Unfinished,
}

impl TxnAnomaly {
    /// The class's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::LostOutput => "lost output of a committed transaction",
            Self::DuplicateOutput => "input processed by more than one committed transaction",
            Self::AbortedRead => "aborted read (G1a)",
            Self::TornTransaction => "torn transaction",
            Self::ReadPastLso => "read past the last stable offset",
            Self::OffsetsWithoutTxn => "committed offset without its transaction",
            Self::OffsetsBackwards => "committed offset went backwards",
            Self::FencedWriteVisible => "fenced instance's transaction took effect",
            Self::Phantom => "phantom output",
            Self::InconsistentOffset => "inconsistent offset",
            Self::Unfinished => "final read unfinished",
        }
    }
}

/// How the run's transaction attempts ended, and what was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnCounts {
    /// Attempts.
    pub attempts: u64,
    /// Attempts whose commit was acknowledged.
    pub committed: u64,
    /// Attempts whose abort was acknowledged or that failed before their commit.
    pub aborted: u64,
    /// Attempts with an indeterminate outcome.
    pub indeterminate: u64,
    /// Attempts that were fenced.
    pub fenced: u64,
    /// Indeterminate or fenced attempts that sent their commit and are visible in the final
    /// read: they committed.
    pub resolved_committed: u64,
    /// Indeterminate or fenced attempts that did not commit: commit never sent, or nothing
    /// of them in the final read.
    pub resolved_aborted: u64,
    /// Indeterminate or fenced attempts the checker could not decide (no finished final read,
    /// or nothing written that it could look for).
    pub unresolved: u64,
    /// Inputs processed by exactly one committed attempt.
    pub inputs_once: u64,
    /// Records in the final read.
    pub records_read: u64,
    /// Records of attempts that did not commit seen by read_uncommitted readers (allowed).
    pub uncommitted_reads_of_aborted: u64,
}

/// What the transactional checker found.
#[derive(Clone, Debug, Default)]
pub struct TxnVerdict {
    /// Each anomaly class found: its count and a few examples.
    pub anomalies: BTreeMap<TxnAnomaly, (u64, Vec<String>)>,
    /// How the attempts ended, and what was read.
    pub counts: TxnCounts,
}

impl TxnVerdict {
    /// Whether nothing is wrong.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// How many of `class` were found.
    pub fn count(&self, class: TxnAnomaly) -> u64 {
        self.anomalies.get(&class).map_or(0, |(count, _)| *count)
    }

    /// The classes found, in order.
    pub fn classes(&self) -> Vec<TxnAnomaly> {
        self.anomalies.keys().copied().collect()
    }

    /// One line per anomaly class: name, count, examples (as `Verdict::lines`).
    pub fn lines(&self) -> Vec<String> {
        self.anomalies
            .iter()
            .map(|(class, (count, examples))| {
                format!("{}: {count} (e.g. {})", class.name(), examples.join("; "))
            })
            .collect()
    }

    pub(crate) fn report(&mut self, class: TxnAnomaly, example: impl FnOnce() -> String) {
        let (count, examples) = self.anomalies.entry(class).or_default();
        *count += 1;
        if examples.len() < EXAMPLES {
            examples.push(example());
        }
    }
}

/// A summary line of the counts, then [`TxnVerdict::lines`], one per line.
impl fmt::Display for TxnVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "{} transactions: {} committed, {} aborted, {} indeterminate, {} fenced \
             (of these {} committed, {} did not, {} undecided); {} inputs exactly once; \
             {} records in the final read; {} aborted records read uncommitted; {}",
            c.attempts,
            c.committed,
            c.aborted,
            c.indeterminate,
            c.fenced,
            c.resolved_committed,
            c.resolved_aborted,
            c.unresolved,
            c.inputs_once,
            c.records_read,
            c.uncommitted_reads_of_aborted,
            if self.is_valid() { "valid" } else { "INVALID" },
        )?;
        for line in self.lines() {
            write!(f, "\n{line}")?;
        }
        Ok(())
    }
}
