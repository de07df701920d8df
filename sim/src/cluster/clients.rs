//! The data workload: producing clients (plain acks=all, plain acks=1 and idempotent), their
//! retries and the checker's view of every attempt, and the readers that fetch each group as
//! a consumer would.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use oxbow_core::ids::{GroupId, Offset, RequestId};
use oxbow_core::io::{
    Acks, FetchError, FetchRequest, Input, ProduceError, ProduceRequest, Request, Response,
};

use super::{Cluster, Event, InFlight, EPOCH_MS, REQUEST_TIMEOUT_MS};
use crate::options::ClientKind;

impl Cluster {
    pub(super) fn client_send(&mut self, client: usize) {
        if self.clients[client].in_flight.is_some() {
            return;
        }
        // Once healed, a group that has shown progress gets no more writes, so that its
        // replicas can be seen to converge.
        if self.liveness
            && self.live_acks.contains(&self.clients[client].group)
            && self.clients[client].retry.is_none()
        {
            return;
        }
        let c = &mut self.clients[client];
        let (batch, value, crc) = match (&c.retry, c.kind) {
            (Some(retry), ClientKind::Idempotent) => retry.clone(),
            _ => {
                c.counter += 1;
                let value = format!("c{client}-v{}", c.counter);
                let (producer_id, sequence) = if c.kind == ClientKind::Idempotent {
                    (c.producer_id, c.sequence)
                } else {
                    (-1, -1)
                };
                let batch = encode_batch(producer_id, sequence, &value);
                let crc = u32::from_be_bytes(batch[17..21].try_into().expect("crc"));
                if c.kind == ClientKind::Idempotent {
                    c.retry = Some((batch.clone(), value.clone(), crc));
                }
                (batch, value, crc)
            }
        };
        let acks = if c.kind == ClientKind::PlainLeader {
            Acks::Leader
        } else {
            Acks::All
        };
        let group = c.group;
        let mut node = c.leader_guess;
        if self.slots[node].running.is_none() {
            node = self.workload.below(self.options.nodes as u64) as usize;
            self.clients[client].leader_guess = node;
        }
        self.next_request += 1;
        let request = RequestId(self.next_request);
        self.stats.produced += 1;
        self.checker.sent(&value);
        if self.slots[node].running.is_none() {
            // Nobody to talk to: try again shortly.
            self.checker
                .definitely_failed_attempt(&value, self.clients[client].kind);
            self.retry_later(client);
            return;
        }
        self.mix(&[20, self.now_us, client as u64, node as u64]);
        self.requests.insert(request, client);
        self.clients[client].in_flight = Some(InFlight {
            request,
            node,
            value,
            crc,
        });
        let produce = ProduceRequest {
            group,
            acks,
            batch,
            timeout_ms: REQUEST_TIMEOUT_MS,
            transactional_id: None,
        };
        self.feed(
            node,
            Input::Request {
                id: request,
                request: Request::Produce(produce),
            },
        );
    }

    /// A reader fetches its group from where it is, as a consumer would, every few ms.
    pub(super) fn read_send(&mut self, group: GroupId) {
        let pause = self.read_rng.between(2, 20) * 1_000;
        self.schedule(self.now_us + pause, Event::Read { group });
        let (offset, node) = self.readers[&group];
        if self.slots[node].running.is_none() || self.reads.values().any(|(g, _)| *g == group) {
            let guess = self.read_rng.below(self.options.nodes as u64) as usize;
            self.readers.insert(group, (offset, guess));
            return;
        }
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.reads.insert(id, (group, node));
        self.mix(&[40, self.now_us, group.0, node as u64, offset.0 as u64]);
        let request = Request::Fetch(FetchRequest {
            group,
            offset,
            max_bytes: 64 << 10,
            current_leader_epoch: -1,
            read_committed: false,
        });
        self.feed(node, Input::Request { id, request });
    }

