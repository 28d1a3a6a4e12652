//! Long-running tasks: [`Atrion::start_task`] and the RAII [`Lease`] it returns
//! (docs/DESIGN.md §2, task leases).
//!
//! A lease is the engine's ([`atrion_core::Engine::start_lease`]) on the facade's clock:
//! admitted like a request, counted in [`Atrion::active_tasks`] until it ends, reported
//! when completed, aborted (its [`AbortHandle`] fired, a failure reported) when it runs
//! past its longest duration or misses its heartbeats. Dropping a lease that has not ended
//! cancels it: nothing is reported.
//!
//! **When expiry is noticed.** Nothing runs per lease. Every call on a lease checks its own
//! deadlines, and [`Atrion::start_task`], [`Atrion::active_tasks`] and
//! [`Atrion::sweep_tasks`] sweep every lease that is overdue. After [`Atrion::connect`],
//! the facade also owns a sweeper task beside the cluster pulse (joined by
//! [`Atrion::shutdown`]): it sleeps until the next deadline (at most a second), so that an
//! abandoned lease is aborted on time even when nobody calls. Without `connect` (no
//! runtime, or a process that does not want the pulse) call [`Atrion::sweep_tasks`] from a
//! timer of your own if aborts must fire on time.
//!
//! [`Atrion::start_task`]: crate::Atrion::start_task
//! [`Atrion::active_tasks`]: crate::Atrion::active_tasks
//! [`Atrion::sweep_tasks`]: crate::Atrion::sweep_tasks
//! [`Atrion::connect`]: crate::Atrion::connect
//! [`Atrion::shutdown`]: crate::Atrion::shutdown

use std::sync::Arc;
use std::time::Duration;

use atrion_core::{
    AbortHandle, AbortReason, Decision, Engine, LeaseDeadlines, LeaseError, LeaseGrant, LeaseId, LeaseOutcome,
    PhysicsObserver, SilentObserver, Timestamp,
};
use tokio::sync::Notify;

use crate::now::Now;

/// Why [`Atrion::start_task`](crate::Atrion::start_task) gave no lease.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The route shed the task, as it would a request: the decision carries the reason and
    /// when to retry.
    #[error("shed: {:?}, retry after {:?}", .0.reason, .0.retry_after)]
    Shed(Decision),
    /// The lease could not be started (an abort handle missing for heavy work, invalid
    /// options, too many live leases).
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// A long-running task admitted on a route: heartbeat it, then complete it. Dropped before
/// it ends, it is cancelled (not a failure: nothing is reported).
///
/// ```
/// use std::time::Duration;
/// use atrion::{AbortHandle, Atrion, LeaseOptions, Profile};
///
/// let atrion = Atrion::builder().build()?;
/// let abort = AbortHandle::new();
/// let mut lease = atrion.start_task("ml/train", LeaseOptions::new().profile(Profile::Heavy).abort(abort.clone()))?;
/// while !abort.is_aborted() {
///     // ... one batch of work ...
///     lease.heartbeat()?;
///     break;
/// }
/// lease.complete(true)?;
/// assert_eq!(atrion.active_tasks("ml/train"), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Lease<O: PhysicsObserver + 'static = SilentObserver> {
    engine: Arc<Engine<O>>,
    clock: Now,
    grant: LeaseGrant,
    route: Box<str>,
    live: bool,
}

