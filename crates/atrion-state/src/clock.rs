//! The clock: the one owner of time outside the core. [`Clock`] gives a node's time in two
//! forms read together: monotonic time since the clock's epoch (what the engine decides
//! with, as `atrion_core::Timestamp`: `atrion_sync::EngineClock::now`) and wall-clock
//! milliseconds (what nodes compare with each other, and what a persistent store's TTLs
//! are kept in). Stores take one for their TTLs; the facade, the sync and the policy layer
//! share one per process.
//!
//! One implementation, [`RuntimeClock`], per runtime: [`SystemClock`] on the standard
//! library's `Instant`, [`TokioClock`] on tokio's (paused and advanced in tests). Wall time
//! is the system's time at the clock's creation plus the monotonic time since, so it never
//! jumps with the system clock; [`system_wall_ms`] is the one read of the system's time.
//!
//! [`CounterClock`] is [`SystemClock`] with its monotonic time read from the processor's
//! counter: a few nanoseconds a read where the system's clock costs tens, for the facade's
//! decision path (docs/DESIGN.md §6).

use std::fmt::Debug;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Monotonic time and wall-clock time, read together.
///
/// Monotonic time must be the one the application decides with; wall-clock milliseconds are
/// what nodes compare with each other.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since this clock's epoch.
    fn elapsed(&self) -> Duration;
    /// Now, in milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
}

impl Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock").field("wall_ms", &self.wall_ms()).finish()
    }
}

/// The monotonic instants of one runtime, as a [`RuntimeClock`] reads them.
pub trait Monotonic: Copy + Debug + Send + Sync + 'static {
    /// Now.
    fn now() -> Self;
    /// Time since `self` (zero if `self` is later).
    fn since(self) -> Duration;
}

impl Monotonic for std::time::Instant {
    fn now() -> Self {
        std::time::Instant::now()
    }
    fn since(self) -> Duration {
        std::time::Instant::now().saturating_duration_since(self)
    }
}

impl Monotonic for tokio::time::Instant {
    fn now() -> Self {
        tokio::time::Instant::now()
    }
    fn since(self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self)
    }
}

/// A clock on the instants `I` of one runtime, whose epoch is its creation.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeClock<I> {
    origin: I,
    wall_origin_ms: u64,
}

/// A clock on the standard library's monotonic time: the default of a process.
pub type SystemClock = RuntimeClock<std::time::Instant>;

/// A clock on tokio's time: monotonic, and paused or advanced in tests.
pub type TokioClock = RuntimeClock<tokio::time::Instant>;

impl<I: Monotonic> RuntimeClock<I> {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        RuntimeClock { origin: I::now(), wall_origin_ms: system_wall_ms() }
    }
}

impl<I: Monotonic> Default for RuntimeClock<I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I: Monotonic> Clock for RuntimeClock<I> {
    fn elapsed(&self) -> Duration {
        self.origin.since()
    }

    /// Wall time at creation plus monotonic time since: it never jumps with the system clock.
    fn wall_ms(&self) -> u64 {
        self.wall_origin_ms + self.elapsed().as_millis() as u64
    }
}

/// [`SystemClock`] with its monotonic time read from the processor's counter (x86-64's
/// invariant time-stamp counter, AArch64's system counter), scaled to nanoseconds by a
/// calibration against the system's monotonic time made once per process (at the first
/// creation; a few milliseconds, at most 200). A read costs a few nanoseconds, where the
/// system's clock costs tens: the facade's default, read on every decision. Where the
/// processor has no such counter, it reads the system's monotonic time.
///
/// Its monotonic time runs at the counter's calibrated rate: within parts per million of the
/// system's monotonic time, and without NTP's slewing. Only differences of it matter to the
/// engine (docs/DESIGN.md §2: time is an input). Its wall time is [`SystemClock`]'s (the
/// system's time at creation plus the system's monotonic time since), so that what nodes
/// compare, and stores' TTLs, do not move with the counter's calibration.
///
/// Clones read the same time.
#[derive(Debug, Clone)]
pub struct CounterClock {
    counter: quanta::Clock,
    /// The counter's raw value at creation: the epoch of monotonic time.
    origin: u64,
    /// Wall time.
    system: SystemClock,
}

impl CounterClock {
    /// A clock whose epoch is now (calibrating the counter if this is the process's first).
    pub fn new() -> Self {
        let counter = quanta::Clock::new();
        let system = SystemClock::new();
        let origin = counter.raw();
        CounterClock { counter, origin, system }
    }

    /// Monotonic time since this clock's epoch, in nanoseconds ([`Clock::elapsed`] without
    /// building a `Duration`): what the facade reads on every decision. Zero if the counter
    /// reads earlier than the epoch (a core whose counter lags by a few cycles).
    #[inline]
    pub fn elapsed_nanos(&self) -> u64 {
        self.counter.delta_as_nanos(self.origin, self.counter.raw())
    }
}

impl Default for CounterClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CounterClock {
    #[inline]
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos())
    }

    /// [`SystemClock`]'s wall time: the system's time at creation plus the system's monotonic
    /// time since.
    fn wall_ms(&self) -> u64 {
        self.system.wall_ms()
    }
}

/// The system's wall-clock time, in milliseconds since the Unix epoch (0 before it): for a
/// one-off reading where no clock is shared (a CLI's check of a deadline).
pub fn system_wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_is_monotonic_and_its_wall_time_moves_with_it() {
        let clock = SystemClock::new();
        let (a, wa) = (clock.elapsed(), clock.wall_ms());
        let (b, wb) = (clock.elapsed(), clock.wall_ms());
        assert!(b >= a && wb >= wa);
        assert!(wa.abs_diff(system_wall_ms()) < 60_000);
    }

    #[test]
    fn a_counter_clock_keeps_pace_with_the_system_clock() {
        let counter = CounterClock::new();
        let copy = counter.clone();
        let system = SystemClock::new();
        let wall = counter.wall_ms();
        // The counter's time between two reads lies between the system's inner and outer
        // intervals around them, give or take the calibration: this catches a wrong scale,
        // and asserts nothing of how long anything took.
        let (t0, c0, t1) = (system.elapsed(), counter.elapsed(), system.elapsed());
        std::thread::sleep(Duration::from_millis(50));
        let (t2, c1, t3) = (system.elapsed(), counter.elapsed(), system.elapsed());
        let (inner, outer, counted) = (t2 - t1, t3 - t0, c1 - c0);
        let slack = outer / 20 + Duration::from_micros(100);
        assert!(counted + slack >= inner && counted <= outer + slack, "{counted:?} not within {inner:?}..{outer:?}");
        assert!(copy.elapsed() >= c1, "clones read the same time");
        assert!(counter.wall_ms() >= wall && wall.abs_diff(system_wall_ms()) < 60_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.elapsed(), Duration::from_secs(5));
    }
}