    pub(super) fn read_reply(&mut self, group: GroupId, response: Response) {
        let Response::Fetch(result) = response else {
            panic!("a fetch answered with {response:?}")
        };
        let (offset, node) = self.readers[&group];
        match result {
            Ok(data) => {
                let mut next = offset;
                for batch in &data.batches {
                    let decoded = RecordBatchDecoder::decode(&mut batch.clone())
                        .expect("served batches decode");
                    for record in decoded.records.into_iter().filter(|r| r.offset >= offset.0) {
                        let value = record
                            .value
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                            .unwrap_or_default();
                        self.checker.read(group, Offset(record.offset), &value);
                        next = Offset(record.offset + 1);
                    }
                }
                self.stats.records_read += next.0.saturating_sub(offset.0) as u64;
                self.readers.insert(group, (next, node));
            }
            Err(FetchError::NotLeader { leader }) => {
                let guess = match leader {
                    Some(n) => (n.0 - 1) as usize,
                    None => self.read_rng.below(self.options.nodes as u64) as usize,
                };
                self.readers.insert(group, (offset, guess));
            }
            // Retention moved the log start past the reader, or a new leader's log is behind
            // what it read (it must catch up): start again from the log start.
            Err(FetchError::OffsetOutOfRange {
                log_start_offset,
                high_watermark,
            }) => {
                let restart = if offset < log_start_offset {
                    log_start_offset
                } else {
                    offset.min(high_watermark)
                };
                self.readers.insert(group, (restart, node));
            }
            Err(FetchError::UnknownTopicOrPartition) => {}
            Err(error @ FetchError::LeaderEpoch(_)) => {
                unreachable!("the readers check no leader epoch: {error:?}")
            }
        }
    }

    fn retry_later(&mut self, client: usize) {
        let pause = self.workload.between(
            self.options.produce_pause_ms.0,
            self.options.produce_pause_ms.1,
        ) * 1_000;
        self.schedule(self.now_us + pause, Event::ClientSend { client });
    }

    pub(super) fn client_reply(&mut self, id: RequestId, response: Response) {
        let Some(client) = self.requests.remove(&id) else {
            return; // a reply to a request whose node crashed and came back cannot happen; fetches
        };
        let flight = self.clients[client]
            .in_flight
            .take()
            .expect("a request in flight");
        assert_eq!(flight.request, id);
        let Response::Produce(result) = response else {
            panic!("produce answered with a fetch response")
        };
        let kind = self.clients[client].kind;
        let group = self.clients[client].group;
        let ok = match result {
            Ok(ack) => {
                self.stats.acknowledged += 1;
                if kind != ClientKind::PlainLeader {
                    self.checker
                        .acknowledged(group, ack.base_offset, &flight.value, flight.crc);
                    if self.liveness {
                        self.live_acks.insert(group);
                    }
                }
                true
            }
            Err(error) => {
                if let ProduceError::NotLeader { leader } = &error {
                    self.clients[client].leader_guess = match leader {
                        Some(n) => (n.0 - 1) as usize,
                        None => self.workload.below(self.options.nodes as u64) as usize,
                    };
                }
                if let ProduceError::OutOfOrderSequence { expected, received } = &error {
                    self.checker.violation(format!(
                        "client {client}: idempotent batch refused as out of order (expected {expected}, sent {received}) \
                         although it retried in order"
                    ));
                }
                if error.is_indeterminate() {
                    self.checker.indeterminate(&flight.value);
                } else {
                    self.checker.definitely_failed_attempt(&flight.value, kind);
                }
                false
            }
        };
        self.after_attempt(client, ok);
    }

    pub(super) fn after_attempt(&mut self, client: usize, ok: bool) {
        let c = &mut self.clients[client];
        if ok && c.kind == ClientKind::Idempotent {
            c.retry = None;
            c.sequence += 1;
        }
        self.retry_later(client);
    }
}

fn encode_batch(producer_id: i64, sequence: i32, value: &str) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: if producer_id >= 0 { 0 } else { -1 },
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: EPOCH_MS,
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: IndexMap::new(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}
