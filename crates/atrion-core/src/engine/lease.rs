//! The lease registry (`Leases`) and the engine's lease operations: start (a decision at
//! the lease's priority), heartbeat, complete, cancel, sweep, and route profiles.
//!
//! One mutex guards the registry: a slab of leases (slot + generation ids), a min-heap of
//! deadlines, the count of live leases per route and the route profiles. Nothing of it is on
//! the decision path of plain requests: `decide` and `report` never touch it. Work per call
//! is O(log n) in live leases; expired leases are found by popping the heap, never by a
//! scan. A heartbeat moves a lease's deadline without touching the heap: a popped entry
//! whose lease has a later deadline is pushed again at that deadline, and the heap is
//! rebuilt from the live leases when stale entries outnumber them, so its size stays
//! within a constant factor of the live leases.
//!
//! The abort callbacks, the reports and the observer's events run after the lock is
//! released.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::*;
use crate::config::ProfileConfig;
use crate::lease::{
    AbortHandle, AbortReason, LeaseDeadlines, LeaseError, LeaseGrant, LeaseId, LeaseOptions, LeaseOutcome, LeaseStart,
};

type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// The engine's leases.
#[derive(Default)]
pub(super) struct Leases(Mutex<Registry>);

#[derive(Default)]
struct Registry {
    slots: Vec<SlabSlot>,
    free: Vec<u32>,
    /// (deadline ns, slot, generation); may hold stale entries (see the module doc).
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Live leases per route id (absent: none).
    active: Map<u32>,
    /// Route profiles: an exact route id or a glob, the most specific first.
    profiles: Vec<(RoutePattern, ProfileConfig)>,
    live: usize,
}

struct SlabSlot {
    generation: u32,
    lease: Option<Entry>,
}

/// A live lease.
struct Entry {
    target: Target,
    started: Timestamp,
    expires_at: Timestamp,
    /// The longest gap between heartbeats (`MISSED_HEARTBEATS` intervals), if it needs them.
    beat_timeout: Option<Duration>,
    heartbeat_by: Option<Timestamp>,
    abort: AbortHandle,
    capacity: Option<u32>,
}

impl Entry {
    fn deadlines(&self) -> LeaseDeadlines {
        LeaseDeadlines { expires_at: self.expires_at, heartbeat_by: self.heartbeat_by }
    }

    /// Why the lease is over at `now`, if it is: strictly past a deadline; when both have
    /// passed, the earlier one is the cause.
    fn overdue(&self, now: Timestamp) -> Option<AbortReason> {
        let beat = self.heartbeat_by.filter(|&h| now > h && h < self.expires_at);
        if beat.is_some() {
            return Some(AbortReason::MissedHeartbeat);
        }
        (now > self.expires_at).then_some(AbortReason::MaxDuration)
    }

    fn name(&self) -> &str {
        match &self.target {
            Target::Tracked(r) => r.name(),
            Target::Untracked(_) => UNTRACKED_ROUTE,
        }
    }

    fn route_id(&self) -> &str {
        match &self.target {
            Target::Tracked(r) => r.name(),
            Target::Untracked(id) => id,
        }
    }
}

/// A lease taken out of the registry, to finish outside the lock.
struct Ended {
    entry: Entry,
    outcome: LeaseOutcome,
    /// Live leases of its route before it ended.
    active: u32,
}

impl Registry {
    fn get(&self, id: LeaseId) -> Option<&Entry> {
        let s = self.slots.get(id.slot() as usize)?;
        if s.generation != id.generation() {
            return None;
        }
        s.lease.as_ref()
    }

