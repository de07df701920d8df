//! The disk writer. It takes the core's writes in order, appends every write queued so far,
//! fsyncs once for all of them (group commit), and reports each one done, in order. A disk
//! error stops the node: it cannot know what reached the disk.
//!
//! In production it is a thread of its own that blocks on the disk; in the simulator it is a
//! task whose fsync takes simulated time (see [`WriterMode`]).
//!
//! Completions travel on a path of their own ([`Completion`]), not the core's shared inbox:
//! the core may be waiting for room in the writer's queue while the inbox is full of client
//! requests, and a writer waiting for room in that inbox would never free the queue. The
//! completion channel needs no bound of its own: each completion answers one write the core
//! queued, and the queue holds at most `QUEUE_CAPACITY` of them. Should the writer stop in any
//! way (a disk error, or a panic), the core hears it and the node stops.
//!
//! It also answers questions only the log can: where retention may move each partition's log
//! start ([`Writer::retention`]), what the log cleaner weighs ([`Writer::clean_stats`]), asked
//! between group commits; and it runs the log cleaner's passes a step (one segment) at a time
//! between group commits ([`Writer::clean_step`]), so writes wait at most one step.

use std::collections::BTreeMap;

use oxbow_core::ids::{GroupId, Offset};
use oxbow_core::io::{DiskRead, Write};
use oxbow_core::raft::eraftpb::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use slog::{error, info, warn, Logger};
use tokio::sync::{mpsc, oneshot};

use super::env::WriterMode;
use crate::config::FsyncPolicy;
use crate::storage::{
    CleanPass, CleanStats, CleanStep, Disk, RetentionPolicy, SegmentLog, StorageError,
};

/// Writes queued to the writer at most; past it the core waits.
const QUEUE_CAPACITY: usize = 1_024;
/// Writes committed together at most.
const GROUP_MAX: usize = 256;

/// What the writer tells the core, in the order of the writes.
#[derive(Debug)]
pub enum Completion {
    /// The write is on disk (and synced, if it asked).
    Done(oxbow_core::ids::IoSeq),
    /// The writer stopped: the disk failed, or the writer itself did. The node must stop.
    Failed(String),
}

/// Sends `Failed` if the writer thread unwinds from a panic, so the node stops rather than
/// going on with no writer (its leaderships kept, nothing answered).
struct PanicAlarm(mpsc::UnboundedSender<Completion>);

impl Drop for PanicAlarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.send(Completion::Failed(
                "the disk writer panicked (its message is in the log above)".into(),
            ));
        }
    }
}

/// Polls a future, turning a panic inside it into `Err` (the future is dropped with this).
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// What the writer is asked to do, in order.
enum Job {
    /// Append (and maybe fsync) a write of the core's.
    Write(Write),
    /// The segment sizes of groups whose topic sets its own.
    SegmentBytes(BTreeMap<GroupId, u64>),
    /// Read entries back (a lagging follower's, an old fetch's).
    Read {
        read: DiskRead,
        reply: oneshot::Sender<Vec<Entry>>,
    },
    /// Each group's bytes on disk, and the disk's size and free bytes.
    Sizes { reply: oneshot::Sender<Sizes> },
    /// Where retention may move the log start of each group with a policy.
    Retention {
        policies: BTreeMap<GroupId, RetentionPolicy>,
        now_ms: i64,
        reply: oneshot::Sender<Vec<(GroupId, Offset)>>,
    },
    /// What the log cleaner weighs of each group (with its `min.compaction.lag.ms`).
    CleanStats {
        groups: BTreeMap<GroupId, i64>,
        now_ms: i64,
        reply: oneshot::Sender<BTreeMap<GroupId, CleanStats>>,
    },
    /// One step of a cleaning pass (at most one segment read and rewritten).
    CleanStep {
        pass: Box<CleanPass>,
        reply: oneshot::Sender<(Box<CleanPass>, CleanStep)>,
    },
}

/// What the log holds (DescribeLogDirs).
#[derive(Clone, Debug, Default)]
pub struct Sizes {
    /// Bytes of each group's segment files.
    pub groups: BTreeMap<GroupId, u64>,
    /// The size of the data directory's file system, if the disk can tell.
    pub total_bytes: Option<u64>,
    /// Its bytes free, if the disk can tell.
    pub free_bytes: Option<u64>,
}

