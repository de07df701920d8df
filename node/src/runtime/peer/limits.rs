//! Bounds on the peer port's connections. Whoever reaches the port can open connections, and
//! each is held through the handshake (up to three `STEP_TIMEOUT` steps): at most
//! `[connections] peer_handshakes_max` are in their handshake at once, and a connection past
//! it is closed at once. Once authenticated, a configured peer has one link: a newer link
//! from the same peer closes the older one (its sender dials again only when it has given
//! up on the older link: a write failed, or it heard nothing back, so the older one is
//! half open or dead), so a peer holds no more than one connection however often it dials.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oxbow_core::ids::NodeId;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// What the peer port's connections count.
#[derive(Debug)]
pub(super) struct PeerLimits {
    /// One permit per connection in its handshake.
    handshakes: Arc<Semaphore>,
    handshakes_max: usize,
    /// Connections refused so far (for the log's rate).
    refused: AtomicU64,
    /// Each peer's current link: its number, and what tells it that it was replaced.
    links: Mutex<BTreeMap<NodeId, (u64, oneshot::Sender<()>)>>,
    /// The next link's number.
    next: AtomicU64,
}

/// An authenticated peer's current link; it unregisters itself when dropped.
#[derive(Debug)]
pub(super) struct Link {
    limits: Arc<PeerLimits>,
    peer: NodeId,
    number: u64,
    replaced: oneshot::Receiver<()>,
}

impl Link {
    /// Resolves once a newer link from the same peer has taken this one's place.
    pub(super) async fn replaced(&mut self) {
        // The sender is only ever dropped (by the newer link's registration), never used.
        let _ = (&mut self.replaced).await;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let mut links = self.limits.links.lock().expect("not poisoned");
        if links
            .get(&self.peer)
            .is_some_and(|(n, _)| *n == self.number)
        {
            links.remove(&self.peer);
        }
    }
}

impl PeerLimits {
    pub(super) fn new(handshakes_max: usize) -> Arc<Self> {
        Arc::new(Self {
            handshakes: Arc::new(Semaphore::new(
                handshakes_max.clamp(1, Semaphore::MAX_PERMITS),
            )),
            handshakes_max,
            refused: AtomicU64::new(0),
            links: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        })
    }

    /// A place for a new connection's handshake, freed when dropped; or why there is none
    /// (with how many were refused so far, and whether this refusal should be logged: the
    /// 1st, 10th, 100th...).
    pub(super) fn handshake(&self) -> Result<OwnedSemaphorePermit, (String, u64, bool)> {
        self.handshakes.clone().try_acquire_owned().map_err(|_| {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            let count = refused.to_string();
            let log = count.starts_with('1') && count[1..].bytes().all(|b| b == b'0');
            (
                format!(
                    "{} peer connections are in their handshake (connections.peer_handshakes_max)",
                    self.handshakes_max
                ),
                refused,
                log,
            )
        })
    }

    /// Makes a new authenticated link from `peer` its current one; the older one, if any,
    /// is told it was replaced.
    pub(super) fn link(self: &Arc<Self>, peer: NodeId) -> Link {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let (replace, replaced) = oneshot::channel();
        // Dropping the older link's sender wakes it.
        drop(
            self.links
                .lock()
                .expect("not poisoned")
                .insert(peer, (number, replace)),
        );
        Link {
            limits: self.clone(),
            peer,
            number,
            replaced,
        }
    }

    /// Peers with a current link (for tests).
    #[cfg(test)]
    fn linked(&self) -> usize {
        self.links.lock().expect("not poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_past_the_limit_are_refused_until_one_ends() {
        let limits = PeerLimits::new(2);
        let first = limits.handshake().expect("first");
        let _second = limits.handshake().expect("second");
        let (why, refused, log) = limits.handshake().expect_err("third");
        assert!(why.contains("connections.peer_handshakes_max"), "{why}");
        assert_eq!((refused, log), (1, true));
        for refused in 2..=10 {
            let (_, count, log) = limits.handshake().expect_err("still full");
            assert_eq!((count, log), (refused, refused == 10));
        }
        drop(first);
        assert!(limits.handshake().is_ok(), "a place was freed");
    }

    #[tokio::test]
    async fn a_newer_link_from_a_peer_replaces_the_older() {
        let limits = PeerLimits::new(1);
        let mut older = limits.link(NodeId(2));
        let mut other = limits.link(NodeId(3));
        let mut newer = limits.link(NodeId(2));
        tokio::time::timeout(std::time::Duration::from_secs(1), older.replaced())
            .await
            .expect("the older link is told");
        let quiet = std::time::Duration::from_millis(20);
        assert!(tokio::time::timeout(quiet, newer.replaced()).await.is_err());
        assert!(tokio::time::timeout(quiet, other.replaced()).await.is_err());
        // The older link ending does not unregister the newer one.
        drop(older);
        assert_eq!(limits.linked(), 2);
        drop(newer);
        drop(other);
        assert_eq!(limits.linked(), 0);
    }
}
