//! Peer transport: raft messages between nodes over TCP.
//!
//! A connection starts with a handshake in which both ends prove they know the cluster's peer
//! secret and the dialer proves it is a configured peer ([`handshake`]). Then frames follow:
//! `len: u32 LE | crc32: u32 LE | payload`, where the payload is a count and, per message, its
//! group, length and protobuf encoding. All messages the core emits for one peer in one step
//! are one frame; a sender also merges whatever else is queued. Every send has a deadline; a
//! failed connection is dropped and re-dialled with backoff. Raft tolerates the loss.
//!
//! A peer's address may be a host name: it is resolved at every dial (a failed resolution is
//! a failed dial, logged and retried with the same backoff), so a peer whose name comes to
//! point elsewhere (a rescheduled pod, a replaced container) is found again.
//!
//! Every node hears from every reachable peer a few times a second (the core's leader gossip).
//! A receiver that gets no frame for the silence timeout drops the connection (which resets
//! the sender's end), and a sender that has heard nothing from its peer for as long re-dials:
//! the link may be half open (the peer lost the connection, or a one-way partition swallowed
//! what was sent), and TCP alone can take many minutes to notice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbow_core::ids::{GroupId, NodeId};
use oxbow_core::io::GroupMessage;
use oxbow_core::raft::eraftpb::Message;
use protobuf::Message as _;
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub mod handshake;
mod limits;

use self::handshake::Credentials;
use super::env::Network;
use super::Event;
use crate::address::Address;
use crate::config::Config;

/// Largest frame accepted; a larger length is a broken or hostile peer.
const FRAME_MAX: usize = 64 << 20;
/// Message batches queued per peer; past it new ones are dropped (raft retransmits).
const QUEUE_CAPACITY: usize = 1_024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// When each peer was last heard from (any frame on any connection from it).
pub type Heard = Arc<Mutex<BTreeMap<NodeId, tokio::time::Instant>>>;

/// The senders to every peer.
pub struct Peers {
    senders: BTreeMap<NodeId, mpsc::Sender<Vec<GroupMessage>>>,
}

