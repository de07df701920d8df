//! Limits on client connections: how many are open at once (in all, and per IP address), and
//! how many request bytes the node holds read but not yet answered. (How long a connection may
//! sit idle and how long a request's body may take are enforced where requests are read, how
//! long an answer may take to write where answers are written.) Each limit has a key in the
//! `[connections]` table, with Kafka's name where Kafka has one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ConnectionsConfig;

/// The node's connection limits and what they count.
#[derive(Debug)]
pub(super) struct Limits {
    config: ConnectionsConfig,
    /// Connections open: in all, and per IP address (addresses with none are removed).
    open: Mutex<(usize, BTreeMap<IpAddr, usize>)>,
    /// One permit per byte of request read and not yet answered.
    queued: Arc<Semaphore>,
    /// Connections refused so far (for the log's rate).
    refused: AtomicU64,
}

/// An admitted connection's place; it frees the place when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("not poisoned");
        open.0 -= 1;
        let from_ip = open.1.get_mut(&self.ip).expect("counted when admitted");
        *from_ip -= 1;
        if *from_ip == 0 {
            open.1.remove(&self.ip);
        }
    }
}

impl Limits {
    pub(super) fn new(config: ConnectionsConfig) -> Arc<Self> {
        let bytes = usize::try_from(config.queued_max_request_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            queued: Arc::new(Semaphore::new(bytes)),
            config,
            open: Mutex::new((0, BTreeMap::new())),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection from `ip`, or why there is none (with how many were
    /// refused so far, and whether this refusal should be logged: the 1st, 10th, 100th...).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, (String, u64, bool)> {
        let mut open = self.open.lock().expect("not poisoned");
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        let why = if open.0 >= self.config.max_connections {
            Some(format!(
                "{} connections are open (connections.max_connections)",
                open.0
            ))
        } else if from_ip >= self.config.max_connections_per_ip {
            Some(format!(
                "{from_ip} connections from {ip} are open (connections.max_connections_per_ip)"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            let count = refused.to_string();
            let log = count.starts_with('1') && count[1..].bytes().all(|b| b == b'0');
            return Err((why, refused, log));
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// Waits until `bytes` more request bytes may be held (`bytes` is at most the largest
    /// request, which the configuration keeps within the budget); the permit frees them.
    pub(super) async fn queue(&self, bytes: usize) -> OwnedSemaphorePermit {
        let bytes = u32::try_from(bytes).expect("requests are at most 100 MiB");
        self.queued
            .clone()
            .acquire_many_owned(bytes)
            .await
            .expect("the semaphore is never closed")
    }

    /// How long a connection may go without a request.
    pub(super) fn idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.connections_max_idle_ms)
    }

    /// How long the rest of a request may take to arrive once its size is read (and its
    /// bytes are counted).
    pub(super) fn request_read(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.request_read_timeout_ms)
    }

    /// How long writing one answer may take once it starts.
    pub(super) fn response_write(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.response_write_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_address_and_freed_on_drop() {
        let limits = Limits::new(ConnectionsConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..ConnectionsConfig::default()
        });
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = limits.admit(a).expect("first");
        let _a2 = limits.admit(a).expect("second");
        let (why, refused, log) = limits.admit(a).expect_err("per ip");
        assert!(why.contains("max_connections_per_ip"), "{why}");
        assert_eq!((refused, log), (1, true));
        let _b1 = limits.admit(b).expect("another address");
        let (why, _, _) = limits.admit(b).expect_err("in all");
        assert!(why.contains("max_connections"), "{why}");
        drop(a1);
        assert!(limits.admit(b).is_ok(), "a place was freed");
        assert_eq!(
            limits.open.lock().expect("lock").0,
            2,
            "the last one dropped too"
        );
    }
}
