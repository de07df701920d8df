//! End-to-end: hostile input gets a Kafka error and costs no node. Real `oxbow node`
//! processes, raw Kafka requests.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;

mod common;
use common::{batch, produce_raw, raw_request, records, request_frame, Cluster, TOPIC};

/// Produces `batch` to partition 0 at `port`; the partition's error code.
fn produce(port: u16, batch: Bytes) -> i16 {
    produce_raw(port, batch)
        .expect("a produce is answered, not a closed connection")
        .error_code
}

/// ListOffsets by `timestamp` for partition 0 at `port`: (error code, offset).
fn offset_for_time(port: u16, timestamp: i64) -> Option<(i16, i64)> {
    let mut partition = ListOffsetsPartition::default();
    partition.partition_index = 0;
    partition.timestamp = timestamp;
    let mut topic = ListOffsetsTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.partitions = vec![partition];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![topic];
    let mut body = BytesMut::new();
    request.encode(&mut body, 5).expect("encode");
    let answer = raw_request(port, &request_frame(2, 5, &body))?;
    let response =
        ListOffsetsResponse::decode(&mut Bytes::from(answer[4..].to_vec()), 5).expect("decode");
    let p = &response.topics[0].partitions[0];
    Some((p.error_code, p.offset))
}

#[test]
fn poison_batches_are_refused_and_every_node_lives() {
    let mut cluster = Cluster::start_with("[log]\ndecompressed_batch_bytes_max = 1048576\n");
    cluster.wait_for_leaders();
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[(leader - 1) as usize];
    assert_eq!(
        produce(port, batch(&records(3, 10), Compression::None).freeze()),
        0
    );

    // One record under a header that claims two billion (the last offset delta agrees, the
    // CRC is right): a decoder trusting the count allocates for all of them and aborts.
    let mut poison = batch(&records(1, 10), Compression::None);
    poison[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes()); // last offset delta
    poison[57..61].copy_from_slice(&i32::MAX.to_be_bytes()); // record count
    let crc = crc32c::crc32c(&poison[21..]);
    poison[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce(port, poison.freeze()), 87, "INVALID_RECORD");

    // A zstd batch of a few KiB that inflates to 3 MB, over the configured 1 MiB.
    let bomb = batch(&records(300, 10_000), Compression::Zstd);
    assert!(bomb.len() < 64 << 10, "{} bytes compressed", bomb.len());
    assert_eq!(produce(port, bomb.freeze()), 10, "MESSAGE_TOO_LARGE");
    // Within the limit, compressed batches are taken.
    let fine = batch(&records(50, 10_000), Compression::Zstd);
    assert_eq!(produce(port, fine.freeze()), 0);

    // The timestamp lookup decodes stored batches: it answers, and every node lives.
    assert_eq!(offset_for_time(port, 1_700_000_000_001), Some((0, 1)));
    cluster.assert_all_alive(Duration::from_millis(300), "a hostile batch");
}

/// Requests of a few bytes whose arrays claim two billion elements. kafka-protocol allocated
/// for all of them before reading one, and the failed allocation aborted the node (found by
/// the `kafka_request` fuzz target); now they are malformed requests, which close their
/// connection.
#[test]
fn huge_array_lengths_are_refused_and_the_node_lives() {
    let mut cluster = Cluster::start();
    cluster.wait_for_leaders();
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[(leader - 1) as usize];

    // Produce v3 (arrays with i32 lengths): one topic, whose partitions claim i32::MAX.
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks
    body.extend_from_slice(&1_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    body.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
    body.extend_from_slice(TOPIC.as_bytes());
    body.extend_from_slice(&i32::MAX.to_be_bytes()); // partitions
    assert_eq!(raw_request(port, &request_frame(0, 3, &body)), None);

    // Metadata v12 (compact arrays, varint lengths): topics claim 2^31 - 1.
    let mut frame = Vec::new();
    frame.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    frame.extend_from_slice(&12i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    frame.push(0); // header tagged fields
    frame.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]); // 2^31 as an unsigned varint
    let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
    sized.extend_from_slice(&frame);
    assert_eq!(raw_request(port, &sized), None);

    assert_eq!(
        produce(port, batch(&records(3, 10), Compression::None).freeze()),
        0
    );
    cluster.assert_all_alive(Duration::from_millis(300), "huge array lengths");
}

