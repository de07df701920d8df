//! The speed floor of a turmoil world like the simulator's, with no oxbow code in it.
//!
//! The world (`oxbow-sim run --world turmoil`) steps turmoil 1 ms at a time and ticks every
//! host's runtime at every step. This example builds the same shape of world (same step, same
//! latency, `nodes` hosts and one client host) where each node only wakes every 20 ms, as the
//! node's raft ticker does, and the client sleeps. The speed it prints is an upper bound for the
//! real world's: the world cannot run faster than turmoil does with nothing to do.
//!
//! `cargo run --release -p oxbow-sim --example turmoil_floor -- [nodes] [simulated seconds]`

use std::time::{Duration, Instant, UNIX_EPOCH};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args
        .next()
        .map_or(3, |a| a.parse().expect("nodes: a number"));
    let seconds: u64 = args
        .next()
        .map_or(30, |a| a.parse().expect("simulated seconds: a number"));
    for tick_ms in [1, 2, 5] {
        let started = Instant::now();
        let steps = run(nodes, seconds, tick_ms);
        let wall = started.elapsed();
        println!(
            "{nodes} idle nodes + 1 client, step {tick_ms} ms: {seconds} simulated s in {:.2} wall s \
             ({:.0}x real time, {:.1} us per step)",
            wall.as_secs_f64(),
            seconds as f64 / wall.as_secs_f64(),
            wall.as_secs_f64() * 1e6 / steps as f64,
        );
    }
}

/// Runs the empty world for `seconds` simulated seconds; returns the number of steps.
fn run(nodes: usize, seconds: u64, tick_ms: u64) -> u64 {
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(Duration::from_millis(tick_ms))
        .simulation_duration(Duration::from_secs(seconds + 10))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(2))
        .build();
    for n in 0..nodes {
        sim.host(format!("n{n}"), || async {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    sim.client("client", async move {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        Ok(())
    });
    let mut steps = 0;
    while !sim.step().expect("the empty world runs") {
        steps += 1;
    }
    steps
}
