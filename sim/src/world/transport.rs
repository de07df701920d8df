//! Turmoil's TCP as the node runtime's network and as the client's transport.

use std::io;
use std::net::SocketAddr;

use oxbow_node::address::Address;
use oxbow_node::runtime::env::Network;

/// Turmoil's TCP as the node runtime's network. Turmoil listens only on the unspecified
/// address, so a bind to the host's own address binds its port there.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNet;

impl Network for TurmoilNet {
    type Listener = turmoil::net::TcpListener;
    type Read = turmoil::net::tcp::OwnedReadHalf;
    type Write = turmoil::net::tcp::OwnedWriteHalf;

    async fn bind(&self, address: &Address) -> io::Result<Self::Listener> {
        let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), address.port());
        turmoil::net::TcpListener::bind(any).await
    }

    async fn accept(
        listener: &Self::Listener,
    ) -> io::Result<(Self::Read, Self::Write, SocketAddr)> {
        let (stream, remote) = listener.accept().await?;
        let (read, write) = stream.into_split();
        Ok((read, write, remote))
    }

    /// Resolves through turmoil's DNS (its hosts' names; deterministic), at every call.
    async fn connect(
        &self,
        address: &Address,
    ) -> io::Result<(Self::Read, Self::Write, SocketAddr)> {
        let stream = turmoil::net::TcpStream::connect((address.host(), address.port())).await?;
        let socket = stream.peer_addr()?;
        let (read, write) = stream.into_split();
        Ok((read, write, socket))
    }
}

/// Turmoil's TCP as the client's transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilConnector;

impl oxbow_client::transport::Connector for TurmoilConnector {
    fn connect(&self, address: &str) -> oxbow_client::transport::Connecting {
        let address = address.to_string();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(address.as_str()).await?;
            Ok(Box::new(stream) as Box<dyn oxbow_client::transport::Stream>)
        })
    }
}