/// `batch` (uncompressed) with its records compressed by `compress` and marked `codec`;
/// length and CRC made right. The codecs are written here, not by kafka-protocol, so that
/// what is tested does not depend on which codecs that crate was built with.
fn compressed(batch: BytesMut, codec: i16, compress: fn(&[u8]) -> Vec<u8>) -> BytesMut {
    let mut out = BytesMut::from(&batch[..61]);
    out.extend_from_slice(&compress(&batch[61..]));
    let attributes = i16::from_be_bytes([out[21], out[22]]) | codec;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(plain).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Snappy as Kafka's Java clients send it: snappy-java's framing (its 16-byte header, then
/// raw snappy blocks of up to 32 KiB input, each after its big-endian length).
fn snappy_java(plain: &[u8]) -> Vec<u8> {
    let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for chunk in plain.chunks(32 << 10) {
        let block = snap::raw::Encoder::new()
            .compress_vec(chunk)
            .expect("snappy");
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// Snappy as librdkafka may send it: one raw block, without the framing.
fn raw_snappy(plain: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(plain)
        .expect("snappy")
}

/// `batch` with a header claiming `count` records (last offset delta and CRC to match).
fn claiming(mut batch: BytesMut, count: i32) -> BytesMut {
    batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    batch[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

#[test]
fn gzip_and_snappy_batches_are_checked_and_looked_into() {
    let mut cluster = Cluster::start_with("[log]\ndecompressed_batch_bytes_max = 1048576\n");
    cluster.wait_for_leaders();
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[(leader - 1) as usize];
    type Compress = fn(&[u8]) -> Vec<u8>;
    let encoders: [(&str, i16, Compress); 3] = [
        ("gzip", 1, gzip),
        ("snappy", 2, snappy_java),
        ("raw snappy", 2, raw_snappy),
    ];
    let encode_with = |codec: i16, compress: Compress| {
        move |records: &[kafka_protocol::records::Record]| {
            compressed(batch(records, Compression::None), codec, compress)
        }
    };
    for (name, codec, compress) in encoders {
        let encode = encode_with(codec, compress);
        // Three records under a header that claims four, or two.
        for count in [4, 2] {
            let lying = claiming(encode(&records(3, 10)), count);
            assert_eq!(produce(port, lying.freeze()), 87, "{name}: INVALID_RECORD");
        }
        // 3 MB of records, over the configured 1 MiB.
        let bomb = encode(&records(300, 10_000));
        assert!(bomb.len() < 200 << 10, "{name}: {} bytes", bomb.len());
        assert_eq!(
            produce(port, bomb.freeze()),
            10,
            "{name}: MESSAGE_TOO_LARGE"
        );
    }
    // Within the limit they are taken, and the timestamp lookup finds the record inside.
    const BASE: i64 = 1_700_000_000_000;
    for (k, &(name, codec, compress)) in encoders.iter().enumerate() {
        let encode = encode_with(codec, compress);
        let mut twenty = records(20, 100);
        for (i, record) in twenty.iter_mut().enumerate() {
            record.timestamp = BASE + 1_000 * k as i64 + i as i64;
        }
        assert_eq!(produce(port, encode(&twenty).freeze()), 0, "{name}");
    }
    for k in 0..3i64 {
        let name = encoders[k as usize].0;
        assert_eq!(
            offset_for_time(port, BASE + 1_000 * k + 7),
            Some((0, 20 * k + 7)),
            "{name}: the exact record"
        );
        assert_eq!(
            offset_for_time(port, BASE + 1_000 * k - 500),
            Some((0, 20 * k)),
            "{name}: before its first record"
        );
    }
    cluster.assert_all_alive(Duration::from_millis(300), "a hostile batch");
}

/// Whether the node closed `stream` (a read sees the end, or a reset) within `within`.
fn closed_by_node(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn connections_past_the_limits_are_closed_and_idle_ones_expire() {
    let mut cluster = Cluster::start_with(
        "[connections]\nmax_connections_per_ip = 4\nconnections_max_idle_ms = 2000\n",
    );
    cluster.wait_for_leaders();
    let port = cluster.kafka[0];
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Four connections from 127.0.0.1 that say nothing are kept (for now).
    let mut quiet: Vec<_> = (0..4).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fifth from the same address is closed at once, and the refusal is logged.
    let mut fifth = connect();
    assert!(
        closed_by_node(&mut fifth, Duration::from_secs(5)),
        "a fifth connection"
    );
    assert!(
        !closed_by_node(&mut quiet[0], Duration::from_millis(300)),
        "kept"
    );
    let log = std::fs::read_to_string(cluster.dir.path().join("node-1.log")).expect("log");
    assert!(
        log.contains("refused a client connection") && log.contains("max_connections_per_ip"),
        "the refusal is logged"
    );
    // Idle past connections_max_idle_ms: closed, and their places freed.
    for stream in &mut quiet {
        assert!(
            closed_by_node(stream, Duration::from_secs(10)),
            "idle expiry"
        );
    }
    let api_versions = request_frame(18, 0, &[]);
    assert!(raw_request(port, &api_versions).is_some(), "a place again");
}

/// Forged Raft traffic on the peer port: the unauthenticated hello of old, and the new
/// handshake with a wrong secret or a node id that is not a peer. Each is refused before
/// anything reaches the core; every node lives and serves.
#[test]
fn forged_peers_are_refused_and_every_node_lives() {
    use oxbow_core::ids::GroupId;
    use oxbow_core::io::GroupMessage;
    use oxbow_core::raft::eraftpb::{Message, MessageType};
    use std::io::{Read, Write};

    let mut cluster = Cluster::start();
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[(leader - 1) as usize];
    assert_eq!(
        produce(port, batch(&records(3, 10), Compression::None).freeze()),
        0
    );
    // Heartbeats "from node 2" to node 1 for the first groups, with a term no epoch fits and
    // a commit index far past any log: raft-rs's commit_to check aborts a node that believes
    // them, and the term would brick the partition.
    let forged: Vec<GroupMessage> = (0..64)
        .map(|group| GroupMessage {
            group: GroupId(group),
            message: Message {
                msg_type: MessageType::MsgHeartbeat,
                from: 2,
                to: 1,
                term: 1 << 40,
                commit: 1 << 40,
                ..Message::default()
            },
        })
        .collect();
    let mut frame = Vec::new();
    oxbow_node::runtime::peer::encode_frame(&forged, &mut frame);
    let peer_port = cluster.peer[0];
    let connect = || std::net::TcpStream::connect(("127.0.0.1", peer_port)).expect("connect");

    // The version 1 hello: magic, version, sender id; then frames.
    let mut old = connect();
    let mut hello = b"OXBW".to_vec();
    hello.extend_from_slice(&1u16.to_le_bytes());
    hello.extend_from_slice(&2u64.to_le_bytes());
    let _ = old.write_all(&hello);
    let _ = old.write_all(&frame);
    assert!(
        closed_by_node(&mut old, Duration::from_secs(6)),
        "old hello"
    );

    // The version 2 hello from node 2, answered with a guess instead of the right MAC.
    let hello_v2 = |from: u64| {
        let mut hello = b"OXBW".to_vec();
        hello.extend_from_slice(&2u16.to_le_bytes());
        hello.extend_from_slice(&from.to_le_bytes());
        hello.extend_from_slice(&1u64.to_le_bytes());
        hello.extend_from_slice(&[7u8; 16]);
        hello
    };
    let mut guess = connect();
    guess.write_all(&hello_v2(2)).expect("hello");
    let mut challenge = [0u8; 52];
    guess
        .read_exact(&mut challenge)
        .expect("a configured peer id is challenged");
    assert_eq!(&challenge[..4], b"OXBW");
    let _ = guess.write_all(&[0u8; 32]);
    let _ = guess.write_all(&frame);
    assert!(
        closed_by_node(&mut guess, Duration::from_secs(6)),
        "wrong MAC"
    );

    // A node id that is not one of node 1's peers is not even challenged.
    let mut stranger = connect();
    stranger.write_all(&hello_v2(9)).expect("hello");
    assert!(
        closed_by_node(&mut stranger, Duration::from_secs(6)),
        "unknown node id"
    );

    cluster.assert_all_alive(Duration::from_millis(500), "forged peer traffic");
    let log = std::fs::read_to_string(cluster.dir.path().join("node-1.log")).expect("log");
    for why in [
        "protocol version 1",
        "does not know the peer secret",
        "node 9",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("refused a peer connection") && l.contains(why)),
            "the refusal ({why}) is logged"
        );
    }
    // The real peers' links are untouched: the cluster still replicates.
    let leader = cluster.leaders()[&0];
    assert_eq!(
        produce(
            cluster.kafka[(leader - 1) as usize],
            batch(&records(3, 10), Compression::None).freeze()
        ),
        0
    );
}

/// Clients that announce the largest requests and send nothing more hold the node's whole
/// `queued_max_request_bytes` while their bodies are awaited: another client's request waits
/// (the budget is enforced), until `request_read_timeout_ms` closes them and frees their
/// bytes, and it is served then.
#[test]
fn requests_that_never_arrive_are_dropped_and_their_bytes_freed() {
    use std::io::{Read, Write};
    let mut cluster = Cluster::start_with(
        "[connections]\nrequest_read_timeout_ms = 2000\nqueued_max_request_bytes = 209715200\n",
    );
    cluster.wait_for_leaders();
    let port = cluster.kafka[0];
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Two requests of 100 MiB each, announced, with a few bytes of their headers: 200 MiB,
    // the whole budget.
    let mut stalled: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = connect();
            stream
                .write_all(&(100i32 << 20).to_be_bytes())
                .expect("size");
            stream.write_all(&[0, 18, 0, 0]).expect("part of a header");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A small request now waits for room.
    let started = std::time::Instant::now();
    let mut waiting = connect();
    waiting
        .write_all(&request_frame(18, 0, &[]))
        .expect("request");
    waiting
        .set_read_timeout(Some(Duration::from_millis(1_000)))
        .expect("timeout");
    let mut size = [0u8; 4];
    let early = waiting.read_exact(&mut size);
    assert!(
        early.is_err(),
        "answered while the budget was held: {early:?}"
    );
    // The stalled ones are closed once 2 s pass without their bodies...
    for stream in &mut stalled {
        assert!(
            closed_by_node(stream, Duration::from_secs(10)),
            "a stalled request"
        );
    }
    // ...and the waiting request is served.
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    waiting
        .read_exact(&mut size)
        .expect("answered once room was freed");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    waiting.read_exact(&mut body).expect("the answer");
    assert_eq!(&body[..4], &7i32.to_be_bytes(), "its correlation id");
    assert!(started.elapsed() >= Duration::from_millis(1_500));
    cluster.assert_all_alive(Duration::from_millis(300), "stalled requests");
    // The log is written asynchronously: give it a moment.
    let logged = (0..50).any(|_| {
        let log = std::fs::read_to_string(cluster.dir.path().join("node-1.log")).expect("log");
        let found =
            log.contains("closed client connection") && log.contains("request_read_timeout_ms");
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(logged, "the closing is logged");
}

/// A raw Fetch v4 of partition 0 from offset 0, for up to `max_bytes`.
fn fetch_frame(max_bytes: i32) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::FetchRequest;
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = 0;
    partition.partition_max_bytes = max_bytes;
    let mut topic = FetchTopic::default();
    topic.topic = TopicName(StrBytes::from_static_str(TOPIC));
    topic.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = 0;
    request.min_bytes = 1;
    request.max_bytes = max_bytes;
    request.topics = vec![topic];
    let mut body = BytesMut::new();
    request.encode(&mut body, 4).expect("encode");
    request_frame(1, 4, &body)
}

/// Reads `stream` until the node's end (or a reset), within `within`: the bytes read, or
/// `None` if it is still open then (a read waited 2 s for nothing).
fn read_to_the_end(stream: &mut std::net::TcpStream, within: Duration) -> Option<usize> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0;
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Some(total)
            }
            Err(_) => return None,
        }
    }
    None
}

/// Waits up to 15 s for a line of node `node`'s log (1-based) holding every one of `parts`.
fn logged(cluster: &Cluster, node: usize, parts: &[&str]) -> bool {
    (0..150).any(|_| {
        let log = std::fs::read_to_string(cluster.dir.path().join(format!("node-{node}.log")))
            .expect("log");
        let found = log.lines().any(|l| parts.iter().all(|p| l.contains(p)));
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    })
}

/// A client that pipelines Fetch requests for megabytes of records and reads none of the
/// answers: the TCP buffers fill, the node's answer cannot be written, and once it has
/// waited `response_write_timeout_ms` the node closes the connection (logged), which frees
/// what the connection held. Other clients are served all the while.
#[test]
fn answers_a_client_does_not_read_close_its_connection() {
    use std::io::Write;
    let mut cluster = Cluster::start_with("[connections]\nresponse_write_timeout_ms = 2000\n");
    cluster.wait_for_leaders();
    let leader = cluster.leaders()[&0];
    let port = cluster.kafka[(leader - 1) as usize];
    // About 7 MB in partition 0, more than the TCP buffers of a local connection hold.
    for _ in 0..8 {
        assert_eq!(
            produce(
                port,
                batch(&records(900, 1_000), Compression::None).freeze()
            ),
            0
        );
    }
    let fetch = fetch_frame(16 << 20);
    let answer = raw_request(port, &fetch).expect("a fetch is answered");
    assert!(answer.len() > 7_000_000, "{} bytes", answer.len());

    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let requests = 40;
    for _ in 0..requests {
        stuck.write_all(&fetch).expect("a request");
    }
    // Another client is served meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let other = raw_request(port, &fetch).expect("another client is served");
    assert_eq!(other.len(), answer.len());
    assert!(
        logged(
            &cluster,
            leader as usize,
            &["closed client connection", "response_write_timeout_ms"]
        ),
        "the closing is logged"
    );
    // What was in flight reads out, then the connection ends, long before every answer.
    let read = read_to_the_end(&mut stuck, Duration::from_secs(20));
    assert!(
        read.is_some_and(|bytes| bytes < requests * answer.len()),
        "the stuck connection is closed: {read:?}"
    );
    assert!(raw_request(port, &fetch).is_some(), "still served");
    cluster.assert_all_alive(Duration::from_millis(300), "answers nobody reads");
}

/// Connections to the peer port that never complete the handshake: past
/// `peer_handshakes_max` of them, a new one is closed at once (logged); the ones held are
/// closed by the handshake's step timeout, which frees their places. The cluster still
/// replicates throughout.
#[test]
fn peer_handshakes_past_the_limit_are_refused() {
    let mut cluster = Cluster::start_with("[connections]\npeer_handshakes_max = 8\n");
    cluster.wait_for_leaders();
    let peer_port = cluster.peer[0];
    let connect = || std::net::TcpStream::connect(("127.0.0.1", peer_port)).expect("connect");
    let mut silent: Vec<_> = (0..40).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (closed, mut held): (Vec<_>, Vec<_>) = silent
        .drain(..)
        .map(|mut s| (closed_by_node(&mut s, Duration::from_millis(50)), s))
        .partition(|(closed, _)| *closed);
    // A real peer dialling meanwhile may take one of the eight places.
    assert!(
        (32..=33).contains(&closed.len()),
        "{} of 40 closed at once",
        closed.len()
    );
    assert!(logged(
        &cluster,
        1,
        &[
            "refused a peer connection",
            "connections.peer_handshakes_max"
        ]
    ));
    // The cluster replicates while the places are taken.
    let produce_to_leader = |cluster: &Cluster| {
        let leader = cluster.leaders()[&0];
        produce(
            cluster.kafka[(leader - 1) as usize],
            batch(&records(3, 10), Compression::None).freeze(),
        )
    };
    assert_eq!(produce_to_leader(&cluster), 0);
    // The held ones time out in their handshake, and free their places.
    for (_, stream) in &mut held {
        assert!(
            closed_by_node(stream, Duration::from_secs(10)),
            "a handshake that never came"
        );
    }
    let mut again = connect();
    assert!(
        !closed_by_node(&mut again, Duration::from_millis(300)),
        "a place again"
    );
    assert_eq!(produce_to_leader(&cluster), 0);
    cluster.assert_all_alive(Duration::from_millis(300), "silent peer connections");
}

/// A configured peer that connects again and again holds one link: each newer authenticated
/// connection closes the older one at once (not after the silence timeout, at least 5 s).
/// Here the test dials node 1 as node 2, with the cluster's secret; its connections take the
/// real node 2's place, which dials again as soon as its link breaks, and replication heals.
#[test]
fn a_peer_holds_one_link_the_newest() {
    use oxbow_core::ids::NodeId;
    use oxbow_node::runtime::peer::handshake::{dial, Credentials};
    use rand_chacha::rand_core::SeedableRng;
    use tokio::io::AsyncReadExt;

    let mut cluster = Cluster::start();
    cluster.wait_for_leaders();
    let peer_port = cluster.peer[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let credentials = Credentials::new(
        common::PEER_SECRET.as_bytes(),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(16)),
    );
    runtime.block_on(async {
        let mut links = Vec::new();
        for _ in 0..4 {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", peer_port))
                .await
                .expect("connect");
            let (mut read, mut write) = stream.into_split();
            dial(&mut read, &mut write, &credentials, NodeId(2), NodeId(1))
                .await
                .expect("the secret is right");
            links.push((read, write));
        }
        // Every link but the newest was replaced (and the newest may be by now, by the real
        // node 2's): node 1 closed them.
        for (i, (read, _)) in links.iter_mut().take(3).enumerate() {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(1), read.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "link {i} is closed: {read:?}"
            );
        }
    });
    // The real node 2 dials again and replicates.
    let mut replicated = false;
    for _ in 0..50 {
        let leader = cluster.leaders()[&0];
        if produce(
            cluster.kafka[(leader - 1) as usize],
            batch(&records(3, 10), Compression::None).freeze(),
        ) == 0
        {
            replicated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(replicated, "produce with acks=all succeeds");
    cluster.assert_all_alive(
        Duration::from_millis(300),
        "a peer dialling again and again",
    );
}
