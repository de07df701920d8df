//! Time as an input. The core never reads a clock: every `handle` call carries a [`Now`] that
//! the driver took from its own clock (tokio in production, the simulated clock in `sim/`).

/// A point on a node's monotonic clock, in nanoseconds since an arbitrary origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Instant(pub u64);

impl Instant {
    /// This instant plus `ms` milliseconds, saturating.
    pub fn plus_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms.saturating_mul(1_000_000)))
    }
}

/// The two clocks a node sees at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: deadlines and timeouts. Never goes backwards (asserted by `Node`).
    pub mono: Instant,
    /// Wall-clock time in Unix milliseconds: Kafka `LogAppendTime` only. May jump either way.
    pub wall_ms: i64,
}
