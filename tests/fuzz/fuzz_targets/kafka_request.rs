//! Kafka requests, as any client could send them, read by the real listener and handled by a
//! real core: one node (`oxbow_node::runtime::start`, real sockets, files on a temporary
//! directory) with a topic `fuzz` of two partitions, started once. Each input is one
//! connection: its requests are written, the connection's write side is closed, and the
//! answers are read until the node closes it or 100 ms pass (a Fetch may wait for records).
//! A panic on any of the node's threads aborts the fuzzer (libFuzzer's panic hook), so a
//! request that crashes the node is found; so is one that makes it stop serving (the next
//! input's connection would be refused: asserted).
//!
//! Input: chunks (`oxbow_fuzz::chunks`), each one request without its size (API key, version,
//! correlation id, client id, tagged fields, body); the harness writes the size before it.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oxbow_fuzz::node::Served;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static NODE: OnceLock<Served> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let node = NODE.get_or_init(Served::start);
    let requests = oxbow_fuzz::chunks(input);
    node.runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(node.kafka)
            .await
            .expect("the node still accepts connections");
        let mut out = Vec::new();
        for request in requests {
            out.extend_from_slice(&(request.len() as i32).to_be_bytes());
            out.extend_from_slice(request);
        }
        // The node may close the connection at a bad request before reading the rest.
        if stream.write_all(&out).await.is_err() || stream.shutdown().await.is_err() {
            return;
        }
        let mut answers = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.read_to_end(&mut answers))
            .await;
    });
});
