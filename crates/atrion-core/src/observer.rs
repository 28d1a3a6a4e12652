//! Observers: how the engine tells the outside world what it does, without doing I/O.
//!
//! The engine is generic over its observer, so [`SilentObserver`] compiles away and the
//! hot path pays nothing for it. Built-ins: [`SilentObserver`], [`CompositeObserver`],
//! [`FilteredObserver`], [`CollectorObserver`]; the console observer lives in the `atrion`
//! crate, because printing is I/O.

use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use crate::decision::{Decision, Priority};
use crate::lease::LeaseOutcome;
use crate::mode::Mode;
use crate::time::Timestamp;

/// Something the engine did.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A route's physics stepped: one telemetry sample, or the window of samples an
    /// operational route of the default model gathered since its last step
    /// (docs/DESIGN.md §7.2, "Coalesced steps": at most one step per `step`, 10 ms).
    Update {
        /// The route.
        route: &'a str,
        /// When.
        at: Timestamp,
        /// Mode after the update.
        mode: Mode,
        /// Resistance after the update (ohms).
        resistance: f64,
        /// Scar tissue after the update (ohms).
        scar: f64,
        /// Momentum after the update.
        momentum: f64,
    },
    /// A route changed mode.
    Transition {
        /// The route.
        route: &'a str,
        /// When.
        at: Timestamp,
        /// Mode before.
        from: Mode,
        /// Mode after.
        to: Mode,
        /// Resistance at the time (ohms).
        resistance: f64,
    },
    /// A request was admitted or shed. Emitted on every decision, so an observer that
    /// keeps it must be cheap (a counter); [`SilentObserver`] compiles it away.
    Decided {
        /// The route.
        route: &'a str,
        /// When.
        at: Timestamp,
        /// The request's priority.
        priority: Priority,
        /// The decision.
        decision: Decision,
    },
    /// An idle route was dropped to keep the route table bounded.
    Evicted {
        /// The route.
        route: &'a str,
        /// When.
        at: Timestamp,
    },
    /// A task lease was admitted ([`crate::Engine::start_lease`]); it counts among the
    /// route's live leases until a [`Event::LeaseEnded`].
    LeaseStarted {
        /// The route ([`crate::UNTRACKED_ROUTE`] for an untracked one).
        route: &'a str,
        /// When.
        at: Timestamp,
    },
    /// A task lease ended.
    LeaseEnded {
        /// The route ([`crate::UNTRACKED_ROUTE`] for an untracked one).
        route: &'a str,
        /// When.
        at: Timestamp,
        /// How.
        outcome: LeaseOutcome,
        /// How long it ran (for an expired lease: until its missed deadline).
        duration: Duration,
    },
}

impl Event<'_> {
    /// The route the event is about.
    pub fn route(&self) -> &str {
        match self {
            Event::Update { route, .. }
            | Event::Transition { route, .. }
            | Event::Decided { route, .. }
            | Event::Evicted { route, .. }
            | Event::LeaseStarted { route, .. }
            | Event::LeaseEnded { route, .. } => route,
        }
    }

    /// An owned copy, for keeping.
    pub fn to_owned(&self) -> OwnedEvent {
        match *self {
            Event::Update { route, at, mode, resistance, scar, momentum } => {
                OwnedEvent::Update { route: route.to_owned(), at, mode, resistance, scar, momentum }
            }
            Event::Transition { route, at, from, to, resistance } => {
                OwnedEvent::Transition { route: route.to_owned(), at, from, to, resistance }
            }
            Event::Decided { route, at, priority, decision } => {
                OwnedEvent::Decided { route: route.to_owned(), at, priority, decision }
            }
            Event::Evicted { route, at } => OwnedEvent::Evicted { route: route.to_owned(), at },
            Event::LeaseStarted { route, at } => OwnedEvent::LeaseStarted { route: route.to_owned(), at },
            Event::LeaseEnded { route, at, outcome, duration } => {
                OwnedEvent::LeaseEnded { route: route.to_owned(), at, outcome, duration }
            }
        }
    }
}

/// An [`Event`] that owns its route name.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // the fields are those of `Event`
pub enum OwnedEvent {
    Update { route: String, at: Timestamp, mode: Mode, resistance: f64, scar: f64, momentum: f64 },
    Transition { route: String, at: Timestamp, from: Mode, to: Mode, resistance: f64 },
    Decided { route: String, at: Timestamp, priority: Priority, decision: Decision },
    Evicted { route: String, at: Timestamp },
    LeaseStarted { route: String, at: Timestamp },
    LeaseEnded { route: String, at: Timestamp, outcome: LeaseOutcome, duration: Duration },
}