    fn get_mut(&mut self, id: LeaseId) -> Option<&mut Entry> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.generation != id.generation() {
            return None;
        }
        s.lease.as_mut()
    }

    fn insert(&mut self, entry: Entry) -> LeaseId {
        let deadline = entry.deadlines().next().as_nanos();
        *self.active.entry(entry.route_id().into()).or_insert(0) += 1;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                // The slab grows to the most leases live at once, bounded by `max_leases`.
                self.slots.push(SlabSlot { generation: 0, lease: None });
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let s = &mut self.slots[slot as usize];
        // Generations start at 1, so that no id is 0; a slot at its last is never reused
        // (`remove`), so they never wrap.
        s.generation = s.generation.saturating_add(1);
        s.lease = Some(entry);
        self.live += 1;
        self.heap.push(Reverse((deadline, slot, s.generation)));
        LeaseId::new(slot, s.generation)
    }

    /// Takes a lease out; `outcome` says how it ended.
    fn remove(&mut self, id: LeaseId, outcome: LeaseOutcome) -> Option<Ended> {
        let s = self.slots.get_mut(id.slot() as usize)?;
        if s.generation != id.generation() {
            return None;
        }
        let entry = s.lease.take()?;
        // A slot whose generations are spent is retired (a few bytes every 2^32 leases of
        // one slot): reused, it would give a new lease an id handed out long ago, which a
        // stale holder or a kept task id could then end.
        if s.generation < u32::MAX {
            self.free.push(id.slot());
        }
        self.live -= 1;
        let active = match self.active.get_mut(entry.route_id()) {
            Some(n) if *n > 1 => {
                *n -= 1;
                *n + 1
            }
            _ => {
                self.active.remove(entry.route_id());
                1
            }
        };
        if self.heap.len() > 2 * self.live + 64 {
            self.rebuild_heap();
        }
        Some(Ended { entry, outcome, active })
    }

    fn rebuild_heap(&mut self) {
        let live = self.slots.iter().enumerate().filter_map(|(i, s)| {
            let e = s.lease.as_ref()?;
            Some(Reverse((e.deadlines().next().as_nanos(), u32::try_from(i).ok()?, s.generation)))
        });
        self.heap = live.collect();
    }

    /// Takes out every lease overdue at `now`.
    fn expired(&mut self, now: Timestamp, out: &mut Vec<Ended>) {
        while let Some(&Reverse((deadline, slot, generation))) = self.heap.peek() {
            if deadline >= now.as_nanos() {
                return;
            }
            self.heap.pop();
            let id = LeaseId::new(slot, generation);
            let Some(entry) = self.get(id) else { continue };
            match entry.overdue(now) {
                Some(reason) => out.extend(self.remove(id, LeaseOutcome::Aborted(reason))),
                // A heartbeat moved it: due again at its new deadline.
                None => {
                    let next = entry.deadlines().next().as_nanos();
                    self.heap.push(Reverse((next, slot, generation)));
                }
            }
        }
    }

    fn profile_for(&self, route: &str) -> Option<&ProfileConfig> {
        self.profiles.iter().find(|(p, _)| p.matches(route)).map(|(_, c)| c)
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every critical section leaves the registry consistent before anything can panic.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `route` has live leases: work in flight, so not idle whatever its last
    /// decision's age. Asked by the route table's eviction only for routes it would evict
    /// (the registry's lock is taken under the table's; nothing takes them the other way).
    pub(super) fn working(&self, route: &str) -> bool {
        self.lock().active.contains_key(route)
    }
}

impl<O: PhysicsObserver> Engine<O> {
    /// Starts a task lease on `route` at `now` (docs/DESIGN.md §2, task leases): decided
    /// like a request at the options' priority (a route that would shed the request sheds
    /// the lease: [`LeaseStart::Shed`] with its reason and retry hint), then counted among
    /// the route's live leases until it completes, is cancelled, or is aborted.
    ///
    /// The profile is the options', else the route's ([`Engine::set_route_profile`]), else
    /// the standard one; its `max_duration` and `heartbeat` apply unless the options set
    /// them. A profile that requires an abort handle and options without one are
    /// [`LeaseError::AbortRequired`], before any decision is made. A route that has learned
    /// no normal yet has it seeded from the profile. Expired leases are swept first.
    pub fn start_lease(&self, route: &str, now: Timestamp, options: LeaseOptions) -> Result<LeaseStart, LeaseError> {
        self.start_lease_gated(route, now, options, || true).unwrap_or_else(|| {
            // `|| true` never refuses.
            Err(LeaseError::Gone { id: LeaseId::from_u64(0) })
        })
    }

