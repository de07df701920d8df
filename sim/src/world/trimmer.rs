//! The trimmer on the client host: every few seconds it moves one partition's log start offset
//! up with DeleteRecords, to an offset below the highest acknowledged one (or, now and then, to
//! the high watermark), and records each call in the history.

use std::sync::{Arc, Mutex};

use oxbow_client::{Admin, Client};
use oxbow_jepsen::history::{History, Outcome, TrimOp};

use super::{sim_ms, sleep_ms, Trace, WorldOptions, TOPIC};
use crate::rng::Stream;

/// DeleteRecords calls until the safety phase ends (when the options ask for them).
pub(super) async fn trim(
    options: WorldOptions,
    client: Client,
    history: Arc<Mutex<History>>,
    trace: Trace,
) {
    let Some((low, high)) = options.trimming.delete_records_every_ms else {
        return;
    };
    let admin = Admin::new(client);
    let mut rng = Stream::new(options.seed, "world-trimmer");
    loop {
        sleep_ms(rng.between(low, high)).await;
        if sim_ms() >= options.safety_ms {
            return;
        }
        let partition = rng.below(options.partitions as u64) as i32;
        // The highest offset a write was acknowledged at: at most the high watermark (unless
        // an acks=1 write was lost; the call then fails), so an offset up to one past it is
        // valid.
        let highest = {
            let history = history.lock().expect("not poisoned");
            history
                .sends
                .values()
                .filter_map(|s| match s.outcome {
                    Outcome::Ok {
                        partition: p,
                        offset,
                    } if p == partition => Some(offset),
                    _ => None,
                })
                .max()
        };
        let Some(highest) = highest else {
            continue;
        };
        let offset = if rng.chance(100_000) {
            None
        } else {
            Some(rng.between(0, highest as u64 + 1) as i64)
        };
        let invoked_ms = sim_ms();
        trace.line(&format!(
            "{invoked_ms:>7} client trim {partition} to {offset:?}"
        ));
        let answer = admin
            .delete_records(TOPIC, partition, offset.unwrap_or(-1), 5_000)
            .await;
        let completed_ms = sim_ms();
        trace.line(&format!(
            "{completed_ms:>7} client trim {partition} to {offset:?} -> {answer:?}"
        ));
        history.lock().expect("not poisoned").trims.push(TrimOp {
            partition,
            offset,
            invoked_ms,
            completed_ms,
            low_watermark: answer.ok(),
        });
    }
}
