//! Durable storage: the node's append-only segment log over a [`Disk`].
//!
//! Each Raft group (partition) has a log of its own segment files, so that one partition's
//! data is deleted without touching another's; one call syncs every file a round of readies
//! wrote to (group commit). Segments roll at a size limit; each new segment starts with its
//! group's hard state and snapshot, so a prefix of old segments can be deleted once compaction
//! has made their entries unneeded.

pub mod disk;
pub mod frame;
mod group_log;
mod segment_log;

pub use disk::{Disk, FsDisk, SharedSimDisk, SimDisk};
pub use group_log::{
    is_last_segment, is_read_at_start, provably_synced, CleanOptions, CleanPass, CleanReport,
    CleanStats, CleanStep, RetentionPolicy,
};
pub use segment_log::{RecoveryReport, SegmentLog, SegmentLogOptions, StorageError};
