//! The disk writer: one thread per data directory. It takes the core's writes in order, appends
//! every write queued so far, fsyncs once for all of them (group commit), and reports each one
//! done, in order. A disk error stops the node: it cannot know what reached the disk.

use oxbow_core::io::Write;
use slog::{error, Logger};
use tokio::sync::mpsc;

use super::Event;
use crate::config::FsyncPolicy;
use crate::storage::{FsDisk, SegmentLog};

/// Writes queued to the writer at most; past it the core waits.
const QUEUE_CAPACITY: usize = 1_024;
/// Writes committed together at most.
const GROUP_MAX: usize = 256;

/// The core's end of the writer.
pub struct Writer {
    queue: mpsc::Sender<Write>,
}

impl Writer {
    /// Queues a write (waits while the queue is full).
    pub async fn write(&self, write: Write) {
        // A closed queue means the writer stopped after a failure it already reported.
        let _ = self.queue.send(write).await;
    }
}

/// Starts the writer thread.
pub fn spawn(
    mut log: SegmentLog<FsDisk>,
    fsync: FsyncPolicy,
    done: mpsc::Sender<Event>,
    logger: Logger,
) -> Writer {
    let (queue, mut writes) = mpsc::channel::<Write>(QUEUE_CAPACITY);
    #[allow(clippy::disallowed_methods)] // The writer is the one thread of the IO edge.
    std::thread::Builder::new()
        .name("oxbow-writer".into())
        .spawn(move || {
            let mut group = Vec::with_capacity(GROUP_MAX);
            while let Some(first) = writes.blocking_recv() {
                group.push(first);
                while group.len() < GROUP_MAX {
                    match writes.try_recv() {
                        Ok(write) => group.push(write),
                        Err(_) => break,
                    }
                }
                let result = group
                    .iter()
                    .try_for_each(|w| log.append(&w.records))
                    .and_then(|()| {
                        if fsync == FsyncPolicy::Always && group.iter().any(|w| w.sync) {
                            log.sync()
                        } else {
                            Ok(())
                        }
                    });
                if let Err(e) = result {
                    error!(logger, "disk write failed"; "error" => %e);
                    let _ = done.blocking_send(Event::Fatal(e.to_string()));
                    return;
                }
                for write in group.drain(..) {
                    if done.blocking_send(Event::WriteDone(write.seq)).is_err() {
                        return;
                    }
                }
            }
        })
        .expect("spawn the writer thread");
    Writer { queue }
}
