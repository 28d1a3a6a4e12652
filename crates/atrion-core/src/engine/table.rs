//! The route table: creating a route when there is room, evicting what may go (idle routes,
//! and on a full table the least valuable), making room for an operator's hold, and the
//! `Slot` a lookup lands in. Route ids are untrusted: a route that finds no room is decided
//! on no state (`Reason::Untracked`), never on another route's evidence.

use super::*;

impl<O: PhysicsObserver> Engine<O> {
    /// Makes room for a held route on a full table: sweep now, then the reserve, then the
    /// least valuable route.
    #[cold]
    pub(super) fn room_for_hold(&self, route: &str, now: Timestamp) -> Result<Route, EngineError> {
        self.sweep(now, true);
        let room = self.limits.max_routes.saturating_add(self.limits.held_reserve);
        if self.tracked.load(Relaxed) >= room && !self.evict_least_valuable(now) {
            return Err(EngineError::TableFull { route: route.to_owned() });
        }
        Ok(self.insert(route, now))
    }

    /// The route, creating it when unknown and there is room (after evicting what may be
    /// evicted, and if `may_create` allows it).
    #[cold]
    pub(super) fn route_or_create(&self, route: &str, now: Timestamp, may_create: impl FnOnce() -> bool) -> Slot {
        if check_id(route).is_err() {
            return Slot::Untracked;
        }
        if let Some(found) = self.find(route, Route::clone) {
            return Slot::Tracked(found);
        }
        if self.tracked.load(Relaxed) >= self.limits.max_routes {
            self.sweep(now, false);
            if self.tracked.load(Relaxed) >= self.limits.max_routes {
                return Slot::Untracked;
            }
        }
        if !may_create() {
            return Slot::Refused;
        }
        Slot::Tracked(self.insert(route, now))
    }

    /// Puts a new route in the table (or finds the one a racing thread put there first).
    pub(super) fn insert(&self, route: &str, now: Timestamp) -> Route {
        let (phys, hold) = self.override_for(route);
        let fresh = Route::new(route, &phys, now);
        fresh.cell().view.held.store(hold as u8, Relaxed);
        match self.routes.entry_sync(fresh) {
            // Another thread created it first: theirs is the route.
            scc::hash_index::Entry::Occupied(o) => o.key().clone(),
            scc::hash_index::Entry::Vacant(v) => {
                self.tracked.fetch_add(1, Relaxed);
                v.insert_entry(()).key().clone()
            }
        }
    }

    /// Evicts idle routes: those idle past the idle timeout, and the least valuable ones idle
    /// past the pressure timeout ([`EngineLimits`]). Runs at most once a second unless
    /// `forced` (a hold), so that a flood of new route ids against a full table costs one
    /// scan per second, not one per request.
    pub(super) fn sweep(&self, now: Timestamp, forced: bool) {
        let due = self.next_sweep.load(Relaxed);
        if !forced
            && (now.as_nanos() < due
                || self
                    .next_sweep
                    .compare_exchange(due, now.as_nanos().saturating_add(1_000_000_000), Relaxed, Relaxed)
                    .is_err())
        {
            return;
        }
        let idle = self.limits.idle_timeout.as_nanos() as u64;
        let pressure = self.limits.pressure_idle.as_nanos() as u64;
        let mut evicted = Vec::new();
        let overrides = self.overrides.read().unwrap_or_else(PoisonError::into_inner).clone();
        self.routes.retain_sync(|route, ()| {
            let v = &route.cell().view;
            let policy = overrides.find(route.name());
            let since = u64::from(v.idle_secs(now)) * 1_000_000_000;
            // A route with live leases is working, however long since its last decision:
            // evicted, its leases would report to a route no longer in the table.
            let keep = operator_held(route, policy)
                || (since <= idle && (since <= pressure || policy.is_some() || !little_value(route)))
                || self.leases.working(route.name());
            if !keep {
                evicted.push(route.clone());
            }
            keep
        });
        if !evicted.is_empty() {
            self.removed();
        }
        self.tracked.fetch_sub(evicted.len(), Relaxed);
        self.told_evicted(evicted, now);
    }

    /// Evicts the least valuable route no operator holds: one no lease works on first (a
    /// hold always finds room, even on a table of working routes), then of little value,
    /// then the longest idle. False when every route is held.
    #[cold]
    pub(super) fn evict_least_valuable(&self, now: Timestamp) -> bool {
        let overrides = self.overrides.read().unwrap_or_else(PoisonError::into_inner).clone();
        let guard = scc::Guard::new();
        let victim = self
            .routes
            .iter(&guard)
            .map(|(r, ())| r)
            .filter(|r| !operator_held(r, overrides.find(r.name())))
            .min_by_key(|r| {
                (self.leases.working(r.name()), !little_value(r), std::cmp::Reverse(r.cell().view.idle_secs(now)))
            })
            .cloned();
        drop(guard);
        let Some(victim) = victim else { return false };
        if self.routes.remove_sync(victim.name()) {
            self.removed();
            self.tracked.fetch_sub(1, Relaxed);
            self.told_evicted(vec![victim], now);
        }
        true
    }

    /// Counts evictions and tells the observer, after the table's buckets are unlocked (so
    /// that an observer may use the engine).
    pub(super) fn told_evicted(&self, evicted: Vec<Route>, now: Timestamp) {
        for route in evicted {
            self.evicted.fetch_add(1, Relaxed);
            self.observer.on_event(&Event::Evicted { route: route.name(), at: now });
        }
    }
}

/// Where a route lookup landed.
pub(super) enum Slot {
    /// A route of the table.
    Tracked(Route),
    /// No room: decided on no state.
    Untracked,
    /// The caller's `may_create` refused a new route.
    Refused,
}

/// Whether an operator holds the route: a hold that its policy does not give. (A hold its
/// policy gives stays in the policy: the route may go, and comes back with it; else a held
/// pattern would keep every id ever seen under it.)
fn operator_held(route: &Route, policy: Option<&Override>) -> bool {
    let hold = route.cell().view.held.load(Relaxed);
    let given = policy.map_or(Hold::Released, |o| o.hold);
    hold != Hold::Released as u8 && hold != given as u8
}

/// Whether a route holds little a decision would miss: neither open nor half-open, and no
/// scar.
fn little_value(route: &Route) -> bool {
    let v = &route.cell().view;
    let mode = Mode::from_u8(v.mode.load(Relaxed));
    matches!(mode, Mode::Bootstrap | Mode::Operational) && load_f(&v.scar) <= 0.0 && !v.cluster_on.load(Relaxed)
}
