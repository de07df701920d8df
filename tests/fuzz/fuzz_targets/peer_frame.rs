//! A peer frame's payload, as an authenticated peer could send it, checked by the peer
//! transport (`receive_payload`: well formed, each message from its sender and for this
//! node) and fed to a real core among three, which then runs on for a few ticks. Every run starts from the same state: the three nodes restarted from copies of
//! their disks (a controller, a topic with records).
//!
//! The core checks what would panic outside raft-rs (terms that do not fit a leader epoch,
//! snapshots that do not decode); raft-rs's own assertions about a peer that lies about the
//! log (a commit index past the log's end, say) are kept on purpose: an authenticated peer is
//! trusted to run Raft, and they are how the simulator catches planted durability bugs. So a
//! panic raised inside the `raft` crate ends the run, not the fuzzer; any other is a crash.
//!
//! Input: one byte (the sending peer, and how many ticks to run after), then the payload.

#![no_main]

use std::sync::{Once, OnceLock};

use libfuzzer_sys::fuzz_target;
use oxbow_core::ids::NodeId;
use oxbow_core::io::Input;
use oxbow_fuzz::cluster::{shared, Cluster, Saved, RECEIVER};
use oxbow_node::runtime::peer::receive_payload;

static SAVED: OnceLock<Saved> = OnceLock::new();
static HOOK: Once = Once::new();

fuzz_target!(|input: &[u8]| {
    HOOK.call_once(oxbow_fuzz::abort_unless_raft_panics);
    let saved = SAVED.get_or_init(Cluster::build);
    let Some((&choice, payload)) = input.split_first() else {
        return;
    };
    let from = NodeId(2 + u64::from(choice & 1));
    let Ok(messages) = receive_payload(&shared(payload), from, RECEIVER) else {
        return;
    };
    let ticks = usize::from(choice >> 1) % 16;
    // A panic inside raft-rs ends the run (see above); the hook aborted on any other.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cluster = Cluster::restart(saved, 1);
        cluster.push(RECEIVER, Input::Peer { from, messages });
        cluster.settle();
        cluster.tick(ticks);
    }));
});
