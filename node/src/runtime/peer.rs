//! Peer transport: raft messages between nodes over TCP.
//!
//! A connection starts with a hello (`OXBW`, version, sender node id). Then frames follow:
//! `len: u32 LE | crc32: u32 LE | payload`, where the payload is a count and, per message, its
//! group, length and protobuf encoding. All messages the core emits for one peer in one step
//! are one frame; a sender also merges whatever else is queued. Every send has a deadline; a
//! failed connection is dropped and re-dialled with backoff. Raft tolerates the loss.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use oxbow_core::codec::{Reader, Writer as FieldWriter};
use oxbow_core::ids::{GroupId, NodeId};
use oxbow_core::io::GroupMessage;
use oxbow_core::raft::eraftpb::Message;
use protobuf::Message as _;
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::Event;
use crate::config::Config;

const MAGIC: &[u8; 4] = b"OXBW";
const VERSION: u16 = 1;
/// Largest frame accepted; a larger length is a broken or hostile peer.
const FRAME_MAX: usize = 64 << 20;
/// Message batches queued per peer; past it new ones are dropped (raft retransmits).
const QUEUE_CAPACITY: usize = 1_024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The senders to every peer.
pub struct Peers {
    senders: BTreeMap<NodeId, mpsc::Sender<Vec<GroupMessage>>>,
}

impl Peers {
    /// Starts one sender task per peer.
    pub fn start(config: &Config, shutdown: watch::Receiver<bool>, logger: Logger) -> Self {
        let mut senders = BTreeMap::new();
        for peer in &config.peers {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            senders.insert(NodeId(peer.id), tx);
            let logger = logger.new(slog::o!("peer" => peer.id));
            tokio::spawn(send_loop(
                config.node(),
                peer.peer_address,
                rx,
                shutdown.clone(),
                logger,
            ));
        }
        Self { senders }
    }

    /// Queues messages for a peer; drops them if its queue is full.
    pub fn send(&self, to: NodeId, messages: Vec<GroupMessage>) {
        if let Some(sender) = self.senders.get(&to) {
            let _ = sender.try_send(messages);
        }
    }
}

/// Encodes messages into one frame.
pub fn encode_frame(messages: &[GroupMessage], out: &mut Vec<u8>) {
    let mut w = FieldWriter::default();
    w.u32(messages.len() as u32);
    for m in messages {
        w.u64(m.group.0);
        w.bytes(&m.message.write_to_bytes().expect("raft messages encode"));
    }
    let payload = w.bytes;
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Decodes a frame's payload; `None` if it is malformed.
pub fn decode_payload(payload: &[u8]) -> Option<Vec<GroupMessage>> {
    let mut r = Reader::new(payload);
    let count = r.u32().ok()? as usize;
    let mut messages = Vec::with_capacity(count.min(4_096));
    for _ in 0..count {
        let group = GroupId(r.u64().ok()?);
        let message = Message::parse_from_bytes(r.bytes().ok()?).ok()?;
        messages.push(GroupMessage { group, message });
    }
    r.finish().ok()?;
    Some(messages)
}

async fn send_loop(
    me: NodeId,
    address: SocketAddr,
    mut queue: mpsc::Receiver<Vec<GroupMessage>>,
    mut shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let mut backoff = Duration::from_millis(50);
    let mut frame = Vec::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await
        {
            Ok(Ok(stream)) => stream,
            _ => {
                // Messages queued while the peer is unreachable are stale: drop them.
                while queue.try_recv().is_ok() {}
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&VERSION.to_le_bytes());
        hello.extend_from_slice(&me.0.to_le_bytes());
        if tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&hello))
            .await
            .map_or(true, |r| r.is_err())
        {
            continue;
        }
        info!(logger, "connected to peer"; "address" => %address);
        backoff = Duration::from_millis(50);
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                next = queue.recv() => match next {
                    Some(messages) => messages,
                    None => return,
                },
            };
            let mut batch = first;
            while let Ok(more) = queue.try_recv() {
                batch.extend(more);
                if batch.len() >= 4_096 {
                    break;
                }
            }
            frame.clear();
            encode_frame(&batch, &mut frame);
            match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&frame)).await {
                Ok(Ok(())) => {}
                _ => {
                    warn!(logger, "peer connection lost; reconnecting"; "address" => %address);
                    break;
                }
            }
        }
    }
}

/// Accepts peer connections and feeds their messages to the core.
pub async fn listen(
    listener: TcpListener,
    me: NodeId,
    inbox: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    super::accept_loop(listener, shutdown, move |stream, remote| {
        let inbox = inbox.clone();
        let logger = logger.new(slog::o!("remote" => remote.to_string()));
        async move {
            if let Err(why) = receive(stream, me, inbox).await {
                debug!(logger, "peer connection closed"; "why" => why);
            }
        }
    })
    .await;
}

async fn receive(
    mut stream: TcpStream,
    me: NodeId,
    inbox: mpsc::Sender<Event>,
) -> Result<(), String> {
    let mut hello = [0u8; 14];
    tokio::time::timeout(HELLO_TIMEOUT, stream.read_exact(&mut hello))
        .await
        .map_err(|_| "no hello in time".to_string())?
        .map_err(|e| e.to_string())?;
    if &hello[0..4] != MAGIC || u16::from_le_bytes([hello[4], hello[5]]) != VERSION {
        return Err("not an oxbow peer of this version".into());
    }
    let from = NodeId(u64::from_le_bytes(
        hello[6..14].try_into().expect("8 bytes"),
    ));
    let mut header = [0u8; 8];
    loop {
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| e.to_string())?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
        if len > FRAME_MAX {
            return Err(format!("frame of {len} bytes is over the limit"));
        }
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        if crc32fast::hash(&payload) != crc {
            return Err("frame checksum mismatch".into());
        }
        let messages = decode_payload(&payload).ok_or("malformed frame")?;
        // The core trusts that messages come from their sender and are for this node.
        if messages
            .iter()
            .any(|m| m.message.from != from.0 || m.message.to != me.0)
        {
            return Err("message with a wrong sender or recipient".into());
        }
        if inbox.send(Event::Peer { from, messages }).await.is_err() {
            return Ok(());
        }
    }
}
