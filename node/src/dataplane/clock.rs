//! Milliseconds since the node started, on tokio's clock (so tests can pause
//! it). Ejection deadlines are stored as these numbers in atomics.

use tokio::time::Instant;

/// A monotonic millisecond clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock reading 0 now.
    pub fn new() -> Self {
        Self { base: Instant::now() }
    }

    /// Milliseconds since [`Clock::new`].
    pub fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// The instant `ms` on this clock.
    pub fn instant(&self, ms: u64) -> Instant {
        self.base + std::time::Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the Unix epoch (0 before it): the wall clock that
/// chaos policies' `expires_at` and snapshots' `taken_at_ms` are written in.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
