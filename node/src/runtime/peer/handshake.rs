//! Peer link authentication: a challenge-response over the cluster's peer secret.
//!
//! The peer port would otherwise believe whoever connects: the hello names its sender, and
//! a forged heartbeat or append reaches the core as if a peer had sent it. So each new link
//! proves, both ways, that its ends know the same secret and are configured members:
//!
//! ```text
//! dialer   -> MAGIC | version: u16 | from: u64 | to: u64 | dialer nonce (16)           (38 bytes)
//! accepter -> MAGIC | accepter nonce (16) | HMAC(secret, ACCEPT | from | to | nonces)  (52 bytes)
//! dialer   -> HMAC(secret, DIAL | from | to | nonces)                                 (32 bytes)
//! ```
//!
//! HMAC-SHA-256, little-endian ids. Each side's MAC covers the other side's fresh nonce, so
//! a recorded handshake cannot be replayed, and the two directions use different labels, so
//! one side's answer cannot be reflected back as the other's. The accepter refuses a `from`
//! that is not one of its configured peers, and a `to` that is not itself. Nonces come from
//! the node's nonce generator: the operating system's randomness in production, the seed in
//! the simulator (so a run still replays bit for bit).
//!
//! This authenticates the link; it does not encrypt it (TLS for peers may come with client
//! TLS). The secret never crosses the wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use oxbow_core::ids::NodeId;
use rand_core::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 4] = b"OXBW";
/// Version 2: the authenticated handshake (version 1 had a bare, unauthenticated hello).
pub const VERSION: u16 = 2;
const NONCE: usize = 16;
const MAC: usize = 32;
const HELLO: usize = 4 + 2 + 8 + 8 + NONCE;
const CHALLENGE: usize = 4 + NONCE + MAC;
const ACCEPT_LABEL: &[u8] = b"oxbow peer accept v2";
const DIAL_LABEL: &[u8] = b"oxbow peer dial v2";
/// How long each step of the handshake may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest peer secret accepted, in bytes.
pub const SECRET_MIN: usize = 16;

/// What both ends of a link need: the cluster's secret and a source of nonces.
#[derive(Clone)]
pub struct Credentials {
    secret: Arc<[u8]>,
    nonces: Arc<Mutex<Box<dyn RngCore + Send>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials over `secret`, drawing nonces from `nonces`.
    pub fn new(secret: &[u8], nonces: Box<dyn RngCore + Send>) -> Self {
        assert!(
            secret.len() >= SECRET_MIN,
            "configuration validation keeps short secrets out"
        );
        Self {
            secret: secret.into(),
            nonces: Arc::new(Mutex::new(nonces)),
        }
    }

    fn nonce(&self) -> [u8; NONCE] {
        let mut nonce = [0u8; NONCE];
        self.nonces
            .lock()
            .expect("not poisoned")
            .fill_bytes(&mut nonce);
        nonce
    }

    fn mac(&self, label: &[u8], from: NodeId, to: NodeId, nonces: &[u8; 2 * NONCE]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(&from.0.to_le_bytes());
        mac.update(&to.0.to_le_bytes());
        mac.update(nonces);
        mac
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Why a handshake failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The stream failed or timed out.
    Io(String),
    /// Not an oxbow peer, or one of another protocol version.
    Protocol(String),
    /// The other end does not know the secret, or is not a configured peer.
    Unauthorized(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Io(why) | Refused::Protocol(why) | Refused::Unauthorized(why) => {
                f.write_str(why)
            }
        }
    }
}

async fn read<R: AsyncRead + Unpin, const N: usize>(stream: &mut R) -> Result<[u8; N], Refused> {
    let mut buffer = [0u8; N];
    tokio::time::timeout(STEP_TIMEOUT, stream.read_exact(&mut buffer))
        .await
        .map_err(|_| Refused::Io("handshake timed out".into()))?
        .map_err(|e| Refused::Io(e.to_string()))?;
    Ok(buffer)
}

async fn write<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8]) -> Result<(), Refused> {
    tokio::time::timeout(STEP_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| Refused::Io("handshake timed out".into()))?
        .map_err(|e| Refused::Io(e.to_string()))
}

