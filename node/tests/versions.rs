//! The versions oxbow serves and advertises, as docs/compatibility.md lists them and as
//! clients see them: the document's tables against the code's table and the clients' pins;
//! Debian's kcat (librdkafka 2.0) compressing, which it does only because Produce is
//! advertised from v0 (KAFKA-18659); raw requests at the edges of the ranges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use oxbow_node::kafka::{advertised, SUPPORTED};

mod common;
use common::{call, raw_request, request_frame, Cluster, PARTITIONS, TOPIC};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows of the table in `text` whose header row starts with `header`, as cells (trimmed).
fn table(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
    assert!(
        lines.next().is_some(),
        "docs/compatibility.md has no table headed `{header}`: put it back"
    );
    lines
        .skip(1) // |---|---|
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// `"3-7"` as `(3, 7)`.
fn range(cell: &str) -> (i16, i16) {
    let parse = |s: &str| {
        s.trim()
            .parse::<i16>()
            .unwrap_or_else(|_| panic!("`{cell}` is not a version range like `3-7`"))
    };
    let (min, max) = cell
        .split_once('-')
        .unwrap_or_else(|| panic!("`{cell}` is not a version range like `3-7`"));
    (parse(min), parse(max))
}

/// One API as a table row: name, key, versions served, versions advertised.
type Versions = (String, i16, (i16, i16), (i16, i16));

/// The APIs docs/compatibility.md lists. A versions cell is the served range, followed by
/// `(advertised A-B)` when ApiVersions advertises another.
fn documented() -> Vec<Versions> {
    let mut rows: Vec<Versions> = table(&read("docs/compatibility.md"), "| API | key | versions |")
        .into_iter()
        .map(|cells| {
            let key = cells[1]
                .parse::<i16>()
                .unwrap_or_else(|_| panic!("{}: key `{}` is not a number", cells[0], cells[1]));
            let (served, advertised) = match cells[2].split_once(" (advertised ") {
                Some((served, advertised)) => (
                    range(served),
                    range(advertised.strip_suffix(')').unwrap_or_else(|| {
                        panic!("{}: `{}` lacks its closing `)`", cells[0], cells[2])
                    })),
                ),
                None => (range(&cells[2]), range(&cells[2])),
            };
            (cells[0].clone(), key, served, advertised)
        })
        .collect();
    rows.sort_by_key(|row| row.1);
    rows
}

/// The same from the code: `SUPPORTED` and `advertised()`.
fn in_code() -> Vec<Versions> {
    let mut rows: Vec<Versions> = SUPPORTED
        .iter()
        .zip(advertised())
        .map(|(&(key, min, max), (same, amin, amax))| {
            assert_eq!(key, same);
            (format!("{key:?}"), key as i16, (min, max), (amin, amax))
        })
        .collect();
    rows.sort_by_key(|row| row.1);
    rows
}

#[test]
fn the_compatibility_document_lists_every_api_and_version_the_code_serves_and_advertises() {
    let documented = documented();
    let code = in_code();
    let missing: Vec<&Versions> = code.iter().filter(|r| !documented.contains(r)).collect();
    let extra: Vec<&Versions> = documented.iter().filter(|r| !code.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/compatibility.md's table differs from the code's (SUPPORTED and advertised() in \
         node/src/kafka/mod.rs): make its rows say what the code does.\n\
         in the code, not so in the document: {missing:?}\n\
         in the document, not so in the code: {extra:?}"
    );
    // The one API advertised beyond what is served: Produce from v0 (KAFKA-18659).
    let beyond: Vec<&Versions> = code.iter().filter(|r| r.2 != r.3).collect();
    assert_eq!(
        beyond,
        vec![&("Produce".to_string(), 0, (3, 7), (0, 7))],
        "only Produce's lowest version is advertised below the lowest served"
    );
}

/// The versions the "Tested clients" table names, by client: the version cell.
fn tested_clients() -> BTreeMap<String, String> {
    table(&read("docs/compatibility.md"), "| client | version |")
        .into_iter()
        .map(|cells| (cells[0].clone(), cells[1].clone()))
        .collect()
}

/// The version of `package` in Cargo.lock.
fn locked(lock: &str, package: &str) -> String {
    let needle = format!("name = \"{package}\"\nversion = \"");
    let at = lock
        .find(&needle)
        .unwrap_or_else(|| panic!("Cargo.lock has no package {package}"))
        + needle.len();
    lock[at..].split('"').next().expect("a version").to_string()
}

#[test]
fn the_compatibility_document_names_each_pinned_client_at_its_pinned_version() {
    let tested = tested_clients();
    let named = |client: &str| -> &str {
        tested.get(client).map(String::as_str).unwrap_or_else(|| {
            panic!("docs/compatibility.md's Tested clients table has no row for {client}: add it")
        })
    };
    // Every client the Python tests install, at its pinned version (pytest runs them).
    let requirements = read("tests/python/requirements.txt");
    let pins: Vec<(&str, &str)> = requirements
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once("==").expect("requirements are pinned with =="))
        .filter(|(name, _)| *name != "pytest")
        .collect();
    assert!(
        !pins.is_empty(),
        "tests/python/requirements.txt pins no client"
    );
    for (client, version) in pins {
        let cell = named(client);
        assert!(
            cell == version || cell.starts_with(&format!("{version} (")),
            "docs/compatibility.md says {client} {cell}; tests/python/requirements.txt pins \
             {version}: update the document"
        );
    }
    // rdkafka and its librdkafka (rdkafka-sys's version after the `+`).
    let lock = read("Cargo.lock");
    let rdkafka = locked(&lock, "rdkafka");
    let sys = locked(&lock, "rdkafka-sys");
    let librdkafka = sys
        .split_once('+')
        .expect("rdkafka-sys names its librdkafka")
        .1;
    assert_eq!(
        named("rdkafka"),
        format!("{rdkafka} (librdkafka {librdkafka})"),
        "docs/compatibility.md's rdkafka row differs from Cargo.lock: update the document"
    );
}

