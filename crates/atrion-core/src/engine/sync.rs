//! What the state layer reads from and writes into the engine: the routes reported since the
//! last pulse (`take_dirty`), a node's own open intervals brought back at its warm start
//! (`resume_open`, `warm_start`), and the cluster's view merged into each route
//! (`set_cluster`, `merge_cluster`, `cluster_scar`). The engine does no I/O: the manager in
//! atrion-state moves the bytes.

use super::*;

impl<O: PhysicsObserver> Engine<O> {
    /// Calls `f` for every route reported since the last call, with its local contribution
    /// (what its own telemetry produced: never the cluster's), and marks it clean. For the
    /// state layer's pulse; takes each dirty route's lock briefly.
    pub fn take_dirty(&self, mut f: impl FnMut(&str, LocalContribution)) {
        let guard = scc::Guard::new();
        let mut overrides = None;
        for (route, ()) in self.routes.iter(&guard) {
            let cell = route.cell();
            if cell.view.dirty.swap(false, AcqRel) {
                let scar_decay = cell.phys().cfg.scar_decay;
                let held = Hold::from_u8(cell.view.held.load(Relaxed));
                let hold = if held == Hold::Released {
                    held
                } else {
                    // Read once per call, and only when a held route is dirty.
                    let list =
                        overrides.get_or_insert_with(|| self.overrides.read().unwrap_or_else(PoisonError::into_inner));
                    let given = list.find(route.name()).map_or(Hold::Released, |o| o.hold);
                    if held == given { Hold::Released } else { held }
                };
                // The view's mode: a decision may have half-opened the route on its timer.
                let mode = Mode::from_u8(cell.view.mode.load(Acquire));
                let contribution = cell.inspect(|s| LocalContribution {
                    scar: s.scar,
                    momentum: s.k.momentum(),
                    at: s.last,
                    scar_decay,
                    mode,
                    open_until: s.open_until,
                    hold,
                });
                f(route.name(), contribution);
            }
        }
    }

    /// Brings back an open interval from a previous life of this node (its warm start):
    /// `route` is open for `left` more, at most its `open_max`, or half-open with its first
    /// probe quota when `left` is zero; its scout and its re-trip backoff count from `now`.
    /// A route that was open must never come back in bootstrap, admitting everything onto a
    /// dependency that may still be failing.
    pub fn resume_open(&self, route: &str, left: Duration, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        let found = match self.route_or_create(route, now, || true) {
            Slot::Tracked(r) => r,
            // A full table at the warm start: the route is decided untracked, on no state.
            Slot::Untracked | Slot::Refused => return Err(EngineError::TableFull { route: route.to_owned() }),
        };
        let cell = found.cell();
        let phys = cell.phys();
        let h = &phys.cfg.half_open;
        let (to, before) = cell.modify(phys, |s| {
            if !s.k.seen || now > s.last {
                s.last = now;
                s.k.seen = true;
            }
            s.k.set_trips(s.k.trips().0.max(1.0), now);
            if left.is_zero() {
                s.set_mode(Mode::HalfOpen);
                Mode::HalfOpen
            } else {
                s.open_until = now.saturating_add(left.min(h.open_max));
                s.set_mode(Mode::Open);
                Mode::Open
            }
        });
        let v = &cell.view;
        v.keepalive_at.store(now.as_nanos(), Relaxed);
        v.window_start.store(now.as_nanos(), Relaxed);
        v.probes.store(0, Relaxed);
        if before != to {
            let resistance = load_f(&v.resistance);
            self.observer.on_event(&Event::Transition { route, at: now, from: before, to, resistance });
        }
        Ok(())
    }

    /// Sets the other nodes' scar for `route` as of `now` (`None`: no other node reports on
    /// it), creating the route if unknown. Decisions blend it with the local scar by
    /// [`PhysicsConfig::gamma`], healing it at the local rate.
    /// Clearing the view of a route that is not tracked does nothing; setting it on a full
    /// table is [`EngineError::TableFull`].
    pub fn set_cluster(&self, route: &str, scar: Option<f64>, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        if scar.is_none() && !self.contains(route) {
            return Ok(());
        }
        let found = self.tracked_or_full(route, now)?;
        let cell = found.cell();
        let v = &cell.view;
        match scar {
            Some(s) if s.is_finite() => {
                store_f(&v.cluster_scar, s.clamp(0.0, cell.phys().cfg.scar_max));
                v.cluster_at.store(now.as_nanos(), Relaxed);
                v.cluster_on.store(true, Release);
            }
            _ => v.cluster_on.store(false, Release),
        }
        Ok(())
    }

