//! Task leases: admission for work that runs minutes or hours (docs/DESIGN.md §2, task
//! leases; the reference's RFC-0010).
//!
//! A lease is admitted like a request ([`crate::Engine::start_lease`] decides on the route at
//! the lease's priority), counts toward the route's work in flight until it ends
//! ([`crate::Engine::active_leases`]), and reports its outcome as one telemetry sample, its
//! latency the lease's duration. It ends in one of four ways ([`LeaseOutcome`]):
//! - completed, well or not ([`crate::Engine::complete_lease`]): reported, `ok` as said;
//! - cancelled ([`crate::Engine::cancel_lease`], what dropping a facade lease does): not
//!   reported, since nothing is known of how the work went;
//! - aborted for running past its longest duration or missing its heartbeats: reported as
//!   a failure, its [`AbortHandle`] fired, removed;
//! - aborted at shutdown ([`crate::Engine::abort_leases`]): fired, not reported.
//!
//! Nothing runs per lease: deadlines sit in one min-heap and are checked when someone looks
//! ([`crate::Engine::sweep_leases`], and every call on a lease checks its own), so a lease
//! that overran is treated as expired whether or not a sweep saw it first.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::{ConfigError, ProfileConfig};
use crate::decision::{Decision, Priority};
use crate::time::Timestamp;

/// A live lease's id: unique among the engine's leases for as long as the engine lives
/// (a slot and its generation), not secret. A server that hands ids to clients signs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(u64);

impl LeaseId {
    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        LeaseId((u64::from(generation) << 32) | u64::from(slot))
    }

    pub(crate) fn slot(self) -> u32 {
        self.0 as u32
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The id as a number (never 0).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from [`LeaseId::as_u64`]; one that names no live lease is simply not found.
    pub fn from_u64(v: u64) -> Self {
        LeaseId(v)
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a lease was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortReason {
    /// It ran past its longest duration.
    MaxDuration,
    /// It missed its heartbeats ([`ProfileConfig::MISSED_HEARTBEATS`] intervals).
    MissedHeartbeat,
    /// Its engine is shutting down ([`crate::Engine::abort_leases`]).
    Shutdown,
}

impl AbortReason {
    /// The reason as metrics and the API write it.
    pub fn name(self) -> &'static str {
        match self {
            AbortReason::MaxDuration => "max_duration",
            AbortReason::MissedHeartbeat => "missed_heartbeat",
            AbortReason::Shutdown => "shutdown",
        }
    }

    /// Whether the lease expired (reported as a failure), rather than being stopped.
    pub fn is_expiry(self) -> bool {
        matches!(self, AbortReason::MaxDuration | AbortReason::MissedHeartbeat)
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(AbortReason::MaxDuration),
            2 => Some(AbortReason::MissedHeartbeat),
            3 => Some(AbortReason::Shutdown),
            _ => None,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            AbortReason::MaxDuration => 1,
            AbortReason::MissedHeartbeat => 2,
            AbortReason::Shutdown => 3,
        }
    }
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseOutcome {
    /// Completed well: reported as a success.
    Completed,
    /// Completed badly: reported as a failure.
    Failed,
    /// Given up by its holder (released, or dropped without completing): not reported.
    Cancelled,
    /// Aborted by the engine: its abort handle fired; reported as a failure when it expired.
    Aborted(AbortReason),
}

impl LeaseOutcome {
    /// The outcome as metrics and the API write it (`completed`, `failed`, `cancelled`,
    /// `max_duration`, `missed_heartbeat`, `shutdown`).
    pub fn name(self) -> &'static str {
        match self {
            LeaseOutcome::Completed => "completed",
            LeaseOutcome::Failed => "failed",
            LeaseOutcome::Cancelled => "cancelled",
            LeaseOutcome::Aborted(r) => r.name(),
        }
    }
}

type AbortCallback = Box<dyn FnOnce(AbortReason) + Send>;

#[derive(Default)]
struct AbortInner {
    /// 0 while not aborted, else the reason.
    state: AtomicU8,
    callback: Mutex<Option<AbortCallback>>,
}

/// How a lease's holder learns that the engine aborted it: a flag to poll
/// ([`AbortHandle::is_aborted`]) and, optionally, a callback run once when it fires (stop a
/// worker, cancel a token, call a JavaScript `AbortController`). Clones share one signal.
///
/// The callback runs on the thread that found the lease expired (a sweep, a heartbeat, a
/// completion), outside the engine's locks; it must be quick and must not block. A panic
/// in it is caught (the lease is aborted all the same).
#[derive(Clone, Default)]
pub struct AbortHandle(Arc<AbortInner>);

impl AbortHandle {
    /// A handle to poll.
    pub fn new() -> Self {
        AbortHandle::default()
    }

    /// A handle that runs `f` once when the lease is aborted.
    pub fn with_callback(f: impl FnOnce(AbortReason) + Send + 'static) -> Self {
        let h = AbortHandle::default();
        *h.0.callback.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
        h
    }

    /// Whether the lease was aborted.
    pub fn is_aborted(&self) -> bool {
        self.0.state.load(Ordering::Acquire) != 0
    }

    /// Why the lease was aborted, if it was.
    pub fn reason(&self) -> Option<AbortReason> {
        AbortReason::from_u8(self.0.state.load(Ordering::Acquire))
    }