    /// As [`Engine::start_lease`], with a new route created only if `may_create` says so
    /// (as [`Engine::decide_gated`]): `None` when it said no, and nothing changed.
    pub fn start_lease_gated(
        &self,
        route: &str,
        now: Timestamp,
        options: LeaseOptions,
        may_create: impl FnOnce() -> bool,
    ) -> Option<Result<LeaseStart, LeaseError>> {
        if let Err(e) = crate::limits::check_route_id(route) {
            return Some(Err(LeaseError::InvalidRouteId { len: e.len }));
        }
        let LeaseOptions { priority, profile, max_duration, heartbeat, abort } = options;
        let profile = match profile {
            Some(p) => p,
            None => self.leases.lock().profile_for(route).cloned().unwrap_or_default(),
        };
        let effective = ProfileConfig {
            max_duration: max_duration.unwrap_or(profile.max_duration),
            heartbeat: heartbeat.or(profile.heartbeat),
            ..profile.clone()
        };
        if let Err(e) = effective.validate() {
            return Some(Err(e.into()));
        }
        if effective.requires_abort && abort.is_none() {
            return Some(Err(LeaseError::AbortRequired { route: route.to_owned(), profile: effective.name() }));
        }
        self.sweep_leases(now);
        let max = self.limits.max_leases;
        if self.leases.lock().live >= max {
            return Some(Err(LeaseError::TooMany { max }));
        }

        let target = match self.find(route, Route::clone) {
            Some(r) => Target::Tracked(r),
            None => match self.route_or_create(route, now, may_create) {
                Slot::Tracked(r) => Target::Tracked(r),
                Slot::Untracked => Target::Untracked(route.into()),
                Slot::Refused => return None,
            },
        };
        let decision = match &target {
            Target::Tracked(r) => self.decide_route(r, now, priority),
            Target::Untracked(id) => self.decide_untracked(id, now, priority),
        };
        if !decision.is_admitted() {
            return Some(Ok(LeaseStart::Shed(decision)));
        }
        if let Target::Tracked(r) = &target {
            seed_normal(r.cell(), &effective);
        }

        let abort = abort.unwrap_or_default();
        let beat_timeout = effective.heartbeat_timeout();
        let expires_at = now.saturating_add(effective.max_duration);
        let entry = Entry {
            target,
            started: now,
            expires_at,
            beat_timeout,
            heartbeat_by: beat_timeout.map(|t| now.saturating_add(t).min(expires_at)),
            abort: abort.clone(),
            capacity: effective.capacity,
        };
        let deadlines = entry.deadlines();
        // The route's name for the observer, which runs after the lock (a count, not a copy).
        let observed = match &entry.target {
            Target::Tracked(r) => Some(r.clone()),
            Target::Untracked(_) => None,
        };
        let id = {
            let mut reg = self.leases.lock();
            if reg.live >= max {
                return Some(Err(LeaseError::TooMany { max }));
            }
            reg.insert(entry)
        };
        let route_name = observed.as_ref().map_or(UNTRACKED_ROUTE, Route::name);
        self.observer.on_event(&Event::LeaseStarted { route: route_name, at: now });
        Some(Ok(LeaseStart::Granted(LeaseGrant {
            id,
            decision,
            started: now,
            deadlines,
            heartbeat: effective.heartbeat,
            abort,
            profile: effective.name(),
        })))
    }

    /// A heartbeat of lease `id` at `now`: its heartbeat deadline moves to `now` plus
    /// [`ProfileConfig::MISSED_HEARTBEATS`] intervals (never past its expiry). A lease already
    /// overdue is aborted now ([`LeaseError::Aborted`]: its abort fired, a failure
    /// reported); one that is not live is [`LeaseError::Gone`].
    pub fn heartbeat_lease(&self, id: LeaseId, now: Timestamp) -> Result<LeaseDeadlines, LeaseError> {
        let mut reg = self.leases.lock();
        let entry = reg.get_mut(id).ok_or(LeaseError::Gone { id })?;
        if let Some(reason) = entry.overdue(now) {
            let ended = reg.remove(id, LeaseOutcome::Aborted(reason));
            drop(reg);
            self.finish(ended, now);
            return Err(LeaseError::Aborted { id, reason });
        }
        if let Some(t) = entry.beat_timeout {
            entry.heartbeat_by = Some(now.saturating_add(t).min(entry.expires_at));
        }
        if let Target::Tracked(r) = &entry.target {
            // A route working on a lease is not idle.
            r.cell().touch(now);
        }
        Ok(entry.deadlines())
    }

    /// Completes lease `id` at `now`: reported as one sample of the route, its latency the
    /// lease's duration, a success if `ok`. A lease already overdue is aborted instead
    /// ([`LeaseError::Aborted`]); one that is not live is [`LeaseError::Gone`].
    pub fn complete_lease(&self, id: LeaseId, ok: bool, now: Timestamp) -> Result<LeaseOutcome, LeaseError> {
        let outcome = if ok { LeaseOutcome::Completed } else { LeaseOutcome::Failed };
        self.end_lease(id, outcome, now)
    }

    /// Cancels lease `id` at `now`: it stops counting and reports nothing (its holder gave
    /// it up; nothing is known of how the work went). A lease already overdue is aborted
    /// instead ([`LeaseError::Aborted`]); one that is not live is [`LeaseError::Gone`].
    pub fn cancel_lease(&self, id: LeaseId, now: Timestamp) -> Result<(), LeaseError> {
        self.end_lease(id, LeaseOutcome::Cancelled, now).map(|_| ())
    }