/// The writer's queue.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    /// Whether the data directory's free space was below the reserve at the last look.
    disk_low: Arc<AtomicBool>,
}

/// The disk reserve: produce is refused while the free space is below `bytes`.
#[derive(Clone, Debug)]
pub struct Reserve {
    /// Bytes to keep free.
    pub bytes: u64,
    /// The directory, for the log lines.
    pub dir: String,
}

/// Looks at the free space after a group commit; logs when it crosses the reserve.
fn check_reserve<D: Disk>(
    log: &SegmentLog<D>,
    reserve: &Reserve,
    low: &AtomicBool,
    logger: &Logger,
) {
    let Some(free) = log.free_bytes() else {
        return;
    };
    let now_low = free < reserve.bytes;
    if now_low != low.swap(now_low, Ordering::Relaxed) {
        if now_low {
            warn!(logger, "free space is below the disk reserve: produce is refused \
                (KAFKA_STORAGE_ERROR, retriable) until retention, DeleteRecords or an operator \
                frees space; reads and replication go on";
                "dir" => &reserve.dir, "free_bytes" => free, "reserve_bytes" => reserve.bytes);
        } else {
            info!(logger, "free space is above the disk reserve again: produce is taken";
                "dir" => &reserve.dir, "free_bytes" => free);
        }
    }
}

impl Writer {
    /// Whether the data directory's free space is below the reserve (produce is refused).
    pub fn disk_low(&self) -> bool {
        self.disk_low.load(Ordering::Relaxed)
    }

    /// Queues a write (waits while the queue is full); false if the writer has stopped.
    #[must_use]
    pub async fn write(&self, write: Write) -> bool {
        self.queue.send(Job::Write(write)).await.is_ok()
    }

    /// Reads entries back from disk, after every write queued before; `None` if the writer
    /// stopped. The entries' bytes share the buffers they were read into.
    pub async fn read(&self, read: DiskRead) -> Option<Vec<Entry>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job::Read { read, reply }).await.ok()?;
        answer.await.ok()
    }

    /// Each group's bytes on disk and the disk's size, after every write queued before;
    /// `None` if the writer stopped.
    pub async fn sizes(&self) -> Option<Sizes> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job::Sizes { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Sets the segment sizes of the groups whose topic sets its own (`segment.bytes`).
    pub async fn segment_bytes(&self, sizes: BTreeMap<GroupId, u64>) {
        let _ = self.queue.send(Job::SegmentBytes(sizes)).await;
    }

    /// Where retention may move the log start of each group in `policies` at wall time
    /// `now_ms` (groups where nothing may go are left out); `None` if the writer stopped.
    pub async fn retention(
        &self,
        policies: BTreeMap<GroupId, RetentionPolicy>,
        now_ms: i64,
    ) -> Option<Vec<(GroupId, Offset)>> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Retention {
            policies,
            now_ms,
            reply,
        };
        self.queue.send(job).await.ok()?;
        answer.await.ok()
    }
}

impl Writer {
    /// What the log cleaner weighs of each group in `groups` (with its topic's
    /// `min.compaction.lag.ms`) at wall time `now_ms`; `None` if the writer stopped.
    pub async fn clean_stats(
        &self,
        groups: BTreeMap<GroupId, i64>,
        now_ms: i64,
    ) -> Option<BTreeMap<GroupId, CleanStats>> {
        let (reply, answer) = oneshot::channel();
        let job = Job::CleanStats {
            groups,
            now_ms,
            reply,
        };
        self.queue.send(job).await.ok()?;
        answer.await.ok()
    }

    /// Runs one step of `pass` between group commits; `None` if the writer stopped.
    pub async fn clean_step(&self, pass: Box<CleanPass>) -> Option<(Box<CleanPass>, CleanStep)> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job::CleanStep { pass, reply }).await.ok()?;
        answer.await.ok()
    }
}