/// A `kcat` command with the system's librdkafka: `cargo test` puts the directory of the
/// librdkafka rdkafka-sys builds (2.12) on `LD_LIBRARY_PATH`, and kcat would load that one.
fn kcat() -> Command {
    let mut command = Command::new("kcat");
    command.env_remove("LD_LIBRARY_PATH");
    command
}

/// kcat's version and its librdkafka's, from `kcat -V`.
fn kcat_version() -> (String, String) {
    let out = kcat().arg("-V").output().unwrap_or_else(|e| {
        panic!("cannot run kcat ({e}): install Debian's (apt-get install kcat; .ci/run does)")
    });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let after = |word: &str| -> String {
        let at = text
            .find(word)
            .unwrap_or_else(|| panic!("`kcat -V` does not say `{word}`: {text}"))
            + word.len();
        text[at..]
            .split(|c: char| c.is_whitespace() || c == ',' || c == ')')
            .next()
            .expect("a version")
            .to_string()
    };
    (after("Version "), after("librdkafka "))
}

/// The batches stored in `partition` of `TOPIC`, fetched raw from its leader: per batch its
/// base offset, compression codec (the low 3 bits of its attributes) and record count.
fn stored_batches(cluster: &Cluster, partition: i32) -> Vec<(i64, i16, i32)> {
    let leader = cluster.leaders()[&partition];
    let port = cluster.kafka[(leader - 1) as usize];
    let mut batches = Vec::new();
    let mut offset = 0i64;
    loop {
        let mut wanted = FetchPartition::default();
        wanted.partition = partition;
        wanted.fetch_offset = offset;
        wanted.partition_max_bytes = 1 << 20;
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_static_str(TOPIC));
        topic.partitions = vec![wanted];
        let mut request = FetchRequest::default();
        request.max_wait_ms = 0;
        request.max_bytes = 1 << 20;
        request.topics = vec![topic];
        let mut answer: FetchResponse = call(port, ApiKey::Fetch, 11, &request);
        let data = answer.responses.remove(0).partitions.remove(0);
        assert_eq!(
            data.error_code, 0,
            "fetch of partition {partition} from node {leader}"
        );
        let mut records = data.records.unwrap_or_default();
        while records.len() >= 61 {
            let length = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
            let total = 12 + length as usize;
            if records.len() < total {
                break;
            }
            let base = i64::from_be_bytes(records[0..8].try_into().expect("8 bytes"));
            let attributes = i16::from_be_bytes(records[21..23].try_into().expect("2 bytes"));
            let count = i32::from_be_bytes(records[57..61].try_into().expect("4 bytes"));
            let last_delta = i32::from_be_bytes(records[23..27].try_into().expect("4 bytes"));
            batches.push((base, attributes & 0x7, count));
            offset = base + i64::from(last_delta) + 1;
            records = records.slice(total..);
        }
        if offset >= data.high_watermark {
            return batches;
        }
    }
}