    fn end_lease(&self, id: LeaseId, outcome: LeaseOutcome, now: Timestamp) -> Result<LeaseOutcome, LeaseError> {
        let mut reg = self.leases.lock();
        let entry = reg.get(id).ok_or(LeaseError::Gone { id })?;
        let overdue = entry.overdue(now);
        let ended = reg.remove(id, overdue.map_or(outcome, LeaseOutcome::Aborted));
        drop(reg);
        self.finish(ended, now);
        match overdue {
            Some(reason) => Err(LeaseError::Aborted { id, reason }),
            None => Ok(outcome),
        }
    }

    /// Aborts every lease overdue at `now` (each reported as a failure, its abort fired) and
    /// returns how many. The facade and the sidecar call it from a timer; every lease call
    /// also checks its own lease, so a missed sweep delays an abort, never changes it.
    pub fn sweep_leases(&self, now: Timestamp) -> usize {
        let mut ended = Vec::new();
        {
            let mut reg = self.leases.lock();
            // Most sweeps find nothing: one look at the heap's top.
            if reg.heap.peek().is_none_or(|Reverse((d, _, _))| *d >= now.as_nanos()) {
                return 0;
            }
            reg.expired(now, &mut ended);
        }
        let n = ended.len();
        for e in ended {
            self.finish(Some(e), now);
        }
        n
    }

    /// Aborts every live lease ([`AbortReason::Shutdown`]: fired, not reported) and returns
    /// how many: for an engine that is shutting down.
    pub fn abort_leases(&self, now: Timestamp) -> usize {
        let ended: Vec<Ended> = {
            let mut reg = self.leases.lock();
            let ids: Vec<LeaseId> = reg
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.lease.is_some())
                .filter_map(|(i, s)| Some(LeaseId::new(u32::try_from(i).ok()?, s.generation)))
                .collect();
            ids.into_iter().filter_map(|id| reg.remove(id, LeaseOutcome::Aborted(AbortReason::Shutdown))).collect()
        };
        let n = ended.len();
        for e in ended {
            self.finish(Some(e), now);
        }
        n
    }

    /// The earliest deadline among the live leases (the next a sweep could act on), if any.
    pub fn next_lease_deadline(&self) -> Option<Timestamp> {
        let reg = self.leases.lock();
        reg.heap.peek().map(|Reverse((d, _, _))| Timestamp::from_nanos(*d))
    }

    /// The deadlines of a live lease.
    pub fn lease_deadlines(&self, id: LeaseId) -> Result<LeaseDeadlines, LeaseError> {
        self.leases.lock().get(id).map(Entry::deadlines).ok_or(LeaseError::Gone { id })
    }

    /// Live leases on `route`: its work in flight. A route's saturation is
    /// `active_leases / capacity` when its capacity is known
    /// ([`ProfileConfig::capacity`], which makes every lease report it).
    pub fn active_leases(&self, route: &str) -> u32 {
        self.leases.lock().active.get(route).copied().unwrap_or(0)
    }

    /// Live leases on every route.
    pub fn lease_count(&self) -> usize {
        self.leases.lock().live
    }

    /// Sets (`Some`) or removes (`None`) the workload profile of the routes `pattern`
    /// matches (an exact route id or a glob, as [`Engine::set_route_config`]):
    /// - their physics: the engine's config with the profile applied
    ///   ([`PhysicsConfig::with_workload`]), replacing any per-route config set on the same
    ///   pattern (removing the profile removes it);
    /// - their leases' defaults (longest duration, heartbeat, abort handle required);
    /// - the learned normal of matching routes that have learned none yet, seeded from the
    ///   profile's latency baseline (a hint worth one sample; see docs/DESIGN.md §2).
    pub fn set_route_profile(&self, pattern: &str, profile: Option<ProfileConfig>) -> Result<(), EngineError> {
        let pat = RoutePattern::parse(pattern)?;
        if let Some(p) = &profile {
            p.validate()?;
        }
        let config = profile.as_ref().map(|p| self.phys.cfg.clone().with_workload(p));
        self.set_route_config(pattern, config)?;
        {
            let mut reg = self.leases.lock();
            reg.profiles.retain(|(p, _)| *p != pat);
            if let Some(p) = &profile {
                reg.profiles.push((pat.clone(), p.clone()));
                reg.profiles.sort_by_key(|(p, _)| Reverse(p.specificity()));
            }
        }
        if let Some(p) = &profile {
            if pat.is_glob() {
                let guard = scc::Guard::new();
                for (route, ()) in self.routes.iter(&guard) {
                    if pat.matches(route.name()) {
                        seed_normal(route.cell(), p);
                    }
                }
            } else if let Some(r) = self.find(pattern, Route::clone) {
                seed_normal(r.cell(), p);
            }
        }
        Ok(())
    }

    /// The profile the leases of `route` default to, if one was set
    /// ([`Engine::set_route_profile`]).
    pub fn route_profile(&self, route: &str) -> Option<ProfileConfig> {
        self.leases.lock().profile_for(route).cloned()
    }

    /// Reports, fires and tells what one ended lease calls for.
    fn finish(&self, ended: Option<Ended>, now: Timestamp) {
        let Some(Ended { entry, outcome, active }) = ended else { return };
        let ok = match outcome {
            LeaseOutcome::Completed => Some(true),
            LeaseOutcome::Failed => Some(false),
            LeaseOutcome::Aborted(reason) => {
                entry.abort.fire(reason);
                (reason.is_expiry()).then_some(false)
            }
            _ => None,
        };
        // An expired lease ran at least until its deadline; nothing is known beyond it.
        let end = match outcome {
            LeaseOutcome::Aborted(AbortReason::MaxDuration) => entry.expires_at.min(now),
            LeaseOutcome::Aborted(AbortReason::MissedHeartbeat) => {
                entry.heartbeat_by.unwrap_or(entry.expires_at).min(now)
            }
            _ => now,
        };
        let duration = end.saturating_since(entry.started);
        if let Some(ok) = ok {
            match &entry.target {
                Target::Tracked(r) => {
                    let phys = r.cell().phys();
                    let saturation = entry
                        .capacity
                        .map_or(phys.cfg.baseline.saturation, |c| (f64::from(active) / f64::from(c)).min(1.0));
                    let latency = (duration.as_secs_f64() * 1e3).min(Telemetry::MAX_LATENCY_MS);
                    if let Ok(t) = Telemetry::outcome(latency, ok, saturation) {
                        self.report_route(r, t, now);
                    }
                }
                Target::Untracked(_) => {
                    self.dropped_reports.fetch_add(1, Relaxed);
                }
            }
        }
        self.observer.on_event(&Event::LeaseEnded { route: entry.name(), at: now, outcome, duration });
    }
}