/// The dialer's side: `me` proves itself to `peer` and checks that `peer` knows the secret.
pub async fn dial<R, W>(
    read_half: &mut R,
    write_half: &mut W,
    credentials: &Credentials,
    me: NodeId,
    peer: NodeId,
) -> Result<(), Refused>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mine = credentials.nonce();
    let mut hello = Vec::with_capacity(HELLO);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&VERSION.to_le_bytes());
    hello.extend_from_slice(&me.0.to_le_bytes());
    hello.extend_from_slice(&peer.0.to_le_bytes());
    hello.extend_from_slice(&mine);
    write(write_half, &hello).await?;
    let challenge: [u8; CHALLENGE] = read(read_half).await?;
    if &challenge[..4] != MAGIC {
        return Err(Refused::Protocol(
            "the peer address answered with something other than an oxbow node \
             (of this version): check the peer addresses and that every node runs the same oxbow"
                .into(),
        ));
    }
    let mut nonces = [0u8; 2 * NONCE];
    nonces[..NONCE].copy_from_slice(&mine);
    nonces[NONCE..].copy_from_slice(&challenge[4..4 + NONCE]);
    credentials
        .mac(ACCEPT_LABEL, me, peer, &nonces)
        .verify_slice(&challenge[4 + NONCE..])
        .map_err(|_| {
            Refused::Unauthorized(
                "the peer does not know this node's peer secret: give every node the same \
                 `peer_secret` (or `peer_secret_file`)"
                    .into(),
            )
        })?;
    let answer = credentials
        .mac(DIAL_LABEL, me, peer, &nonces)
        .finalize()
        .into_bytes();
    write(write_half, &answer).await
}

