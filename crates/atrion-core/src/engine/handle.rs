//! Handles: a route resolved once ([`Handle`]), borrowing its engine ([`RouteHandle`]) or
//! holding it ([`OwnedRouteHandle`]), for callers that decide on the same route many times.

use super::*;

/// A route resolved once, for callers that decide on the same route many times: decides
/// and reports without looking the route up again. `E` is how it holds its engine: a borrow
/// ([`RouteHandle`], from [`Engine::route`] and [`Engine::handle`]) or an `Arc`
/// ([`OwnedRouteHandle`], from [`Engine::owned_handle`], to keep across `.await`s).
pub struct Handle<E> {
    pub(super) engine: E,
    pub(super) target: Target,
}

/// What a handle decides on.
pub(super) enum Target {
    /// A route of the table (or one evicted since: it goes on, detached).
    Tracked(Route),
    /// No room when the handle was made: decided on no state, reports dropped.
    Untracked(Box<str>),
}

/// A handle borrowing its engine.
pub type RouteHandle<'e, O> = Handle<&'e Engine<O>>;

/// A handle holding its engine.
pub type OwnedRouteHandle<O> = Handle<Arc<Engine<O>>>;

impl<E: std::ops::Deref<Target = Engine<O>>, O: PhysicsObserver> Handle<E> {
    /// The route id.
    pub fn id(&self) -> &str {
        match &self.target {
            Target::Tracked(r) => r.name(),
            Target::Untracked(id) => id,
        }
    }

    /// Whether the handle decides on a tracked route (false: untracked, on no state).
    pub fn is_tracked(&self) -> bool {
        matches!(self.target, Target::Tracked(_))
    }

    /// As [`Engine::decide`], without the lookup.
    #[inline]
    pub fn decide(&self, now: Timestamp, priority: Priority) -> Decision {
        match &self.target {
            Target::Tracked(r) => self.engine.decide_route(r, now, priority),
            Target::Untracked(id) => self.engine.decide_untracked(id, now, priority),
        }
    }

    /// As [`Engine::report`], without the lookup.
    pub fn report(&self, telemetry: Telemetry, now: Timestamp) -> RouteStatus {
        match &self.target {
            Target::Tracked(r) => self.engine.report_route(r, telemetry, now),
            Target::Untracked(id) => {
                self.engine.dropped_reports.fetch_add(1, Relaxed);
                self.engine.untracked_status(id)
            }
        }
    }

    /// The route's status.
    pub fn status(&self) -> RouteStatus {
        match &self.target {
            Target::Tracked(r) => r.cell().status(),
            Target::Untracked(id) => self.engine.untracked_status(id),
        }
    }
}

impl<E> std::fmt::Debug for Handle<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id: &str = match &self.target {
            Target::Tracked(r) => r.name(),
            Target::Untracked(id) => id,
        };
        f.debug_tuple("Handle").field(&id).finish()
    }
}