/// Seeds the learned normal of a route that has learned nothing yet from a profile's
/// latency baseline: mean the baseline, deviation half of it, worth one sample (its weight
/// fades with the normal's horizon like any sample's). A route that has learned keeps what
/// it learned: evidence beats the prior.
fn seed_normal(cell: &RouteCell, profile: &ProfileConfig) {
    let phys = cell.phys();
    if phys.cfg.model != Model::Default || !phys.cfg.normal.learn {
        return;
    }
    cell.modify(phys, |s| {
        if let crate::physics::Memory::Default(m) = &mut s.k.memory
            && m.normal.samples == 0
        {
            let b = profile.baseline_latency_ms;
            m.normal = crate::physics::Normal::restored(1, b, (b / 2.0) * (b / 2.0));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            target: Target::Untracked("r".into()),
            started: Timestamp::from_millis(0),
            expires_at: Timestamp::from_millis(1_000),
            beat_timeout: None,
            heartbeat_by: None,
            abort: AbortHandle::new(),
            capacity: None,
        }
    }

    #[test]
    fn a_slot_whose_generations_are_spent_is_retired_so_no_old_id_names_a_new_lease() {
        let mut reg = Registry::default();
        let first = reg.insert(entry());
        assert_eq!((first.slot(), first.generation()), (0, 1));
        reg.remove(first, LeaseOutcome::Cancelled);
        // The same slot, 2^32 - 2 leases later: its last generation.
        reg.slots[0].generation = u32::MAX - 1;
        let last = reg.insert(entry());
        assert_eq!((last.slot(), last.generation()), (0, u32::MAX));
        reg.remove(last, LeaseOutcome::Cancelled);
        let next = reg.insert(entry());
        assert_ne!(next, first, "an id handed out long ago names the new lease");
        assert!(reg.get(first).is_none() && reg.get(last).is_none());
        assert_eq!((reg.live, reg.active.get("r").copied()), (1, Some(1)));
    }

    #[test]
    fn the_heap_stays_within_a_constant_factor_of_the_live_leases() {
        let mut reg = Registry::default();
        let _keep = reg.insert(entry());
        for _ in 0..10_000 {
            let id = reg.insert(entry());
            reg.remove(id, LeaseOutcome::Completed);
            assert!(reg.heap.len() <= 2 * reg.live + 65, "{} entries for {} live", reg.heap.len(), reg.live);
        }
        assert_eq!((reg.live, reg.slots.len()), (1, 2), "slots are reused");
    }
}