    /// Merges the other nodes' contributions to `route` (docs/DESIGN.md §4): each `(scar, age_s)` healed
    /// by the route's own law ([`heal`]) to `now`, and the largest becomes its cluster view
    /// ([`Engine::set_cluster`]); none clears the view. Cluster sync only moves bytes: the
    /// physics of the merge is here.
    pub fn merge_cluster(
        &self,
        route: &str,
        contributions: impl IntoIterator<Item = (f64, f64)>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        check_id(route)?;
        let lambda = self.physics_for(route).cfg.scar_decay;
        let merged = contributions
            .into_iter()
            .filter(|(scar, age)| scar.is_finite() && *scar >= 0.0 && age.is_finite())
            .map(|(scar, age)| heal(scar, lambda, age.max(0.0)))
            .fold(None, |acc: Option<f64>, s| Some(acc.map_or(s, |a| a.max(s))));
        self.set_cluster(route, merged, now)
    }

    /// The other nodes' scar for `route` as decisions see it at `now` (healed), if any.
    pub fn cluster_scar(&self, route: &str, now: Timestamp) -> Option<f64> {
        self.find(route, |r| r.cell().cluster(r.cell().phys(), now)).flatten()
    }

    /// Seeds `route`'s local scar from a previous life of this node (warm start): the scar
    /// becomes at least `scar`, healed from `at` to `now`.
    pub fn warm_start(&self, route: &str, scar: f64, at: Timestamp, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        if !scar.is_finite() || scar < 0.0 {
            return Ok(());
        }
        let found = self.tracked_or_full(route, now)?;
        let cell = found.cell();
        let phys = cell.phys();
        let healed = heal(scar, phys.cfg.scar_decay, now.saturating_since(at).as_secs_f64());
        cell.modify(phys, |s| {
            if healed > s.scar {
                let c = &phys.cfg;
                s.resistance = (s.resistance + (healed.min(c.scar_max) - s.scar)).clamp(c.r_base, c.r_max);
                s.scar = healed.min(c.scar_max);
                if !s.k.seen || now > s.last {
                    s.last = now;
                    s.k.seen = true;
                }
            }
        });
        Ok(())
    }
}

/// What the cluster sync may do to an engine, and nothing more (docs/DESIGN.md §4): collect
/// the routes reported since the last pulse, bring a node's own earlier state back at its
/// warm start, set and merge the cluster's view of a route, and carry an operator's hold.
/// `atrion-sync` holds an engine only through this trait, so that the sync's code is not
/// generic over the engine's observer and cannot reach decisions, policies or reports.
pub trait SyncedEngine: Send + Sync + 'static {
    /// [`Engine::take_dirty`].
    fn take_dirty(&self, f: &mut dyn FnMut(&str, LocalContribution));
    /// [`Engine::resume_open`].
    fn resume_open(&self, route: &str, left: Duration, now: Timestamp) -> Result<(), EngineError>;
    /// [`Engine::set_cluster`].
    fn set_cluster(&self, route: &str, scar: Option<f64>, now: Timestamp) -> Result<(), EngineError>;
    /// [`Engine::merge_cluster`].
    fn merge_cluster(
        &self,
        route: &str,
        contributions: &mut dyn Iterator<Item = (f64, f64)>,
        now: Timestamp,
    ) -> Result<(), EngineError>;
    /// [`Engine::warm_start`].
    fn warm_start(&self, route: &str, scar: f64, at: Timestamp, now: Timestamp) -> Result<(), EngineError>;
    /// [`Engine::hold`].
    fn hold(&self, route: &str, hold: Hold, now: Timestamp) -> Result<(), EngineError>;
    /// [`Engine::on_hold`].
    fn on_hold(&self, hook: Option<HoldHook>);
}

impl<O: PhysicsObserver + 'static> SyncedEngine for Engine<O> {
    fn take_dirty(&self, f: &mut dyn FnMut(&str, LocalContribution)) {
        Engine::take_dirty(self, |route, c| f(route, c));
    }

    fn resume_open(&self, route: &str, left: Duration, now: Timestamp) -> Result<(), EngineError> {
        Engine::resume_open(self, route, left, now)
    }

    fn set_cluster(&self, route: &str, scar: Option<f64>, now: Timestamp) -> Result<(), EngineError> {
        Engine::set_cluster(self, route, scar, now)
    }

    fn merge_cluster(
        &self,
        route: &str,
        contributions: &mut dyn Iterator<Item = (f64, f64)>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        Engine::merge_cluster(self, route, contributions, now)
    }

    fn warm_start(&self, route: &str, scar: f64, at: Timestamp, now: Timestamp) -> Result<(), EngineError> {
        Engine::warm_start(self, route, scar, at, now)
    }

    fn hold(&self, route: &str, hold: Hold, now: Timestamp) -> Result<(), EngineError> {
        Engine::hold(self, route, hold, now)
    }

    fn on_hold(&self, hook: Option<HoldHook>) {
        Engine::on_hold(self, hook);
    }
}