/// Receives the engine's events.
///
/// Called synchronously on the thread that decided or reported, after the route's own
/// lock is released. An implementation must be cheap and must not block (hand heavy
/// work to a channel), must not panic, and must not call back into the engine for the
/// same route from inside `on_event`.
pub trait PhysicsObserver: Send + Sync {
    /// One event.
    fn on_event(&self, event: &Event<'_>);
}

/// The unit observer ignores everything, like [`SilentObserver`].
impl PhysicsObserver for () {
    #[inline(always)]
    fn on_event(&self, _event: &Event<'_>) {}
}

impl<T: PhysicsObserver + ?Sized> PhysicsObserver for &T {
    fn on_event(&self, event: &Event<'_>) {
        (**self).on_event(event)
    }
}

impl<T: PhysicsObserver + ?Sized> PhysicsObserver for Box<T> {
    fn on_event(&self, event: &Event<'_>) {
        (**self).on_event(event)
    }
}

impl<T: PhysicsObserver + ?Sized> PhysicsObserver for Arc<T> {
    fn on_event(&self, event: &Event<'_>) {
        (**self).on_event(event)
    }
}

/// Ignores everything; the engine's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentObserver;

impl PhysicsObserver for SilentObserver {
    #[inline(always)]
    fn on_event(&self, _event: &Event<'_>) {}
}

/// Forwards every event to each of its observers, in order.
#[derive(Default)]
pub struct CompositeObserver {
    observers: Vec<Box<dyn PhysicsObserver>>,
}

impl CompositeObserver {
    /// An empty composite.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an observer.
    pub fn with(mut self, observer: impl PhysicsObserver + 'static) -> Self {
        self.observers.push(Box::new(observer));
        self
    }
}

impl PhysicsObserver for CompositeObserver {
    fn on_event(&self, event: &Event<'_>) {
        for o in &self.observers {
            o.on_event(event);
        }
    }
}

/// Forwards only the events a predicate accepts.
pub struct FilteredObserver<O, F> {
    inner: O,
    filter: F,
}

impl<O, F> FilteredObserver<O, F>
where
    O: PhysicsObserver,
    F: Fn(&Event<'_>) -> bool + Send + Sync,
{
    /// Wraps `inner`, forwarding events for which `filter` returns true.
    pub fn new(inner: O, filter: F) -> Self {
        FilteredObserver { inner, filter }
    }

    /// The wrapped observer.
    pub fn inner(&self) -> &O {
        &self.inner
    }
}

impl<O, F> PhysicsObserver for FilteredObserver<O, F>
where
    O: PhysicsObserver,
    F: Fn(&Event<'_>) -> bool + Send + Sync,
{
    fn on_event(&self, event: &Event<'_>) {
        if (self.filter)(event) {
            self.inner.on_event(event);
        }
    }
}

/// Keeps every event in memory, for tests and for tools such as `atrion replay`.
///
/// Allocates per event: not for a production hot path.
#[derive(Debug, Default)]
pub struct CollectorObserver {
    events: Mutex<Vec<OwnedEvent>>,
}

impl CollectorObserver {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of what was collected so far.
    pub fn events(&self) -> Vec<OwnedEvent> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes what was collected, leaving the collector empty.
    pub fn drain(&self) -> Vec<OwnedEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Only the transitions, as (route, at, from, to).
    pub fn transitions(&self) -> Vec<(String, Timestamp, Mode, Mode)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                OwnedEvent::Transition { route, at, from, to, .. } => Some((route, at, from, to)),
                _ => None,
            })
            .collect()
    }
}

impl PhysicsObserver for CollectorObserver {
    fn on_event(&self, event: &Event<'_>) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(event.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(route: &str) -> Event<'_> {
        Event::Transition { route, at: Timestamp::ZERO, from: Mode::Operational, to: Mode::Open, resistance: 50.0 }
    }

    #[test]
    fn composite_and_filter_route_events() {
        let all = Arc::new(CollectorObserver::new());
        let only_a = Arc::new(CollectorObserver::new());
        let composite = CompositeObserver::new()
            .with(all.clone())
            .with(FilteredObserver::new(only_a.clone(), |e: &Event<'_>| e.route() == "a"));
        composite.on_event(&transition("a"));
        composite.on_event(&transition("b"));
        assert_eq!(all.events().len(), 2);
        assert_eq!(only_a.transitions().len(), 1);
        assert_eq!(only_a.transitions()[0].0, "a");
        assert_eq!(only_a.drain().len(), 1);
        assert!(only_a.events().is_empty());
    }
}