/// The accepter's side: returns the authenticated peer, one of `peers`.
pub async fn accept<R, W>(
    read_half: &mut R,
    write_half: &mut W,
    credentials: &Credentials,
    me: NodeId,
    peers: &[NodeId],
) -> Result<NodeId, Refused>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The magic and version first, so that an older node's shorter hello is named as such
    // rather than timing out.
    let head: [u8; 6] = read(read_half).await?;
    if &head[..4] != MAGIC {
        return Err(Refused::Protocol("not an oxbow peer".into()));
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != VERSION {
        return Err(Refused::Protocol(format!(
            "an oxbow peer of protocol version {version} (this node speaks {VERSION}): \
             every node of a cluster must run the same oxbow"
        )));
    }
    let rest: [u8; HELLO - 6] = read(read_half).await?;
    let from = NodeId(u64::from_le_bytes(rest[0..8].try_into().expect("8 bytes")));
    let to = NodeId(u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes")));
    if to != me {
        return Err(Refused::Unauthorized(format!(
            "a peer dialled node {} at this node's address (this is node {}): check the peer addresses",
            to.0, me.0
        )));
    }
    if !peers.contains(&from) {
        return Err(Refused::Unauthorized(format!(
            "a connection claims to be node {}, which is not one of this node's configured peers",
            from.0
        )));
    }
    let mine = credentials.nonce();
    let mut nonces = [0u8; 2 * NONCE];
    nonces[..NONCE].copy_from_slice(&rest[16..16 + NONCE]);
    nonces[NONCE..].copy_from_slice(&mine);
    let mut challenge = Vec::with_capacity(CHALLENGE);
    challenge.extend_from_slice(MAGIC);
    challenge.extend_from_slice(&mine);
    challenge.extend_from_slice(
        &credentials
            .mac(ACCEPT_LABEL, from, me, &nonces)
            .finalize()
            .into_bytes(),
    );
    write(write_half, &challenge).await?;
    let answer: [u8; MAC] = read(read_half).await?;
    credentials
        .mac(DIAL_LABEL, from, me, &nonces)
        .verify_slice(&answer)
        .map_err(|_| {
            Refused::Unauthorized(format!(
                "a connection claiming to be node {} does not know the peer secret",
                from.0
            ))
        })?;
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn credentials(secret: &[u8], seed: u64) -> Credentials {
        Credentials::new(
            secret,
            Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
        )
    }

    const SECRET: &[u8] = b"a secret of the cluster";

    /// Runs a handshake between a dialer and an accepter over an in-memory stream.
    async fn handshake(
        dialer: &Credentials,
        accepter: &Credentials,
        claimed: NodeId,
        peers: &[NodeId],
    ) -> (Result<(), Refused>, Result<NodeId, Refused>) {
        let (a, b) = tokio::io::duplex(1024);
        let (mut a_read, mut a_write) = tokio::io::split(a);
        let (mut b_read, mut b_write) = tokio::io::split(b);
        let dialing = async {
            let result = dial(&mut a_read, &mut a_write, dialer, claimed, NodeId(2)).await;
            // Closing the dialer's end lets a waiting accepter see the refusal.
            let _ = a_write.shutdown().await;
            result
        };
        let accepting = async {
            let result = accept(&mut b_read, &mut b_write, accepter, NodeId(2), peers).await;
            // Closing the accepter's end lets a waiting dialer see the refusal.
            let _ = b_write.shutdown().await;
            result
        };
        tokio::join!(dialing, accepting)
    }

    #[tokio::test]
    async fn peers_with_the_same_secret_authenticate_each_other() {
        let (dialed, accepted) = handshake(
            &credentials(SECRET, 1),
            &credentials(SECRET, 2),
            NodeId(1),
            &[NodeId(1), NodeId(3)],
        )
        .await;
        assert_eq!(dialed, Ok(()));
        assert_eq!(accepted, Ok(NodeId(1)));
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_ends() {
        let (dialed, accepted) = handshake(
            &credentials(b"another secret, not the cluster's", 1),
            &credentials(SECRET, 2),
            NodeId(1),
            &[NodeId(1)],
        )
        .await;
        assert!(
            matches!(dialed, Err(Refused::Unauthorized(_))),
            "{dialed:?}"
        );
        // The dialer hung up without answering: the accepter never authenticated it.
        assert!(accepted.is_err(), "{accepted:?}");
    }

    #[tokio::test]
    async fn an_unconfigured_node_id_is_refused_even_with_the_secret() {
        let (dialed, accepted) = handshake(
            &credentials(SECRET, 1),
            &credentials(SECRET, 2),
            NodeId(9),
            &[NodeId(1)],
        )
        .await;
        assert!(
            matches!(accepted, Err(Refused::Unauthorized(_))),
            "{accepted:?}"
        );
        assert!(dialed.is_err());
    }

    #[tokio::test]
    async fn an_old_unauthenticated_hello_is_refused() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&1u16.to_le_bytes());
        old.extend_from_slice(&1u64.to_le_bytes());
        a.write_all(&old).await.expect("write");
        let (mut b_read, mut b_write) = tokio::io::split(b);
        let accepted = accept(
            &mut b_read,
            &mut b_write,
            &credentials(SECRET, 2),
            NodeId(2),
            &[NodeId(1)],
        )
        .await;
        assert!(
            matches!(accepted, Err(Refused::Protocol(_))),
            "{accepted:?}"
        );
    }

    /// A recorded handshake does not open a second link: the accepter's nonce is fresh, and
    /// the recorded answer covers the old one.
    #[tokio::test]
    async fn a_replayed_handshake_is_refused() {
        let accepter = credentials(SECRET, 2);
        let recorded = dialer_bytes_of_an_honest_run(&credentials(SECRET, 1), &accepter).await;
        assert_eq!(recorded.len(), HELLO + MAC);
        let (mut c, d) = tokio::io::duplex(1024);
        c.write_all(&recorded).await.expect("write");
        let (mut d_read, mut d_write) = tokio::io::split(d);
        let accepted = accept(
            &mut d_read,
            &mut d_write,
            &accepter,
            NodeId(2),
            &[NodeId(1)],
        )
        .await;
        assert!(
            matches!(accepted, Err(Refused::Unauthorized(_))),
            "{accepted:?}"
        );
    }

    /// The bytes a dialer writes in one honest handshake: its hello, then its answer.
    async fn dialer_bytes_of_an_honest_run(
        dialer: &Credentials,
        accepter: &Credentials,
    ) -> Vec<u8> {
        let (a, b) = tokio::io::duplex(1024);
        let (mut a_read, a_write) = tokio::io::split(a);
        let (mut b_read, mut b_write) = tokio::io::split(b);
        let mut recording = RecordingWrite {
            inner: a_write,
            seen: Vec::new(),
        };
        let (dialed, accepted) = tokio::join!(
            dial(&mut a_read, &mut recording, dialer, NodeId(1), NodeId(2)),
            accept(&mut b_read, &mut b_write, accepter, NodeId(2), &[NodeId(1)])
        );
        assert_eq!(dialed, Ok(()));
        assert_eq!(accepted, Ok(NodeId(1)));
        recording.seen
    }

    /// Passes writes through and keeps a copy.
    struct RecordingWrite<W> {
        inner: W,
        seen: Vec<u8>,
    }

    impl<W: AsyncWrite + Unpin> AsyncWrite for RecordingWrite<W> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let this = &mut *self;
            let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
            if let std::task::Poll::Ready(Ok(n)) = poll {
                this.seen.extend_from_slice(&buf[..n]);
            }
            poll
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }
}