#[test]
fn kcat_from_debian_sends_gzip_snappy_lz4_and_zstd_batches_that_are_stored_compressed() {
    // The version the document names is the one run here.
    let (version, librdkafka) = kcat_version();
    let tested = tested_clients();
    assert_eq!(
        tested.get("kcat").map(String::as_str),
        Some(format!("{version} (librdkafka {librdkafka})").as_str()),
        "docs/compatibility.md's kcat row differs from the kcat installed here: update the \
         document (or install Debian's kcat)"
    );
    let cluster = Cluster::start();
    const LINES: usize = 300;
    // Partition i gets codec i + 1: Kafka's numbers are 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    for (codec, name) in (1i16..).zip(["gzip", "snappy", "lz4", "zstd"]) {
        let partition = i32::from(codec - 1);
        assert!(partition < PARTITIONS);
        // Compressible values: librdkafka sends a batch uncompressed when compressing does
        // not make it smaller.
        let lines: Vec<String> = (0..LINES)
            .map(|i| format!("{name}-{i:04}-{}", "compressible ".repeat(10)))
            .collect();
        let mut child = kcat()
            .args(["-P", "-b", &cluster.bootstrap(), "-t", TOPIC])
            .args(["-p", &partition.to_string(), "-z", name])
            .args(["-X", "acks=all", "-X", "message.timeout.ms=30000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kcat");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all((lines.join("\n") + "\n").as_bytes())
            .expect("write to kcat");
        let produced = child.wait_with_output().expect("kcat -P");
        assert!(
            produced.status.success(),
            "kcat -P -z {name}: {}",
            String::from_utf8_lossy(&produced.stderr)
        );

        let batches = stored_batches(&cluster, partition);
        let records: i32 = batches.iter().map(|b| b.2).sum();
        assert_eq!(records as usize, LINES, "{name}: batches {batches:?}");
        for &(base, stored, _) in &batches {
            assert_eq!(
                stored, codec,
                "kcat -z {name}: the batch at offset {base} of partition {partition} is stored \
                 with codec {stored} (0 is none), not {codec}: librdkafka {librdkafka} did not \
                 compress, which it does only when ApiVersions advertises Produce from v0 \
                 (KAFKA-18659; PRODUCE_ADVERTISED_MIN in node/src/kafka/mod.rs)"
            );
        }

        // And kcat reads them back, decompressed.
        let consumed = kcat()
            .args(["-C", "-b", &cluster.bootstrap(), "-t", TOPIC])
            .args(["-p", &partition.to_string(), "-o", "beginning", "-e", "-q"])
            .args(["-f", "%s\\n"])
            .output()
            .expect("kcat -C");
        assert!(consumed.status.success(), "kcat -C: {consumed:?}");
        let read: Vec<String> = String::from_utf8_lossy(&consumed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            read, lines,
            "{name}: what kcat consumed differs from what it produced"
        );
    }
}