/// Answers a question (or takes a setting) between group commits.
fn answer<D: Disk>(log: &mut SegmentLog<D>, job: Job) -> Result<(), StorageError> {
    match job {
        Job::Write(_) => unreachable!("writes are grouped"),
        Job::Read { read, reply } => {
            let entries = log.read_entries(read.group, read.from.0, read.to.0, read.read_bytes)?;
            let _ = reply.send(entries);
        }
        Job::SegmentBytes(sizes) => log.set_segment_bytes(sizes),
        Job::Sizes { reply } => {
            let _ = reply.send(Sizes {
                groups: log.group_bytes(),
                total_bytes: log.total_bytes(),
                free_bytes: log.free_bytes(),
            });
        }
        Job::Retention {
            policies,
            now_ms,
            reply,
        } => {
            let _ = reply.send(log.retention(&policies, now_ms)?);
        }
        Job::CleanStats {
            groups,
            now_ms,
            reply,
        } => {
            let _ = reply.send(log.clean_stats(&groups, now_ms)?);
        }
        Job::CleanStep { mut pass, reply } => {
            let step = log.clean_step(&mut pass)?;
            let _ = reply.send((pass, step));
        }
    }
    Ok(())
}

/// Appends every write of one group commit (not yet durable).
fn append_all<D: Disk>(log: &mut SegmentLog<D>, group: &[Write]) -> Result<(), StorageError> {
    group
        .iter()
        .try_for_each(|write| log.append(&write.records))
}

/// Whether the group commit ends with an fsync: some write asked for one and the policy
/// allows it.
fn wants_sync(group: &[Write], fsync: FsyncPolicy) -> bool {
    fsync == FsyncPolicy::Always && group.iter().any(|w| w.sync)
}

/// Starts the writer.
#[allow(clippy::too_many_arguments)]
pub fn spawn<D: Disk + Send + 'static>(
    log: SegmentLog<D>,
    fsync: FsyncPolicy,
    mode: WriterMode,
    reserve: Reserve,
    planted: oxbow_core::node::PlantedBugs,
    done: mpsc::UnboundedSender<Completion>,
    logger: Logger,
) -> Writer {
    let (queue, writes) = mpsc::channel::<Job>(QUEUE_CAPACITY);
    let disk_low = Arc::new(AtomicBool::new(false));
    check_reserve(&log, &reserve, &disk_low, &logger);
    let low = disk_low.clone();
    match mode {
        WriterMode::Thread => {
            let ack_before_fsync = planted.ack_before_fsync();
            #[allow(clippy::disallowed_methods)] // The writer is the one thread of the IO edge.
            std::thread::Builder::new()
                .name("oxbow-writer".into())
                .spawn(move || {
                    let _alarm = PanicAlarm(done.clone());
                    if ack_before_fsync {
                        run_planted_ack_before_fsync(log, writes, done, logger)
                    } else {
                        run_blocking(log, fsync, (reserve, low), writes, done, logger)
                    }
                })
                .expect("spawn the writer thread");
        }
        WriterMode::Task { sync_latency } => {
            let ack_before_fsync = planted.ack_before_fsync();
            let alarm = done.clone();
            let task = run_task(
                log,
                fsync,
                (reserve, low),
                (sync_latency, ack_before_fsync),
                writes,
                done,
                logger,
            );
            // A panic stays inside the task and stops the node as a thread's does (`PanicAlarm`):
            // one that left the task would shut the whole runtime down from inside tokio's
            // panic handler, where a task woken by another's drop aborts the process.
            tokio::spawn(async move {
                if CatchUnwind(Box::pin(task)).await.is_err() {
                    let _ = alarm.send(Completion::Failed(
                        "the disk writer panicked (its message is in the log above)".into(),
                    ));
                }
            });
        }
    }
    Writer { queue, disk_low }
}

/// Gathers the writes queued after `first` into one group commit; a question met on the way
/// ends the group and is returned, to be answered after it.
fn next_group(
    first: Write,
    writes: &mut mpsc::Receiver<Job>,
    group: &mut Vec<Write>,
) -> Option<Job> {
    group.push(first);
    while group.len() < GROUP_MAX {
        match writes.try_recv() {
            Ok(Job::Write(write)) => group.push(write),
            Ok(question) => return Some(question),
            Err(_) => break,
        }
    }
    None
}

