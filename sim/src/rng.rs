//! Seeded randomness with named sub-streams: every consumer draws from its own ChaCha stream
//! derived from (seed, name), so adding a draw in one place does not shift any other.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// One named stream.
pub struct Stream {
    rng: ChaCha8Rng,
}

impl Stream {
    /// The stream `name` of `seed`.
    pub fn new(seed: u64, name: &str) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        // FNV-1a of the name fills the rest of the key.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        key[8..16].copy_from_slice(&h.to_le_bytes());
        key[16..24].copy_from_slice(&(h.rotate_left(17) ^ seed).to_le_bytes());
        Self {
            rng: ChaCha8Rng::from_seed(key),
        }
    }

    /// The stream as a generator of its own (for the node runtime's handshake nonces).
    pub fn into_rng(self) -> ChaCha8Rng {
        self.rng
    }

    /// A uniform draw in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.rng.next_u64() % n
    }

    /// A uniform draw in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.below(high - low + 1)
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    /// A raw 64-bit draw.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// The underlying RNG, for APIs that take one.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}