impl<O: PhysicsObserver + 'static> Lease<O> {
    pub(crate) fn new(engine: Arc<Engine<O>>, clock: Now, grant: LeaseGrant, route: &str) -> Self {
        Lease { engine, clock, grant, route: route.into(), live: true }
    }

    /// The lease's id in its engine.
    pub fn id(&self) -> LeaseId {
        self.grant.id
    }

    /// The route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The profile's name (`light`, `standard`, `heavy`, `extreme`, `custom`).
    pub fn profile(&self) -> &'static str {
        self.grant.profile
    }

    /// When it started, on the facade's clock.
    pub fn started_at(&self) -> Timestamp {
        self.grant.started
    }

    /// Its deadlines as of its last heartbeat.
    pub fn deadlines(&self) -> LeaseDeadlines {
        self.grant.deadlines
    }

    /// The heartbeat interval it promised, if it needs heartbeats.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.grant.heartbeat
    }

    /// Time left before it runs out (zero once past).
    pub fn remaining(&self) -> Duration {
        self.grant.deadlines.expires_at.saturating_since(self.clock.now())
    }

    /// Whether it is neither ended by its holder nor aborted.
    pub fn is_active(&self) -> bool {
        self.live && !self.grant.abort.is_aborted()
    }

    /// Whether the engine aborted it (the work should stop).
    pub fn is_aborted(&self) -> bool {
        self.grant.abort.is_aborted()
    }

    /// Why it was aborted, if it was.
    pub fn abort_reason(&self) -> Option<AbortReason> {
        self.grant.abort.reason()
    }

    /// Its abort signal (the one given in the options, or one the engine made).
    pub fn abort_handle(&self) -> &AbortHandle {
        &self.grant.abort
    }

    /// Keeps it alive: its heartbeat deadline moves to now plus
    /// [`atrion_core::ProfileConfig::MISSED_HEARTBEATS`] intervals. An overdue lease is
    /// aborted by this call ([`LeaseError::Aborted`]); an ended one is [`LeaseError::Gone`].
    pub fn heartbeat(&mut self) -> Result<LeaseDeadlines, LeaseError> {
        let r = self.engine.heartbeat_lease(self.grant.id, self.clock.now());
        match r {
            Ok(d) => self.grant.deadlines = d,
            Err(_) => self.live = false,
        }
        r
    }

    /// Ends it and reports it: one sample of the route, its latency the lease's duration, a
    /// success if `ok`. An overdue lease is aborted instead ([`LeaseError::Aborted`]); an
    /// ended one is [`LeaseError::Gone`].
    pub fn complete(&mut self, ok: bool) -> Result<LeaseOutcome, LeaseError> {
        self.live = false;
        self.engine.complete_lease(self.grant.id, ok, self.clock.now())
    }

    /// Ends it without a report (cancelled): what dropping it does, with the error seen.
    pub fn release(&mut self) -> Result<(), LeaseError> {
        self.live = false;
        self.engine.cancel_lease(self.grant.id, self.clock.now())
    }
}

impl<O: PhysicsObserver + 'static> Drop for Lease<O> {
    fn drop(&mut self) {
        if self.live {
            // Gone (aborted by a sweep meanwhile) is fine: it ended either way.
            let _ = self.engine.cancel_lease(self.grant.id, self.clock.now());
        }
    }
}

impl<O: PhysicsObserver + 'static> std::fmt::Debug for Lease<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.grant.id)
            .field("route", &self.route)
            .field("profile", &self.grant.profile)
            .field("deadlines", &self.grant.deadlines)
            .field("aborted", &self.grant.abort.reason())
            .finish()
    }
}

/// The sweeper: a task beside the pulse that aborts overdue leases on time.
pub(crate) struct Sweeper {
    stop: Arc<Notify>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// The longest the sweeper sleeps: a lease started meanwhile wakes it, so this bounds only
/// how late a moved deadline (after a clock jump) is seen.
const SWEEP_IDLE: Duration = Duration::from_secs(1);

impl Sweeper {
    /// Starts it on the current runtime.
    pub(crate) fn start<O: PhysicsObserver + 'static>(engine: Arc<Engine<O>>, clock: Now) -> Self {
        let (stop, wake) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (s, w) = (stop.clone(), wake.clone());
        let task = tokio::spawn(async move {
            loop {
                let now = clock.now();
                engine.sweep_leases(now);
                // Deadlines are strict: due one tick after the deadline itself.
                let wait = engine
                    .next_lease_deadline()
                    .map_or(SWEEP_IDLE, |d| d.saturating_since(now) + Duration::from_millis(1))
                    .min(SWEEP_IDLE);
                tokio::select! {
                    () = s.notified() => return,
                    () = w.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
        Sweeper { stop, wake, task }
    }

    /// A lease started: its deadline may be the next.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops and joins it.
    pub(crate) async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}