fn run_blocking<D: Disk>(
    mut log: SegmentLog<D>,
    fsync: FsyncPolicy,
    (reserve, low): (Reserve, Arc<AtomicBool>),
    mut writes: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Completion>,
    logger: Logger,
) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while let Some(job) = writes.blocking_recv() {
        let Job::Write(first) = job else {
            if let Err(e) = answer(&mut log, job) {
                error!(logger, "disk read failed"; "error" => %e);
                let _ = done.send(Completion::Failed(e.to_string()));
                return;
            }
            continue;
        };
        let question = next_group(first, &mut writes, &mut group);
        let result = append_all(&mut log, &group).and_then(|()| {
            if wants_sync(&group, fsync) {
                log.sync()
            } else {
                log.finish_unsynced()
            }
        });
        if let Err(e) = result {
            error!(logger, "disk write failed"; "error" => %e);
            let _ = done.send(Completion::Failed(e.to_string()));
            return;
        }
        check_reserve(&log, &reserve, &low, &logger);
        for write in group.drain(..) {
            if done.send(Completion::Done(write.seq)).is_err() {
                return;
            }
        }
        if let Some(question) = question {
            if let Err(e) = answer(&mut log, question) {
                error!(logger, "disk read failed"; "error" => %e);
                let _ = done.send(Completion::Failed(e.to_string()));
                return;
            }
        }
    }
}

/// How long the planted `ack-before-fsync` writer leaves acknowledged writes unsynced.
const PLANTED_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// The production writer with the planted bug `ack-before-fsync` (builds with the
/// `planted-bugs` feature only): every group is reported done as soon as it is written, and
/// fsynced only once it has waited [`PLANTED_SYNC_DELAY`], as a writer that trusted the page
/// cache would. A power failure (the `power` nemesis of `oxbow-jepsen`) then loses writes
/// Raft was told were durable. No disk reserve check: it breaks on purpose anyway.
#[allow(clippy::disallowed_methods)] // Real time on the writer's own thread, as the IO edge may.
fn run_planted_ack_before_fsync<D: Disk>(
    mut log: SegmentLog<D>,
    mut writes: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Completion>,
    logger: Logger,
) {
    warn!(
        logger,
        "planted bug ack-before-fsync: writes are acknowledged before their fsync"
    );
    let mut group = Vec::with_capacity(GROUP_MAX);
    let mut unsynced_since: Option<std::time::Instant> = None;
    loop {
        let job = match unsynced_since {
            None => match writes.blocking_recv() {
                Some(job) => job,
                None => return,
            },
            Some(since) => match writes.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if since.elapsed() >= PLANTED_SYNC_DELAY {
                        if let Err(e) = log.sync() {
                            error!(logger, "disk sync failed"; "error" => %e);
                            let _ = done.send(Completion::Failed(e.to_string()));
                            return;
                        }
                        unsynced_since = None;
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    continue;
                }
            },
        };
        let Job::Write(first) = job else {
            if let Err(e) = answer(&mut log, job) {
                error!(logger, "disk read failed"; "error" => %e);
                let _ = done.send(Completion::Failed(e.to_string()));
                return;
            }
            continue;
        };
        let question = next_group(first, &mut writes, &mut group);
        if let Err(e) = append_all(&mut log, &group).and_then(|()| log.finish_unsynced()) {
            error!(logger, "disk write failed"; "error" => %e);
            let _ = done.send(Completion::Failed(e.to_string()));
            return;
        }
        unsynced_since.get_or_insert_with(std::time::Instant::now);
        for write in group.drain(..) {
            if done.send(Completion::Done(write.seq)).is_err() {
                return;
            }
        }
        if let Some(question) = question {
            if let Err(e) = answer(&mut log, question) {
                error!(logger, "disk read failed"; "error" => %e);
                let _ = done.send(Completion::Failed(e.to_string()));
                return;
            }
        }
    }
}

