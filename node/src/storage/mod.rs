//! Durable storage: the node's append-only segment log over a [`Disk`].
//!
//! One log per data directory holds the frames of every group, so one fsync makes a whole
//! round of readies durable (group commit). Segments roll at a size limit; each new segment
//! starts with every group's hard state and snapshot, so a prefix of old segments can be
//! deleted once compaction has made their entries unneeded.

pub mod disk;
pub mod frame;
mod segment_log;

pub use disk::{Disk, FsDisk, SharedSimDisk, SimDisk};
pub use segment_log::{
    provably_synced, RecoveryReport, SegmentLog, SegmentLogOptions, StorageError,
};
