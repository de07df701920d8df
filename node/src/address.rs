//! A network address as the configuration gives it: a host (a name or an IP literal) and a
//! port. Names are resolved when they are used (each time a peer link is dialled, once when a
//! port is bound), never when the configuration is read, so a name that resolves later (a
//! StatefulSet pod's DNS name before the pod runs) or to a new address (a container that was
//! replaced) works.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// `host:port`, where the host is a DNS name, an IPv4 literal or a bracketed IPv6 literal
/// (`[::1]:9092`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    host: String,
    port: u16,
}

/// Why text is not a `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

impl Address {
    /// The host: a name, or an IP literal (an IPv6 one without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address, if the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The socket address, if the host is an IP literal (no resolution needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl From<SocketAddr> for Address {
    fn from(address: SocketAddr) -> Self {
        Self {
            host: address.ip().to_string(),
            port: address.port(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Whether `host` is a DNS name (RFC 1123 labels; underscores allowed too, as container names
/// and some resolvers have them).
fn is_host_name(host: &str) -> bool {
    // One trailing dot (a fully qualified name) is allowed; no other label may be empty.
    let name = host.strip_suffix('.').unwrap_or(host);
    host.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let error = |why: &str| AddressError(format!("{text:?} is not a host:port: {why}"));
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| error("the port is missing"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| error("the port must be a number from 0 to 65535"))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| error("an IPv6 address needs its closing bracket"))?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| error("the host in brackets is not an IPv6 address"))?;
            inner
        } else if host.is_empty() {
            return Err(error("the host is missing"));
        } else if host.contains(':') {
            return Err(error("an IPv6 address needs brackets, as in [::1]:9092"));
        } else if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return Err(error("the host is neither an IP address nor a host name"));
        } else {
            host
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Address, AddressError> {
        text.parse()
    }

    #[test]
    fn host_names_and_ip_literals_parse() {
        let named = parse("kafka-0.kafka.default.svc.cluster.local:9092").expect("valid");
        assert_eq!(named.host(), "kafka-0.kafka.default.svc.cluster.local");
        assert_eq!(named.port(), 9092);
        assert_eq!(named.ip(), None);
        for text in [
            "localhost:9092",
            "oxbow_node_1:19092",
            "node-2:1",
            "example.com.:9092",
            "127.0.0.1:9092",
            "0.0.0.0:0",
            "[::1]:9092",
            "[::]:19092",
        ] {
            let address = parse(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(address.to_string(), text, "displays as given");
        }
        let v6 = parse("[::1]:9092").expect("valid");
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.socket_addr(), Some("[::1]:9092".parse().expect("valid")));
        let socket: SocketAddr = "10.0.0.7:9093".parse().expect("valid");
        assert_eq!(
            Address::from(socket),
            parse("10.0.0.7:9093").expect("valid")
        );
        assert_eq!(Address::from(socket).socket_addr(), Some(socket));
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (text, why) in [
            ("localhost", "the port is missing"),
            ("localhost:", "the port must be a number"),
            ("localhost:65536", "the port must be a number"),
            ("localhost:http", "the port must be a number"),
            (":9092", "the host is missing"),
            ("::1:9092", "needs brackets"),
            ("[::1:9092", "closing bracket"),
            ("[localhost]:9092", "not an IPv6 address"),
            ("two words:9092", "neither an IP address nor a host name"),
            ("-leading:9092", "neither an IP address nor a host name"),
            ("a..b:9092", "neither an IP address nor a host name"),
            ("a..b.:9092", "neither an IP address nor a host name"),
            ("a..:9092", "neither an IP address nor a host name"),
            (".:9092", "neither an IP address nor a host name"),
            ("host/path:9092", "neither an IP address nor a host name"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.0.contains(why), "{text}: {error}");
            assert!(error.0.contains(text), "names the text: {error}");
        }
    }
}