    /// Fires the signal (once: later calls do nothing). Returns whether this call fired it.
    ///
    /// A callback that panics is the holder's bug, not the engine's: the panic is caught and
    /// dropped, so that the sweep that fired it goes on to the other leases it found overdue
    /// (and a sweeper thread survives it). The lease is aborted all the same.
    pub(crate) fn fire(&self, reason: AbortReason) -> bool {
        if self.0.state.compare_exchange(0, reason.as_u8(), Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        let f = self.0.callback.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(f) = f {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(reason)));
        }
        true
    }
}

impl std::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortHandle").field("reason", &self.reason()).finish()
    }
}

/// How to start a lease. Every field has a default: a normal-priority lease with the
/// route's profile ([`crate::Engine::set_route_profile`]), or the standard profile.
///
/// ```
/// use std::time::Duration;
/// use atrion_core::{AbortHandle, LeaseOptions, Priority, Profile};
///
/// let opts = LeaseOptions::new()
///     .profile(Profile::Heavy)
///     .priority(Priority::Low)
///     .max_duration(Duration::from_secs(120))
///     .abort(AbortHandle::with_callback(|reason| eprintln!("stop: {reason}")));
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// The priority the lease is admitted at (default normal).
    pub priority: Priority,
    /// The lease's profile; `None`: the route's ([`crate::Engine::set_route_profile`]), or
    /// the standard profile.
    pub profile: Option<ProfileConfig>,
    /// The longest the lease may run; `None`: its profile's.
    pub max_duration: Option<Duration>,
    /// How often its holder will heartbeat; `None`: its profile's.
    pub heartbeat: Option<Duration>,
    /// How the holder is told of an abort. Required when the profile says so
    /// ([`ProfileConfig::requires_abort`]); without one the engine makes a handle to poll.
    pub abort: Option<AbortHandle>,
}

impl LeaseOptions {
    /// Every default.
    pub fn new() -> Self {
        LeaseOptions::default()
    }

    /// The priority the lease is admitted at.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// A named or custom profile.
    pub fn profile(mut self, profile: impl Into<ProfileConfig>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The longest the lease may run.
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = Some(d);
        self
    }

    /// How often the holder will heartbeat.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// The abort handle.
    pub fn abort(mut self, handle: AbortHandle) -> Self {
        self.abort = Some(handle);
        self
    }
}

/// A lease's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseDeadlines {
    /// When the lease runs out whatever happens (start + max duration).
    pub expires_at: Timestamp,
    /// When it is aborted unless a heartbeat comes first (`None`: it needs none); never
    /// past `expires_at` (at it, the expiry is the reason).
    pub heartbeat_by: Option<Timestamp>,
}

impl LeaseDeadlines {
    /// The earlier of the two.
    pub fn next(&self) -> Timestamp {
        self.heartbeat_by.map_or(self.expires_at, |h| h.min(self.expires_at))
    }
}

/// A lease the engine admitted.
#[derive(Debug, Clone)]
pub struct LeaseGrant {
    /// Its id.
    pub id: LeaseId,
    /// The admitting decision.
    pub decision: Decision,
    /// When it started.
    pub started: Timestamp,
    /// Its deadlines.
    pub deadlines: LeaseDeadlines,
    /// Its heartbeat interval, if it needs one.
    pub heartbeat: Option<Duration>,
    /// Its abort signal (the one passed in, or one the engine made).
    pub abort: AbortHandle,
    /// The name of its profile (`heavy`, `custom`, ...).
    pub profile: &'static str,
}

/// What starting a lease gave: a lease, or the decision that shed it (a refusal is a value
/// carrying when to retry, as for a request).
#[derive(Debug, Clone)]
pub enum LeaseStart {
    /// Admitted.
    Granted(LeaseGrant),
    /// Shed, with the reason and the retry hint.
    Shed(Decision),
}

/// A lease that could not be started, or a call on one that is no longer live.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The profile requires an abort handle and none was given.
    #[error("route `{route}`: a {profile} lease needs an abort handle (long work must be stoppable)")]
    AbortRequired {
        /// The route.
        route: String,
        /// The profile's name.
        profile: &'static str,
    },
    /// A profile or option breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A route id that is empty or longer than [`crate::limits::MAX_ROUTE_ID`] bytes.
    #[error("invalid route id ({len} bytes): must be 1 to {max} bytes", max = crate::limits::MAX_ROUTE_ID)]
    InvalidRouteId {
        /// Its length.
        len: usize,
    },
    /// The engine holds its most live leases ([`crate::EngineLimits::max_leases`]).
    #[error("{max} leases are live, the most the engine holds")]
    TooMany {
        /// The bound.
        max: usize,
    },
    /// The lease ran out at this call (it was aborted, and reported as a failure, now).
    #[error("lease {id} was aborted: {reason}")]
    Aborted {
        /// The lease.
        id: LeaseId,
        /// Why.
        reason: AbortReason,
    },
    /// No live lease has this id: it ended (completed, cancelled, or aborted earlier).
    #[error("lease {id} is not live")]
    Gone {
        /// The id.
        id: LeaseId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_fires_once_and_is_seen_by_every_clone() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = AbortHandle::with_callback(move |r| tx.send(r).unwrap());
        let seen = h.clone();
        assert!(!seen.is_aborted());
        assert!(h.fire(AbortReason::MissedHeartbeat));
        assert!(!h.fire(AbortReason::MaxDuration));
        assert_eq!(seen.reason(), Some(AbortReason::MissedHeartbeat));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [AbortReason::MissedHeartbeat]);
    }

    #[test]
    fn ids_round_trip() {
        let id = LeaseId::new(7, 3);
        assert_eq!((id.slot(), id.generation()), (7, 3));
        assert_eq!(LeaseId::from_u64(id.as_u64()), id);
    }
}
