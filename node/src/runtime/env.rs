//! Everything a node takes from the outside world, so that one runtime runs in production and
//! inside the simulator: the network, the disk and its writer, the clock, the seed.
//!
//! Production uses [`TokioNet`], [`FsDisk`](crate::storage::FsDisk) with a writer thread,
//! [`Clock::system`] and a seed from the time. The simulator plugs in turmoil's TCP, a
//! [`SharedSimDisk`](crate::storage::SharedSimDisk) with a writer task, and a clock of its own
//! (offset and drift per node).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oxbow_core::node::PlantedBugs;
use oxbow_core::time::{Instant, Now};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::address::Address;

/// Opens listeners and connections. Streams come back already split into their halves.
pub trait Network: Clone + Send + Sync + 'static {
    /// A bound listener.
    type Listener: Send + Sync + 'static;
    /// The reading half of a stream.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The writing half of a stream.
    type Write: AsyncWrite + Unpin + Send + 'static;

    /// Binds a listener; a host name is resolved, and the first of its addresses that can be
    /// bound is (as Kafka binds a listener's host).
    fn bind(&self, address: &Address) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Waits for the next connection (no-delay set where it applies).
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Read, Self::Write, SocketAddr)>> + Send;

    /// Connects to `address` (no-delay set where it applies), resolving its host name now, at
    /// every call, so that a name that comes to point elsewhere is followed; gives the socket
    /// address it connected to. A name that does not resolve is an error of kind `NotFound`.
    fn connect(
        &self,
        address: &Address,
    ) -> impl Future<Output = io::Result<(Self::Read, Self::Write, SocketAddr)>> + Send;
}

/// Real TCP through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Network for TokioNet {
    type Listener = tokio::net::TcpListener;
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;

    async fn bind(&self, address: &Address) -> io::Result<Self::Listener> {
        let mut failure = None;
        for socket in resolve(address).await? {
            match tokio::net::TcpListener::bind(socket).await {
                Ok(listener) => return Ok(listener),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.expect("resolve gives at least one address"))
    }

    async fn accept(
        listener: &Self::Listener,
    ) -> io::Result<(Self::Read, Self::Write, SocketAddr)> {
        let (stream, remote) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Ok((read, write, remote))
    }

    async fn connect(
        &self,
        address: &Address,
    ) -> io::Result<(Self::Read, Self::Write, SocketAddr)> {
        let mut failure = None;
        for socket in resolve(address).await? {
            match tokio::net::TcpStream::connect(socket).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let (read, write) = stream.into_split();
                    return Ok((read, write, socket));
                }
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.expect("resolve gives at least one address"))
    }
}

/// The socket addresses `address` names now, through the system's resolver (an IP literal
/// needs none): at least one, or an error of kind `NotFound` that names the host.
pub async fn resolve(address: &Address) -> io::Result<Vec<SocketAddr>> {
    if let Some(socket) = address.socket_addr() {
        return Ok(vec![socket]);
    }
    let not_found = |why: String| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve {}: {why}", address.host()),
        )
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host((address.host(), address.port()))
        .await
        .map_err(|e| not_found(e.to_string()))?
        .collect();
    if found.is_empty() {
        return Err(not_found("no address".into()));
    }
    Ok(found)
}

/// The node's clock: the only place the runtime reads time for the core.
#[derive(Clone)]
pub struct Clock {
    now: Arc<dyn Fn() -> Now + Send + Sync>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock").finish_non_exhaustive()
    }
}

impl Clock {
    /// The machine's clocks: monotonic time from zero at creation, wall time from the system.
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    pub fn system() -> Self {
        let start = std::time::Instant::now();
        Self::from_fn(move || {
            let wall_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Now {
                mono: Instant(start.elapsed().as_nanos() as u64),
                wall_ms,
            }
        })
    }

    /// A clock read through `now` (the simulator's: offsets and drift per node).
    pub fn from_fn(now: impl Fn() -> Now + Send + Sync + 'static) -> Self {
        Self { now: Arc::new(now) }
    }

    /// Now, as the core wants it.
    pub fn now(&self) -> Now {
        (self.now)()
    }
}

/// How the disk writer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterMode {
    /// A thread of its own, blocking on the disk (production).
    Thread,
    /// A task on the node's runtime; each fsync takes `sync_latency` of (simulated) time.
    Task {
        /// How long one group's fsync takes.
        sync_latency: Duration,
    },
}

/// Where producer-id reservations are kept (see `producer_ids`).
pub trait ProducerIdStore: Send + 'static {
    /// The first id not yet reserved by an earlier run (0 when none ever was).
    fn load(&mut self) -> io::Result<u64>;
    /// Durably records that ids below `until` are reserved.
    fn save(&mut self, until: u64) -> io::Result<()>;
}

/// What a node is given besides its configuration.
pub struct Environment<N, D> {
    /// Listeners and connections.
    pub network: N,
    /// The data directory.
    pub disk: D,
    /// How writes reach the disk.
    pub writer: WriterMode,
    /// Producer-id reservations.
    pub producer_ids: Box<dyn ProducerIdStore>,
    /// Time for the core.
    pub clock: Clock,
    /// Seeds the core's RNG (election jitter).
    pub seed: u64,
    /// Counts this node's starts; distinguishes RNG streams across restarts.
    pub incarnation: u64,
    /// Bugs to plant in the core (the simulator's checker must catch them); none in production.
    pub planted: PlantedBugs,
    /// Sees every trace event of the core as it happens (the simulator checks cluster invariants
    /// with it: one leader per term, identical applied prefixes, monotonic high watermarks);
    /// none in production.
    pub observer: Option<Observer>,
    /// Nonces for the peer handshake (and a secret for a node without peers): the operating
    /// system's randomness in production, drawn from the seed in the simulator.
    pub nonces: Box<dyn rand_core::RngCore + Send>,
}

/// See [`Environment::observer`].
pub type Observer = Box<dyn FnMut(&oxbow_core::io::TraceEvent) + Send>;

impl<N, D> std::fmt::Debug for Environment<N, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("writer", &self.writer)
            .field("seed", &self.seed)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

/// A seed for a production node's RNG (production runs need no replay).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub fn time_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names go through the system's resolver, IP literals do not, and a name that does not
    /// resolve is `NotFound` (which the peer sender warns about) naming the host.
    #[tokio::test]
    async fn names_resolve_at_each_call_and_failures_name_the_host() {
        let literal: Address = "10.1.2.3:19092".parse().expect("valid");
        assert_eq!(
            resolve(&literal).await.expect("a literal"),
            vec!["10.1.2.3:19092".parse::<SocketAddr>().expect("valid")]
        );
        let local: Address = "localhost:19092".parse().expect("valid");
        let found = resolve(&local).await.expect("localhost resolves");
        assert!(
            found
                .iter()
                .all(|s| s.ip().is_loopback() && s.port() == 19092),
            "{found:?}"
        );
        // `.invalid` never resolves (RFC 2606).
        let missing: Address = "oxbow-peer.invalid:19092".parse().expect("valid");
        let error = resolve(&missing).await.expect_err("does not resolve");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("oxbow-peer.invalid"), "{error}");
        let error = TokioNet.connect(&missing).await.expect_err("no connection");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
