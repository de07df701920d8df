//! How the client reaches a broker: anything that connects to an address and gives back a
//! byte stream. [`TcpConnector`] is tokio TCP; the simulator plugs in turmoil's TCP.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a broker.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connection attempt in progress.
pub type Connecting = Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>> + Send>>;

/// Opens byte streams to brokers.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `address` (`host:port`).
    fn connect(&self, address: &str) -> Connecting;
}

/// Plain TCP through tokio, with no-delay set.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, address: &str) -> Connecting {
        let address = address.to_string();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Stream>)
        })
    }
}
