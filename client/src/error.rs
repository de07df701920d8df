//! The client's errors. Every error that can follow a request that reached the network says
//! whether the request may have taken effect ([`Error::is_indeterminate`]).

use std::fmt;

/// Why a client call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Could not connect, or the connection broke before the request was written: the request
    /// had no effect.
    Connect(String),
    /// The connection broke after the request was written: it may have taken effect.
    Disconnected(String),
    /// No answer in time after the request was written: it may have taken effect.
    Timeout,
    /// The broker answered with a Kafka error code.
    Broker {
        /// The Kafka error code.
        code: i16,
        /// The broker's message, if it sent one.
        message: Option<String>,
    },
    /// The broker sent something this client cannot read, or does not support what is needed.
    Protocol(String),
    /// The caller asked for something impossible (unknown topic or partition, bad argument).
    Invalid(String),
    /// The producer gave a record up before any request carrying it was written (a batch
    /// ahead of it outlived the delivery timeout and the partition's sequence was given up,
    /// or no leader was reachable in time): it is definitely not in the log.
    NotSent(String),
    /// The client was shut down.
    Closed,
}

impl Error {
    /// Whether the request may have taken effect despite the error.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Self::Disconnected(_) | Self::Timeout => true,
            // A broker that timed out waiting for replication may still commit the write.
            Self::Broker { code, .. } => *code == codes::REQUEST_TIMED_OUT,
            _ => false,
        }
    }

    /// Whether retrying (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Disconnected(_) | Self::Timeout => true,
            Self::Broker { code, .. } => codes::retriable(*code),
            _ => false,
        }
    }

    pub(crate) fn broker(code: i16, message: Option<String>) -> Self {
        Self::Broker { code, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot reach the broker: {e}"),
            Self::Disconnected(e) => write!(
                f,
                "connection lost after the request was sent (it may have taken effect): {e}"
            ),
            Self::Timeout => write!(f, "no answer in time (the request may have taken effect)"),
            Self::Broker { code, message } => {
                write!(f, "broker error {} ({code})", codes::name(*code))?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Invalid(e) => write!(f, "{e}"),
            Self::NotSent(e) => write!(f, "never sent (definitely not written): {e}"),
            Self::Closed => write!(f, "the client is closed"),
        }
    }
}

impl std::error::Error for Error {}

/// Kafka error codes the client acts on.
pub mod codes {
    /// No error.
    pub const NONE: i16 = 0;
    /// The offset is outside the partition's log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// Unknown topic or partition.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// No leader right now.
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// The broker is not the partition's leader.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// The broker timed out (the write may still happen).
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// Topic already exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// The broker is not the controller.
    pub const NOT_CONTROLLER: i16 = 41;
    /// Idempotence: the batch is not next in sequence.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// Idempotence: the producer's epoch is stale.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// Idempotence: the broker does not know the producer.
    pub const UNKNOWN_PRODUCER_ID: i16 = 59;

    /// Whether a request failing with `code` may succeed when retried.
    pub fn retriable(code: i16) -> bool {
        matches!(
            code,
            UNKNOWN_TOPIC_OR_PARTITION
                | LEADER_NOT_AVAILABLE
                | NOT_LEADER_OR_FOLLOWER
                | REQUEST_TIMED_OUT
                | NOT_CONTROLLER
                | 13 // NETWORK_EXCEPTION
                | 14 // COORDINATOR_LOAD_IN_PROGRESS
                | 15 // COORDINATOR_NOT_AVAILABLE
                | 19 // NOT_ENOUGH_REPLICAS
                | 20 // NOT_ENOUGH_REPLICAS_AFTER_APPEND
                | 56 // KAFKA_STORAGE_ERROR: a leader under its disk reserve, or a failed log dir
                | 74 // FENCED_LEADER_EPOCH
                | 75 // UNKNOWN_LEADER_EPOCH
                | 88 // UNSTABLE_OFFSET_COMMIT
        )
    }

    /// A short name for a code.
    pub fn name(code: i16) -> &'static str {
        match code {
            NONE => "NONE",
            OFFSET_OUT_OF_RANGE => "OFFSET_OUT_OF_RANGE",
            2 => "CORRUPT_MESSAGE",
            UNKNOWN_TOPIC_OR_PARTITION => "UNKNOWN_TOPIC_OR_PARTITION",
            LEADER_NOT_AVAILABLE => "LEADER_NOT_AVAILABLE",
            NOT_LEADER_OR_FOLLOWER => "NOT_LEADER_OR_FOLLOWER",
            REQUEST_TIMED_OUT => "REQUEST_TIMED_OUT",
            10 => "MESSAGE_TOO_LARGE",
            17 => "INVALID_TOPIC_EXCEPTION",
            35 => "UNSUPPORTED_VERSION",
            TOPIC_ALREADY_EXISTS => "TOPIC_ALREADY_EXISTS",
            37 => "INVALID_PARTITIONS",
            38 => "INVALID_REPLICATION_FACTOR",
            40 => "INVALID_CONFIG",
            NOT_CONTROLLER => "NOT_CONTROLLER",
            42 => "INVALID_REQUEST",
            44 => "POLICY_VIOLATION",
            OUT_OF_ORDER_SEQUENCE_NUMBER => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            INVALID_PRODUCER_EPOCH => "INVALID_PRODUCER_EPOCH",
            UNKNOWN_PRODUCER_ID => "UNKNOWN_PRODUCER_ID",
            87 => "INVALID_RECORD",
            100 => "UNKNOWN_TOPIC_ID",
            _ => "see the Kafka protocol's error codes",
        }
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::codes;

    /// The codes retried are those whose Java exception is a `RetriableException` in Kafka's
    /// `Errors` (among the codes oxbow's brokers send); a refusal that would only repeat is not.
    #[test]
    fn retriable_codes_are_kafkas() {
        for code in [3, 5, 6, 7, 13, 14, 15, 19, 20, 56, 74, 75, 88] {
            assert!(codes::retriable(code), "{code} ({})", codes::name(code));
        }
        for code in [1, 10, 36, 45, 47, 59, 87] {
            assert!(!codes::retriable(code), "{code} ({})", codes::name(code));
        }
    }
}