impl Peers {
    /// Starts one sender task per peer.
    pub fn start<N: Network>(
        network: &N,
        config: &Config,
        credentials: &Credentials,
        heard: &Heard,
        silence: Duration,
        shutdown: watch::Receiver<bool>,
        logger: Logger,
    ) -> Self {
        let mut senders = BTreeMap::new();
        for peer in &config.peers {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            senders.insert(NodeId(peer.id), tx);
            let logger = logger.new(slog::o!("peer" => peer.id));
            tokio::spawn(send_loop(
                network.clone(),
                Listening {
                    heard: heard.clone(),
                    peer: NodeId(peer.id),
                    silence,
                },
                Dial {
                    me: config.node(),
                    peer: NodeId(peer.id),
                    address: peer.peer_address.clone(),
                    credentials: credentials.clone(),
                },
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

/// Encodes messages into one frame, writing each message straight into `out` (one copy of
/// the entries, not three).
pub fn encode_frame(messages: &[GroupMessage], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]); // length and checksum, filled in below
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for m in messages {
        out.extend_from_slice(&m.group.0.to_le_bytes());
        let length_at = out.len();
        out.extend_from_slice(&[0u8; 4]);
        m.message.write_to_vec(out).expect("raft messages encode");
        let length = (out.len() - length_at - 4) as u32;
        out[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
    }
    let payload_length = (out.len() - start - 8) as u32;
    let checksum = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&payload_length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// Encodes messages into as many frames as it takes to keep every frame's payload within
/// `limit` bytes (what a receiver accepts), in order; a message that alone passes it is
/// dropped, and the number dropped returned.
pub fn encode_frames(messages: &[GroupMessage], limit: usize, out: &mut Vec<u8>) -> usize {
    const COUNT: usize = 4;
    let mut dropped = 0;
    let mut begin = 0;
    let mut size = COUNT;
    for (i, m) in messages.iter().enumerate() {
        let length = 8 + 4 + m.message.compute_size() as usize;
        if COUNT + length > limit {
            if begin < i {
                encode_frame(&messages[begin..i], out);
            }
            dropped += 1;
            begin = i + 1;
            size = COUNT;
        } else if size + length > limit {
            encode_frame(&messages[begin..i], out);
            begin = i;
            size = COUNT + length;
        } else {
            size += length;
        }
    }
    if begin < messages.len() {
        encode_frame(&messages[begin..], out);
    }
    dropped
}

/// Decodes a frame's payload; `None` if it is malformed. Entry data is sliced out of the
/// payload, not copied.
pub fn decode_payload(payload: &bytes::Bytes) -> Option<Vec<GroupMessage>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<bytes::Bytes> {
        let end = at.checked_add(n).filter(|end| *end <= payload.len())?;
        let out = payload.slice(at..end);
        at = end;
        Some(out)
    };
    let count = u32::from_le_bytes(take(4)?[..].try_into().ok()?) as usize;
    let mut messages = Vec::with_capacity(count.min(4_096));
    for _ in 0..count {
        let group = GroupId(u64::from_le_bytes(take(8)?[..].try_into().ok()?));
        let length = u32::from_le_bytes(take(4)?[..].try_into().ok()?) as usize;
        let message = Message::parse_from_carllerche_bytes(&take(length)?).ok()?;
        messages.push(GroupMessage { group, message });
    }
    if at != payload.len() {
        return None;
    }
    Some(messages)
}

/// The messages of a frame's payload that `from` sent to `me`, checked as the core trusts
/// them to be: well formed, and every message from its sender and for this node. An error
/// says why the link is dropped.
pub fn receive_payload(
    payload: &bytes::Bytes,
    from: NodeId,
    me: NodeId,
) -> Result<Vec<GroupMessage>, &'static str> {
    let messages = decode_payload(payload).ok_or("malformed frame")?;
    if messages
        .iter()
        .any(|m| m.message.from != from.raft_id().0 || m.message.to != me.raft_id().0)
    {
        return Err("message with a wrong sender or recipient");
    }
    Ok(messages)
}

/// What a sender watches of its peer's side.
struct Listening {
    heard: Heard,
    peer: NodeId,
    silence: Duration,
}

impl Listening {
    /// Whether nothing came from the peer for the silence timeout since `since`.
    fn silent_since(&self, since: tokio::time::Instant) -> bool {
        let heard = self
            .heard
            .lock()
            .expect("not poisoned")
            .get(&self.peer)
            .copied();
        let last = heard.map_or(since, |h| h.max(since));
        last.elapsed() > self.silence
    }
}

/// Who dials whom, where, and how it proves itself.
struct Dial {
    me: NodeId,
    peer: NodeId,
    address: Address,
    credentials: Credentials,
}

async fn send_loop<N: Network>(
    network: N,
    listening: Listening,
    dial: Dial,
    mut queue: mpsc::Receiver<Vec<GroupMessage>>,
    mut shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let Dial {
        me,
        peer,
        address,
        credentials,
    } = dial;
    let mut backoff = Duration::from_millis(50);
    let mut frame = Vec::new();
    // What was last warned about since the last connection: a name that does not resolve yet
    // (a pod not yet scheduled) or a peer that refuses this node is warned about once, not at
    // every retry.
    let mut warned: Option<String> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // After the handshake the read half is unused (peers only send), but kept open with
        // the connection. The name is resolved again at every dial.
        let dialled = async {
            let (mut read, mut stream, socket) =
                tokio::time::timeout(CONNECT_TIMEOUT, network.connect(&address))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no connection within {CONNECT_TIMEOUT:?}"),
                        ))
                    })
                    .map_err(|why| {
                        let unresolved = why.kind() == std::io::ErrorKind::NotFound;
                        (
                            unresolved,
                            format!("cannot resolve or reach the peer: {why}"),
                        )
                    })?;
            handshake::dial(&mut read, &mut stream, &credentials, me, peer)
                .await
                .map_err(|why| {
                    let refused = !matches!(why, handshake::Refused::Io(_));
                    (refused, format!("peer handshake failed: {why}"))
                })?;
            Ok::<_, (bool, String)>((read, stream, socket))
        }
        .await;
        let (_read, mut stream, socket) = match dialled {
            Ok(dialled) => dialled,
            Err((worth_a_warning, why)) => {
                // A peer that is down refuses connections all the while: that is not worth a
                // warning. A name that does not resolve, or a peer that refuses this node
                // (another secret, not in its peer list), may be a mistake.
                if worth_a_warning && warned.as_deref() != Some(why.as_str()) {
                    warn!(logger, "cannot connect to the peer; retrying"; "address" => %address, "why" => &why);
                    warned = Some(why);
                } else {
                    debug!(logger, "cannot connect to the peer; retrying"; "address" => %address, "why" => why);
                }
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
        info!(logger, "connected to peer"; "address" => %address, "socket" => %socket);
        warned = None;
        backoff = Duration::from_millis(50);
        let connected = tokio::time::Instant::now();
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                next = queue.recv() => match next {
                    Some(messages) => messages,
                    None => return,
                },
                _ = check.tick() => {
                    if listening.silent_since(connected) {
                        warn!(logger, "nothing heard from the peer; reconnecting";
                            "address" => %address, "silence_ms" => listening.silence.as_millis() as u64);
                        break;
                    }
                    continue;
                }
            };
            let mut batch = first;
            while let Ok(more) = queue.try_recv() {
                batch.extend(more);
                if batch.len() >= 4_096 {
                    break;
                }
            }
            frame.clear();
            let dropped = encode_frames(&batch, FRAME_MAX, &mut frame);
            if dropped > 0 {
                // Raft resends what a peer did not get; one message this large will not go
                // through on a retry either, and says something produced it unbounded.
                warn!(logger, "dropped peer messages larger than a frame";
                    "count" => dropped, "frame_max" => FRAME_MAX);
            }
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

/// What the accepting side of peer links knows: itself, whom it takes, and the secret.
pub struct Accept {
    /// This node.
    pub me: NodeId,
    /// The configured peers; no other node id is taken.
    pub peers: Vec<NodeId>,
    /// The secret and the nonces.
    pub credentials: Credentials,
    /// Connections in their handshake at once (`connections.peer_handshakes_max`).
    pub handshakes_max: usize,
}

/// Accepts peer connections and feeds their messages to the core.
pub async fn listen<N: Network>(
    listener: N::Listener,
    heard: Heard,
    silence: Duration,
    accept: Accept,
    inbox: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
    logger: Logger,
) {
    let Accept {
        me,
        peers,
        credentials,
        handshakes_max,
    } = accept;
    let limits = limits::PeerLimits::new(handshakes_max);
    let accept_logger = logger.clone();
    super::accept_loop::<N, _, _>(
        listener,
        shutdown,
        accept_logger,
        move |mut read, mut write, remote| {
            let inbox = inbox.clone();
            let heard = heard.clone();
            let peers = peers.clone();
            let credentials = credentials.clone();
            let logger = logger.new(slog::o!("remote" => remote.to_string()));
            // Counted as it is accepted, so that connections that never speak are too.
            let slot = limits.handshake();
            let limits = limits.clone();
            async move {
                let slot = match slot {
                    Ok(slot) => slot,
                    Err((why, refused, log)) => {
                        if log {
                            warn!(logger, "refused a peer connection"; "why" => why,
                                "refused_so_far" => refused);
                        }
                        return; // dropping the socket closes it
                    }
                };
                let from = match handshake::accept(&mut read, &mut write, &credentials, me, &peers)
                    .await
                {
                    Ok(from) => from,
                    Err(why @ handshake::Refused::Io(_)) => {
                        debug!(logger, "peer handshake failed"; "why" => %why);
                        return;
                    }
                    Err(why) => {
                        warn!(logger, "refused a peer connection"; "why" => %why);
                        return;
                    }
                };
                drop(slot);
                // The peer's one link: a newer one from it closes this one.
                let mut link = limits.link(from);
                // After the handshake the write half is unused (peers only send), but kept
                // open with the connection.
                let _write = write;
                let received = tokio::select! {
                    received = receive(read, from, me, inbox, heard, silence) => received,
                    () = link.replaced() => Err(Closed::Io(
                        "the peer connected again; its newer connection replaces this one".into(),
                    )),
                };
                if let Err(why) = received {
                    match why {
                        // Links break; the sender re-dials.
                        Closed::Io(why) => debug!(logger, "peer connection closed"; "why" => why),
                        // An authenticated peer sent what this node refuses: a bug somewhere.
                        Closed::Refused(why) => {
                            warn!(logger, "closed a peer connection that sent a bad frame"; "why" => why)
                        }
                    }
                }
            }
        },
    )
    .await;
}

/// Why a peer connection was closed.
enum Closed {
    /// The stream broke or went silent.
    Io(String),
    /// The peer sent something this node refuses.
    Refused(String),
}

async fn receive(
    mut stream: impl AsyncRead + Unpin,
    from: NodeId,
    me: NodeId,
    inbox: mpsc::Sender<Event>,
    heard: Heard,
    silence: Duration,
) -> Result<(), Closed> {
    let mut header = [0u8; 8];
    loop {
        // A live peer sends a frame every gossip interval. Silence means the stream is stuck
        // (a one-way partition swallowed part of it): dropping it resets the peer's end, so
        // the peer re-dials.
        tokio::time::timeout(silence, stream.read_exact(&mut header))
            .await
            .map_err(|_| {
                Closed::Io(format!(
                    "nothing from the peer for {} ms",
                    silence.as_millis()
                ))
            })?
            .map_err(|e| Closed::Io(e.to_string()))?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
        if len > FRAME_MAX {
            return Err(Closed::Refused(format!(
                "frame of {len} bytes is over the limit of {FRAME_MAX}"
            )));
        }
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| Closed::Io(e.to_string()))?;
        if crc32fast::hash(&payload) != crc {
            return Err(Closed::Refused("frame checksum mismatch".into()));
        }
        let messages = receive_payload(&bytes::Bytes::from(payload), from, me)
            .map_err(|why| Closed::Refused(why.into()))?;
        heard
            .lock()
            .expect("not poisoned")
            .insert(from, tokio::time::Instant::now());
        if inbox.send(Event::Peer { from, messages }).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::raft::eraftpb::Entry;

    #[test]
    fn frames_round_trip_and_refuse_damage() {
        let entry = Entry {
            data: bytes::Bytes::from_static(b"batch bytes"),
            ..Entry::default()
        };
        let mut message = Message {
            from: 1,
            to: 2,
            term: 7,
            ..Message::default()
        };
        message.set_entries(vec![entry].into());
        let messages = vec![
            GroupMessage {
                group: GroupId(3),
                message: message.clone(),
            },
            GroupMessage {
                group: GroupId(4),
                message,
            },
        ];
        let mut frame = Vec::new();
        encode_frame(&messages, &mut frame);
        let length = u32::from_le_bytes(frame[0..4].try_into().expect("4")) as usize;
        assert_eq!(length, frame.len() - 8);
        assert_eq!(
            crc32fast::hash(&frame[8..]),
            u32::from_le_bytes(frame[4..8].try_into().expect("4"))
        );
        let payload = bytes::Bytes::copy_from_slice(&frame[8..]);
        assert_eq!(decode_payload(&payload), Some(messages));
        for cut in 0..payload.len() {
            assert_eq!(
                decode_payload(&payload.slice(..cut)),
                None,
                "a truncated payload at {cut}"
            );
        }
    }

    /// Many messages become several frames, each within the limit, that decode back to the
    /// same messages in order; a message larger than any frame is dropped and counted.
    #[test]
    fn frames_stay_within_the_limit() {
        let message = |group: u64, bytes: usize| {
            let entry = Entry {
                data: bytes::Bytes::from(vec![group as u8; bytes]),
                ..Entry::default()
            };
            let mut message = Message {
                from: 1,
                to: 2,
                term: 3,
                ..Message::default()
            };
            message.set_entries(vec![entry].into());
            GroupMessage {
                group: GroupId(group),
                message,
            }
        };
        let mut messages: Vec<GroupMessage> = (0..40).map(|g| message(g, 300)).collect();
        messages.insert(17, message(99, 5_000));
        let limit = 1_000;
        let mut out = Vec::new();
        assert_eq!(encode_frames(&messages, limit, &mut out), 1);
        let mut decoded = Vec::new();
        let mut frames = 0;
        let mut at = 0;
        while at < out.len() {
            let length = u32::from_le_bytes(out[at..at + 4].try_into().expect("4")) as usize;
            assert!(length <= limit, "a frame of {length} bytes");
            let payload = bytes::Bytes::copy_from_slice(&out[at + 8..at + 8 + length]);
            decoded.extend(decode_payload(&payload).expect("decodes"));
            at += 8 + length;
            frames += 1;
        }
        assert!(frames > 10, "{frames} frames");
        messages.remove(17);
        assert_eq!(decoded, messages);
    }

    /// A network whose connections end at once (so every handshake fails and the sender
    /// dials again), recording the address it was asked for at each dial.
    #[derive(Clone, Default)]
    struct RecordingNet {
        dialled: Arc<Mutex<Vec<String>>>,
    }

    impl Network for RecordingNet {
        type Listener = ();
        type Read = tokio::io::ReadHalf<tokio::io::DuplexStream>;
        type Write = tokio::io::WriteHalf<tokio::io::DuplexStream>;

        async fn bind(&self, _: &Address) -> std::io::Result<()> {
            Ok(())
        }

        async fn accept(
            _: &(),
        ) -> std::io::Result<(Self::Read, Self::Write, std::net::SocketAddr)> {
            Err(std::io::Error::other("nothing listens here"))
        }

        async fn connect(
            &self,
            address: &Address,
        ) -> std::io::Result<(Self::Read, Self::Write, std::net::SocketAddr)> {
            self.dialled
                .lock()
                .expect("not poisoned")
                .push(address.to_string());
            let (ours, _theirs) = tokio::io::duplex(64);
            let (read, write) = tokio::io::split(ours);
            Ok((read, write, ([127, 0, 0, 1], 1).into()))
        }
    }

    /// A peer's host name is handed to the network at every dial, and the network resolves
    /// it there (`TokioNet::connect`), so a name that comes to point elsewhere (a pod
    /// rescheduled) is followed after a connection fails, rather than an address resolved
    /// once.
    #[tokio::test]
    async fn every_dial_resolves_the_peers_name_again() {
        let network = RecordingNet::default();
        let (stop, shutdown) = watch::channel(false);
        let (_queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let address: Address = "peer-2.oxbow.svc.cluster.local:9093"
            .parse()
            .expect("a name");
        let sender = tokio::spawn(send_loop(
            network.clone(),
            Listening {
                heard: Heard::default(),
                peer: NodeId(2),
                silence: Duration::from_secs(5),
            },
            Dial {
                me: NodeId(1),
                peer: NodeId(2),
                address: address.clone(),
                credentials: Credentials::new(
                    b"a secret of thirty-two bytes or more",
                    Box::new(<rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(7)),
                ),
            },
            rx,
            shutdown,
            Logger::root(slog::Discard, slog::o!()),
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        stop.send(true).expect("the sender listens");
        sender.await.expect("the sender stops");
        let dialled = network.dialled.lock().expect("not poisoned").clone();
        assert!(dialled.len() >= 3, "dialled {dialled:?}");
        assert!(
            dialled.iter().all(|a| *a == address.to_string()),
            "{dialled:?}"
        );
    }

    proptest::proptest! {
        // A fixed seed, so CI runs the same cases every time.
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0b0b),
            ..proptest::test_runner::Config::default()
        })]

        /// A peer's payload is network input: any bytes decode to messages or to `None`,
        /// never to a panic.
        #[test]
        fn decoding_arbitrary_payloads_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode_payload(&bytes::Bytes::from(data));
        }
    }
}
