//! Recovery (`SegmentLog::open`) over arbitrary segment and index files: it recovers (cutting
//! a torn tail) or refuses (synced damage, gaps, an old layout) and never panics; what it
//! recovered reads back, and opening the recovered files again gives the same state (recovery
//! is idempotent, so a crash during or after it changes nothing).
//!
//! Input: one flags byte (bit 0: every file synced, so a bad frame is damage; bit 1: each
//! chunk is a frame's payload, framed with a true length and checksum, so the fuzzer reaches
//! the payload decoders), then chunks (`oxbow_fuzz::chunks`), each a byte choosing the file
//! and its content appended to that file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbow_node::storage::{Disk, SegmentLog, SegmentLogOptions, SimDisk};

/// Two groups (the metadata group 0 and a partition, 1) with two segments each, and their
/// index files.
const FILES: [&str; 6] = [
    "g00000000000000000000-00000000000000000000.seg",
    "g00000000000000000000-00000000000000000001.seg",
    "g00000000000000000001-00000000000000000000.seg",
    "g00000000000000000001-00000000000000000003.seg",
    "g00000000000000000001-00000000000000000000.idx",
    "g00000000000000000001-00000000000000000003.idx",
];

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let mut disk = SimDisk::new();
    for chunk in oxbow_fuzz::chunks(rest) {
        let Some((&file, content)) = chunk.split_first() else {
            continue;
        };
        let name = FILES[usize::from(file) % FILES.len()];
        if flags & 2 != 0 && !content.is_empty() {
            let mut framed = Vec::new();
            oxbow_fuzz::storage_frame(content, &mut framed);
            disk.append(name, &framed).expect("append");
        } else {
            disk.append(name, content).expect("append");
        }
    }
    if flags & 1 != 0 {
        for name in disk.list().expect("list") {
            disk.sync(&name).expect("sync");
        }
    }
    let options = SegmentLogOptions {
        segment_bytes_max: 4096,
        ..SegmentLogOptions::default()
    };
    let Ok((mut log, durable, _report)) = SegmentLog::open(disk, options) else {
        return;
    };
    log.invariants();
    for (group, state) in &durable.groups {
        let (Some(first), Some(last)) = (state.entries.first(), state.entries.last()) else {
            continue;
        };
        let read = log
            .read_entries(*group, first.index, last.index, u64::MAX)
            .expect("recovered entries read back");
        assert_eq!(read.len(), state.entries.len());
        for (read, recovered) in read.iter().zip(&state.entries) {
            assert_eq!((read.index, read.term), (recovered.index, recovered.term));
            assert_eq!(read.data, recovered.data);
        }
    }
    // What recovery left on the disk recovers to the same state.
    let disk = log.into_disk();
    let (log, again, report) = SegmentLog::open(disk, options).expect("recovered files reopen");
    log.invariants();
    assert_eq!(report.bytes_cut, 0, "a second recovery cut more");
    assert_eq!(format!("{durable:?}"), format!("{again:?}"));
});
