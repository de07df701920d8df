//! The checker is only worth something if it catches real bugs: each planted bug must be caught
//! (a violation, or the system's own assertion) within a sweep of 200 seeds of the cores
//! simulation; the log cleaner's, by the compacted topic's classes in the turmoil world.

use oxbow_core::node::PlantedBugs;
use oxbow_sim::cluster::run;
use oxbow_sim::options::Options;

/// Seeds in which `bug` is caught, out of `seeds`.
fn caught(bug: PlantedBugs, seeds: std::ops::Range<u64>) -> Vec<u64> {
    std::panic::set_hook(Box::new(|_| {}));
    let caught = seeds
        .filter(|seed| {
            let options = Options::from_seed(*seed, 4_000, bug);
            match std::panic::catch_unwind(|| run(options)) {
                Ok(report) => !report.violations.is_empty(),
                Err(_) => true,
            }
        })
        .collect();
    let _ = std::panic::take_hook();
    caught
}

/// Asserts that `bug` (named `name`) is caught in at least one of 200 seeds.
fn assert_caught(name: &str, bug: PlantedBugs) {
    let seeds = caught(bug, 0..200);
    println!(
        "{name} caught in {} of 200 seeds: {:?}",
        seeds.len(),
        &seeds[..seeds.len().min(10)]
    );
    assert!(
        !seeds.is_empty(),
        "the planted bug {name} went unnoticed in 200 seeds"
    );
}

#[test]
fn releasing_persisted_messages_before_the_disk_completes_is_caught() {
    let bug = PlantedBugs {
        early_persisted_messages: true,
        ..PlantedBugs::default()
    };
    assert_caught("early-persisted-messages", bug);
}

#[test]
fn appending_idempotent_retries_again_is_caught() {
    let bug = PlantedBugs {
        skip_sequence_check: true,
        ..PlantedBugs::default()
    };
    assert_caught("skip-sequence-check", bug);
}

#[test]
fn serving_uncommitted_records_is_caught() {
    let bug = PlantedBugs {
        fetch_above_hwm: true,
        ..PlantedBugs::default()
    };
    assert_caught("fetch-above-hwm", bug);
}

#[test]
fn the_same_seeds_pass_without_the_bug() {
    // The control: the seeds that catch the bug are not failing for another reason.
    let seeds = caught(PlantedBugs::default(), 0..50);
    assert!(
        seeds.is_empty(),
        "seeds fail without any planted bug: {seeds:?}"
    );
}

#[test]
fn keeping_a_torn_tail_is_caught() {
    let bug = PlantedBugs {
        keep_torn_tail: true,
        ..PlantedBugs::default()
    };
    assert_caught("keep-torn-tail", bug);
}

#[test]
fn serving_a_frame_a_new_leader_replaced_is_caught() {
    // Reading entries back from the files must take each index's live frame, not an older
    // one a new leader overwrote (a read from a stale file position).
    let bug = PlantedBugs {
        serve_stale_frames: true,
        ..PlantedBugs::default()
    };
    assert_caught("serve-stale-frames", bug);
}

#[test]
fn deleting_a_segment_with_records_above_the_log_start_is_caught() {
    let bug = PlantedBugs {
        delete_live_segments: true,
        ..PlantedBugs::default()
    };
    assert_caught("delete-live-segments", bug);
}

/// Runs the compacted seeds of 0..200 in order (30 simulated seconds of faults each) until
/// `bug` is caught by one of `classes` of the compacted topic's checker; fails if none does.
fn assert_caught_by_compaction_classes(name: &str, bug: PlantedBugs, classes: &[&str]) {
    use oxbow_sim::world::{run_world, Output, WorldOptions};
    let compacted: Vec<u64> = (0..200)
        .filter(|seed| {
            WorldOptions::from_seed(*seed, 30_000, bug)
                .compaction
                .is_some()
        })
        .collect();
    assert!(compacted.len() > 20, "compacted seeds: {compacted:?}");
    std::panic::set_hook(Box::new(|_| {}));
    let caught = compacted.iter().copied().find(|seed| {
        let options = WorldOptions::from_seed(*seed, 30_000, bug);
        match std::panic::catch_unwind(|| run_world(options, Output::Quiet)) {
            Ok(report) => report
                .violations
                .iter()
                .any(|v| classes.iter().any(|class| v.starts_with(class))),
            Err(_) => false,
        }
    });
    let _ = std::panic::take_hook();
    println!("{name}: first caught at seed {caught:?} of {compacted:?}");
    assert!(
        caught.is_some(),
        "the planted bug {name} went unnoticed in the compacted seeds of 0..200"
    );
}

/// The log cleaner keeping each key's first record instead of its last must be caught by the
/// compacted topic's checker classes in the turmoil world.
#[test]
fn a_cleaner_keeping_each_keys_first_record_is_caught_in_the_world() {
    let bug = PlantedBugs {
        clean_keep_first: true,
        ..PlantedBugs::default()
    };
    assert_caught_by_compaction_classes(
        "clean-keep-first",
        bug,
        &[
            "latest record of a key lost in a compacted topic",
            "superseded value resurrected by compaction",
            "tombstone removed before delete.retention.ms",
        ],
    );
}

/// The log cleaner dropping tombstones before `delete.retention.ms` must be caught as such
/// (`compaction-tombstone-early`) in the turmoil world.
#[test]
fn a_cleaner_dropping_tombstones_early_is_caught_in_the_world() {
    let bug = PlantedBugs {
        clean_drop_tombstones: true,
        ..PlantedBugs::default()
    };
    assert_caught_by_compaction_classes(
        "clean-drop-tombstones",
        bug,
        &["tombstone removed before delete.retention.ms"],
    );
}