async fn run_task<D: Disk>(
    mut log: SegmentLog<D>,
    fsync: FsyncPolicy,
    (reserve, low): (Reserve, Arc<AtomicBool>),
    (sync_latency, ack_before_fsync): (std::time::Duration, bool),
    mut writes: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Completion>,
    logger: Logger,
) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while let Some(job) = writes.recv().await {
        let Job::Write(first) = job else {
            if let Err(e) = answer(&mut log, job) {
                error!(logger, "disk read failed"; "error" => %e);
                let _ = done.send(Completion::Failed(e.to_string()));
                return;
            }
            continue;
        };
        let question = next_group(first, &mut writes, &mut group);
        // The bytes reach the (simulated) disk now; they are durable only after the fsync,
        // which takes time: a crash in between loses them.
        if let Err(e) = append_all(&mut log, &group) {
            error!(logger, "disk write failed"; "error" => %e);
            let _ = done.send(Completion::Failed(e.to_string()));
            return;
        }
        // The planted bug: the writes are reported done while still unsynced.
        if ack_before_fsync {
            for write in &group {
                if done.send(Completion::Done(write.seq)).is_err() {
                    return;
                }
            }
        }
        if wants_sync(&group, fsync) {
            if !sync_latency.is_zero() {
                tokio::time::sleep(sync_latency).await;
            }
            if let Err(e) = log.sync() {
                error!(logger, "disk sync failed"; "error" => %e);
                let _ = done.send(Completion::Failed(e.to_string()));
                return;
            }
        } else if let Err(e) = log.finish_unsynced() {
            error!(logger, "disk write failed"; "error" => %e);
            let _ = done.send(Completion::Failed(e.to_string()));
            return;
        }
        check_reserve(&log, &reserve, &low, &logger);
        for write in group.drain(..) {
            if !ack_before_fsync && done.send(Completion::Done(write.seq)).is_err() {
                return;
            }
        }
        if let Some(question) = question {
            if let Err(e) = answer(&mut log, question) {
                error!(logger, "disk read failed"; "error" => %e);
                let _ = done.send(Completion::Failed(e.to_string()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SegmentLogOptions, SimDisk};
    use oxbow_core::ids::IoSeq;
    use oxbow_core::io::WalRecord;
    use std::time::Duration;

    /// A writer on a fresh simulated disk, and where its completions arrive.
    fn writer(mode: WriterMode) -> (Writer, mpsc::UnboundedReceiver<Completion>) {
        let (log, _, _) =
            SegmentLog::open(SimDisk::new(), SegmentLogOptions::default()).expect("open");
        let (done, completions) = mpsc::unbounded_channel();
        let reserve = Reserve {
            bytes: 0,
            dir: "test".into(),
        };
        let writer = spawn(
            log,
            FsyncPolicy::Always,
            mode,
            reserve,
            oxbow_core::node::PlantedBugs::default(),
            done,
            Logger::root(slog::Discard, slog::o!()),
        );
        (writer, completions)
    }

    fn write(seq: u64) -> Write {
        Write {
            seq: IoSeq(seq),
            records: vec![WalRecord::Entries {
                group: GroupId(1),
                entries: vec![Entry {
                    index: seq,
                    term: 1,
                    data: vec![7u8; 100].into(),
                    ..Entry::default()
                }],
            }],
            sync: true,
        }
    }

    /// The core may stop reading completions while it waits for room in the queue (its inbox
    /// full of requests): the writer must go on through stalled fsyncs regardless, or both
    /// wait for each other forever.
    #[tokio::test]
    async fn stalled_fsyncs_end_with_every_write_answered_though_nobody_reads_completions() {
        let (writer, mut completions) = writer(WriterMode::Task {
            sync_latency: Duration::from_millis(700),
        });
        // More writes than the queue holds, none of their completions read meanwhile.
        let writes = (QUEUE_CAPACITY + 2 * GROUP_MAX) as u64;
        let queued = tokio::time::timeout(Duration::from_secs(60), async {
            for seq in 1..=writes {
                assert!(writer.write(write(seq)).await, "the writer stopped");
            }
        })
        .await;
        assert!(queued.is_ok(), "the writer waited for the core");
        for seq in 1..=writes {
            match tokio::time::timeout(Duration::from_secs(60), completions.recv()).await {
                Ok(Some(Completion::Done(done))) => assert_eq!(done, IoSeq(seq)),
                other => panic!("write {seq}: {other:?}"),
            }
        }
    }

    /// A writer thread that dies (here: an entry over the frame limit trips an assertion)
    /// says so, and the core then stops the node, rather than keeping its leaderships while
    /// nothing is written.
    #[tokio::test]
    async fn a_writer_thread_that_panics_reports_it() {
        let (writer, mut completions) = writer(WriterMode::Thread);
        let mut huge = write(1);
        let WalRecord::Entries { entries, .. } = &mut huge.records[0] else {
            unreachable!()
        };
        entries[0].data = vec![0u8; crate::storage::frame::FRAME_PAYLOAD_MAX + 1].into();
        let _ = writer.write(huge).await;
        match tokio::time::timeout(Duration::from_secs(30), completions.recv()).await {
            Ok(Some(Completion::Failed(why))) => assert!(why.contains("panicked"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(
            !writer.write(write(2)).await,
            "the queue closed with the writer"
        );
    }
}