/// CRC-32 (IEEE), for a legacy message's checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A Produce v0-v2 body (the layout those versions share: acks, timeout, then per topic and
/// partition a message set) holding one well-formed magic 1 message for partition 0 of `TOPIC`.
fn legacy_produce_body() -> Vec<u8> {
    let mut message = BytesMut::new();
    message.put_i8(1); // magic
    message.put_i8(0); // attributes: no compression
    message.put_i64(1_700_000_000_000); // timestamp
    message.put_i32(-1); // null key
    message.put_i32(5);
    message.put_slice(b"value");
    let mut set = BytesMut::new();
    set.put_i64(0); // offset
    set.put_i32(4 + message.len() as i32);
    set.put_u32(crc32(&message));
    set.put_slice(&message);
    let mut body = BytesMut::new();
    body.put_i16(-1); // acks=all
    body.put_i32(10_000); // timeout
    body.put_i32(1); // one topic
    body.put_i16(TOPIC.len() as i16);
    body.put_slice(TOPIC.as_bytes());
    body.put_i32(1); // one partition
    body.put_i32(0);
    body.put_i32(set.len() as i32);
    body.put_slice(&set);
    body.to_vec()
}

#[test]
fn produce_v0_to_v2_are_advertised_but_refused_as_kafka_4_does_and_new_versions_are_answered() {
    let mut cluster = Cluster::start();
    let port = cluster.kafka[0];

    // ApiVersions v4, answered in v4 (not with v0's UNSUPPORTED_VERSION) with the advertised
    // ranges: Produce from v0.
    let mut request = ApiVersionsRequest::default();
    request.client_software_name = StrBytes::from_static_str("oxbow-test");
    request.client_software_version = StrBytes::from_static_str("1");
    let versions: ApiVersionsResponse = call(port, ApiKey::ApiVersions, 4, &request);
    assert_eq!(versions.error_code, 0, "ApiVersions v4");
    let answered: Vec<(i16, i16, i16)> = versions
        .api_keys
        .iter()
        .map(|v| (v.api_key, v.min_version, v.max_version))
        .collect();
    let expected: Vec<(i16, i16, i16)> = advertised()
        .map(|(k, min, max)| (k as i16, min, max))
        .collect();
    assert_eq!(answered, expected);
    assert!(answered.contains(&(0, 0, 7)), "Produce advertised as 0-7");

    // Metadata v13: v12 with a top-level error code, NONE.
    let mut request = MetadataRequest::default();
    let mut topic = MetadataRequestTopic::default();
    topic.name = Some(TopicName(StrBytes::from_static_str(TOPIC)));
    request.topics = Some(vec![topic]);
    let metadata: MetadataResponse = call(port, ApiKey::Metadata, 13, &request);
    assert_eq!(
        metadata.error_code, 0,
        "Metadata v13's top-level error code"
    );
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].error_code, 0);
    assert_eq!(metadata.topics[0].partitions.len(), PARTITIONS as usize);
    assert_eq!(metadata.brokers.len(), 3);

    // Produce v0-v2: the connection is closed without an answer, as Kafka 4's broker does
    // (the request header's version is refused, UnsupportedVersionException, and the
    // socket closed), on the leader as on the others; nothing is stored.
    let body = legacy_produce_body();
    let leader = cluster.leaders()[&0];
    for (i, &port) in cluster.kafka.iter().enumerate() {
        for version in 0..=2 {
            assert_eq!(
                raw_request(port, &request_frame(0, version, &body)),
                None,
                "Produce v{version} to node {} was answered",
                i + 1
            );
        }
    }
    cluster.assert_all_alive(std::time::Duration::from_millis(200), "the requests");
    let leader_port = cluster.kafka[(leader - 1) as usize];
    let stored = stored_batches(&cluster, 0);
    assert!(stored.is_empty(), "a refused Produce stored {stored:?}");

    // Produce v3, the lowest served, on a new connection: answered and stored.
    let batch = common::batch(
        &common::records(3, 10),
        kafka_protocol::records::Compression::None,
    );
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(Bytes::from(batch));
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.partition_data = vec![partition];
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    produce.timeout_ms = 10_000;
    produce.topic_data = vec![topic];
    let answer: ProduceResponse = call(leader_port, ApiKey::Produce, 3, &produce);
    let answer = &answer.responses[0].partition_responses[0];
    assert_eq!(
        (answer.error_code, answer.base_offset),
        (0, 0),
        "Produce v3"
    );
    assert_eq!(stored_batches(&cluster, 0), vec![(0, 0, 3)]);
}
