//! The fault-injecting TCP proxy of the `partition` nemesis: every link between two nodes, and
//! every client's link to a node, passes through a listener of the runner on 127.0.0.1, which
//! forwards bytes both ways unless the grudge blocks their direction. A blocked direction
//! stalls (bytes are held, not dropped, as a partition that heals before TCP gives up: the
//! nodes' own link timeouts decide when to drop and redial); healing lets them through again.
//!
//! Ends are numbered: node `i` (0-based) is `i`, clients are [`CLIENT`].

use std::collections::BTreeSet;
use std::net::TcpListener as StdListener;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The end that stands for every client.
pub const CLIENT: usize = usize::MAX;

/// Which directions are cut: `(from, to)` means bytes from `from` do not reach `to`.
#[derive(Clone, Default)]
pub struct Grudge(Arc<RwLock<BTreeSet<(usize, usize)>>>);

impl Grudge {
    /// Cuts each of `pairs` (directions) in addition to what is cut.
    pub fn cut(&self, pairs: impl IntoIterator<Item = (usize, usize)>) {
        self.0.write().expect("not poisoned").extend(pairs);
    }

    /// Heals every cut.
    pub fn heal(&self) {
        self.0.write().expect("not poisoned").clear();
    }

    fn blocks(&self, from: usize, to: usize) -> bool {
        self.0.read().expect("not poisoned").contains(&(from, to))
    }
}

/// One proxied link: connections to `listener` come from `from` and go on to `to` at
/// 127.0.0.1:`upstream`.
pub struct Link {
    /// The proxy's listener (bound when the ports were chosen, so none can take it).
    pub listener: StdListener,
    /// Who dials it.
    pub from: usize,
    /// Whom it reaches.
    pub to: usize,
    /// The real port of `to`.
    pub upstream: u16,
}

/// Serves `links` until the runtime ends.
pub fn start(links: Vec<Link>, grudge: &Grudge) -> Result<(), String> {
    for link in links {
        link.listener
            .set_nonblocking(true)
            .map_err(|e| format!("proxy listener: {e}"))?;
        let listener =
            TcpListener::from_std(link.listener).map_err(|e| format!("proxy listener: {e}"))?;
        let grudge = grudge.clone();
        let (from, to, upstream) = (link.from, link.to, link.upstream);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let grudge = grudge.clone();
                tokio::spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return; // the node is down: the dialler sees its connection close
                    };
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let up = forward(in_read, out_write, grudge.clone(), from, to);
                    let down = forward(out_read, in_write, grudge, to, from);
                    // When either direction ends, the connection ends.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
    }
    Ok(())
}

/// Copies bytes from `from`'s side to `to`'s side, holding them while the direction is cut.
async fn forward(
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut write: tokio::net::tcp::OwnedWriteHalf,
    grudge: Grudge,
    from: usize,
    to: usize,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while grudge.blocks(from, to) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_cut_direction_stalls_until_healed() {
        let upstream = echo_server().await;
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let grudge = Grudge::default();
        start(
            vec![Link {
                listener,
                from: 0,
                to: 1,
                upstream,
            }],
            &grudge,
        )
        .expect("proxy");
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut answer = [0u8; 5];
        stream.write_all(b"hello").await.expect("write");
        stream.read_exact(&mut answer).await.expect("echo");
        assert_eq!(&answer, b"hello");
        // The answer's direction (1 to 0) is cut: nothing comes back until the heal.
        grudge.cut([(1, 0)]);
        stream.write_all(b"again").await.expect("write");
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut answer)).await;
        assert!(stalled.is_err(), "a cut direction let bytes through");
        grudge.heal();
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
            .await
            .expect("healed in time")
            .expect("echo");
        assert_eq!(&answer, b"again");
    }
}
