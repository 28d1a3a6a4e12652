//! Time as an input.
//!
//! The core never reads a clock: every operation takes `now` as a [`Timestamp`], a count of
//! nanoseconds since an epoch the caller chooses (process start, the first row of a trace,
//! the simulator's virtual zero). Only differences between timestamps matter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A monotonic point in time: nanoseconds since a caller-chosen epoch.
///
/// The engine accepts timestamps in any order. A timestamp earlier than the last one a
/// route has seen is treated by the **clock-skew rule**: it counts as no time having
/// passed (`dt = 0`), so it neither heals nor ages anything, and the route keeps its later
/// timestamp. See [`crate::Engine::report`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp `micros` microseconds after the epoch (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros.saturating_mul(1_000))
    }

    /// A timestamp `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// A timestamp `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch, as a float.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is later (the clock-skew rule).
    pub const fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This timestamp moved `d` earlier (saturating at the epoch).
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(nanos))
    }

    /// This timestamp moved `d` later (saturating at the far future).
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        self.saturating_add(d)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}s", self.0 as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_zero_elapsed() {
        let a = Timestamp::from_millis(10);
        let b = Timestamp::from_millis(4);
        assert_eq!(b.saturating_since(a), Duration::ZERO);
        assert_eq!(a.saturating_since(b), Duration::from_millis(6));
    }

    #[test]
    fn constructors_saturate() {
        assert_eq!(Timestamp::from_secs(u64::MAX).as_nanos(), u64::MAX);
        assert_eq!((Timestamp::from_nanos(u64::MAX - 1) + Duration::from_secs(1)).as_nanos(), u64::MAX);
    }
}
