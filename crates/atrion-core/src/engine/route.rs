//! A route in memory: the view decisions read without a lock (`View`), the physics behind
//! the route's own short mutex (`RouteCell`), the cell and its id in one allocation
//! (`Route`, the table's key), and the physics every route points into (`PhysicsSet`).

use parking_lot::lock_api::RawMutex;

use super::*;

/// What a decision reads: published by `report`, read without a lock. The fields every
/// decision reads come first, 64 bytes together; the half-open and keep-alive bookkeeping
/// follows. Not aligned to a cache line: the padding would cost more memory per route than
/// the line it saves.
#[derive(Debug, Default)]
#[repr(C)]
pub(super) struct View {
    // The first 64 bytes: what every decision reads.
    pub(super) mode: AtomicU8,
    /// An operator's hold ([`Hold`] as a byte; 0 when none).
    pub(super) held: AtomicU8,
    pub(super) cluster_on: AtomicBool,
    /// Reported since the state layer last collected this route.
    pub(super) dirty: AtomicBool,
    /// The shed ratio of the proportional answer (f32 bits, as the physics keeps it;
    /// default model).
    pub(super) throttle: AtomicU32,
    pub(super) resistance: AtomicU64,
    pub(super) scar: AtomicU64,
    pub(super) at: AtomicU64,
    pub(super) break_point: AtomicU64,
    /// The other nodes' scar for this route (f64 bits) and when it was that value; only
    /// meaningful while `cluster_on`.
    pub(super) cluster_scar: AtomicU64,
    pub(super) cluster_at: AtomicU64,
    /// The half-open probe quota.
    pub(super) quota: AtomicU32,
    /// Sheds turned into admits by a shadow hold (in the padding before the next field;
    /// wraps after 2^32).
    pub(super) shadowed: AtomicU32,
    // Then open, half-open, keep-alive, throttle sequence and bookkeeping.
    /// The second the route was last decided or reported on (engine time in whole seconds,
    /// wrapping after 2^32: compared by [`View::idle_secs`]); idle eviction needs no more.
    pub(super) last_seen: AtomicU32,
    /// Decisions that met the throttle: the deterministic dither counts them (wraps after
    /// 2^32, which only restarts the dither's pattern).
    pub(super) throttled: AtomicU32,
    pub(super) open_until: AtomicU64,
    pub(super) window_start: AtomicU64,
    /// Half-open: probes admitted in this probe window; open: requests shed since the trip or
    /// the last scout (counted up to [`decide::SCOUT_AFTER`]).
    pub(super) probes: AtomicU32,
    /// Samples wait in the route's [`Pending`] sums for the next physics step.
    pub(super) pending: AtomicBool,
    /// The lock of the route's kept state ([`RouteCell::lock`]): one byte, in the room the
    /// fields around it leave (`std`'s mutex took eight more bytes a route).
    pub(super) lock: KeptLock,
    /// The length of the route's id in bytes (ids are at most [`crate::limits::MAX_ROUTE_ID`]
    /// bytes), which follows the cell in its allocation: so the table holds a thin pointer
    /// ([`Route`]). Set once, before the route is shared.
    id_len: u16,
    pub(super) keepalive_at: AtomicU64,
}

/// A one-byte lock (`parking_lot`'s: a contended thread spins briefly, then sleeps).
pub(super) struct KeptLock(parking_lot::RawMutex);

impl Default for KeptLock {
    fn default() -> Self {
        KeptLock(<parking_lot::RawMutex as RawMutex>::INIT)
    }
}

impl std::fmt::Debug for KeptLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeptLock").field(&self.0.is_locked()).finish()
    }
}

/// The route's kept state, locked: unlocks when dropped.
pub(super) struct KeptGuard<'a>(&'a RouteCell);

impl std::ops::Deref for KeptGuard<'_> {
    type Target = Kept;

    #[inline]
    fn deref(&self) -> &Kept {
        // SAFETY: the guard exists only while its cell's lock is held (made by
        // `RouteCell::lock` or `try_lock` after taking it), so no other reference to the
        // kept state exists meanwhile.
        unsafe { &*self.0.state.get() }
    }
}

impl std::ops::DerefMut for KeptGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Kept {
        // SAFETY: as in `deref`; `&mut self` makes this the only use of the guard.
        unsafe { &mut *self.0.state.get() }
    }
}

impl Drop for KeptGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this guard holds the lock (taken when it was made, released only here).
        unsafe { self.0.view.lock.0.unlock() }
    }
}

/// `now` in whole seconds, as [`View::last_seen`] keeps it (wrapping after 2^32 s).
#[inline]
pub(super) fn whole_secs(now: Timestamp) -> u32 {
    (now.as_nanos() / 1_000_000_000) as u32
}

impl View {
    /// Whole seconds from the second the route was last seen to `now`'s (zero if the route
    /// was seen at or after `now`: a clock behind). Wrapping: right for gaps under 68 years.
    #[inline]
    pub(super) fn idle_secs(&self, now: Timestamp) -> u32 {
        let gap = whole_secs(now).wrapping_sub(self.last_seen.load(Relaxed));
        if gap > i32::MAX as u32 { 0 } else { gap }
    }
}

/// How far before a route's last step a sample may be stamped and still join the window
/// (1 s): threads whose clocks trail a little (preemption, a clock read early) do not take
/// the route's lock; a clock further behind, or a last step stamped in the future, steps
/// at once with no time passing.
pub(super) const SKEW_FOLD_NS: u64 = 1_000_000_000;

/// Seconds from `then_ns` to `now` (zero if `then` is later), without building a `Duration`.
#[inline]
pub(super) fn secs_since(now: Timestamp, then_ns: u64) -> f64 {
    now.as_nanos().saturating_sub(then_ns) as f64 * 1e-9
}

#[inline]
pub(super) fn load_f(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Relaxed))
}

#[inline]
pub(super) fn store_f(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Relaxed);
}

/// One route: the view decisions read, then its physics behind a short mutex. Its id
/// follows it in the same allocation ([`Route`]).
#[derive(Debug)]
#[repr(C)]
pub(super) struct RouteCell {
    pub(super) view: View,
    /// The route's physics: the engine's, or a per-route override's. Points into the
    /// engine's [`PhysicsSet`], which keeps every physics it hands out for as long as the
    /// engine lives; a cell is only used through its engine.
    pub(super) phys: AtomicPtr<Physics>,
    /// The rest of the route's state: what the view publishes is stored only there. Read
    /// and written only under the view's `lock` ([`RouteCell::lock`]).
    state: std::cell::UnsafeCell<Kept>,
    /// What reports added since the last physics step (default model, operational).
    pub(super) pending: Pending,
}

impl RouteCell {
    /// A new route's cell, published; `last_seen` in nanoseconds (kept in whole seconds);
    /// `id_len`: the length of the id that follows it.
    fn new(phys: &Arc<Physics>, last_seen: u64, id_len: u16) -> Self {
        let kept = Kept::new(phys);
        let cell = RouteCell {
            view: View { id_len, ..View::default() },
            phys: AtomicPtr::new(Arc::as_ptr(phys).cast_mut()),
            state: std::cell::UnsafeCell::new(kept.clone()),
            pending: Pending::default(),
        };
        cell.publish(&kept, &Published::new(phys), phys);
        cell.view.last_seen.store(whole_secs(Timestamp::from_nanos(last_seen)), Relaxed);
        cell
    }

    /// The route's physics.
    #[inline]
    pub(super) fn phys(&self) -> &Physics {
        // SAFETY: the pointer comes from an `Arc<Physics>` that the engine's `PhysicsSet`
        // holds until the engine is dropped, and a cell is only used through its own engine
        // (the engine's methods, a `Handle` holding a borrow or an `Arc` of it; nothing
        // reads the physics when a cell is dropped), so the physics outlives every use.
        unsafe { &*self.phys.load(Acquire) }
    }

    /// The route's kept state, locked (waiting for the lock if another thread holds it).
    /// A panic under the lock leaves the state as it was written so far, and unlocks.
    #[inline]
    pub(super) fn lock(&self) -> KeptGuard<'_> {
        self.view.lock.0.lock();
        KeptGuard(self)
    }

    /// The published part of the state, as the view holds it (under the route's lock, the
    /// last values published).
    #[inline]
    pub(super) fn published(&self) -> Published {
        let v = &self.view;
        Published {
            resistance: load_f(&v.resistance),
            scar: load_f(&v.scar),
            break_point: load_f(&v.break_point),
            last: Timestamp::from_nanos(v.at.load(Relaxed)),
            open_until: Timestamp::from_nanos(v.open_until.load(Relaxed)),
        }
    }

    /// The route's lock if no one holds it (a due step is run by one caller; the others
    /// carry on).
    #[inline]
    pub(super) fn try_lock(&self) -> Option<KeptGuard<'_>> {
        self.view.lock.0.try_lock().then(|| KeptGuard(self))
    }

    /// Whether a physics step is due at `now`: samples wait, and `step` has passed since
    /// the last (default model), or `now` is more than [`SKEW_FOLD_NS`] before it (a clock
    /// far behind, or a route whose last step was stamped far ahead: the step runs with no
    /// time passing, so that a timestamp from the future cannot stop the physics).
    ///
    /// The flag is read with `SeqCst`, as the count is added and the flag cleared: a report
    /// that finds the flag set while a step clears it has its sample in that step.
    #[inline]
    pub(super) fn step_due(&self, phys: &Physics, now: Timestamp) -> bool {
        if !self.view.pending.load(SeqCst) {
            return false;
        }
        let (now, at) = (now.as_nanos(), self.view.at.load(Relaxed));
        match now.checked_sub(at) {
            Some(d) => d >= phys.step_ns,
            None => at - now > SKEW_FOLD_NS,
        }
    }

    /// Takes the samples pending (under the route's lock): clears the flag first, then
    /// takes the count (`SeqCst` both, see [`RouteCell::step_due`]), so that a sample whose
    /// report read the flag still set is in what is taken. `may_stripe`: see
    /// [`Pending::take`].
    pub(super) fn take_pending(&self, may_stripe: bool) -> Taken {
        self.view.pending.store(false, SeqCst);
        self.pending.take(may_stripe)
    }

    /// Marks the route reported since the state layer last collected it (written only when
    /// it changes, so that reporting threads do not fight over the line).
    #[inline]
    pub(super) fn mark_dirty(&self) {
        if !self.view.dirty.load(Relaxed) {
            self.view.dirty.store(true, Relaxed);
        }
    }

    /// Runs `f` on the route's whole state, under the route's lock.
    pub(super) fn inspect<R>(&self, f: impl FnOnce(&RouteState) -> R) -> R {
        let mut kept = self.lock();
        f(&RouteState::new(&mut kept, self.published()))
    }

    /// Runs `f` on the route's whole state under the route's lock, then publishes it.
    /// Returns what `f` returned and the mode the view had before.
    #[inline]
    pub(super) fn modify<R>(&self, phys: &Physics, f: impl FnOnce(&mut RouteState) -> R) -> (R, Mode) {
        self.modify_locked(&mut self.lock(), phys, f)
    }

    /// As [`RouteCell::modify`], with the route's lock already held (`kept` is its guard).
    #[inline]
    pub(super) fn modify_locked<R>(
        &self,
        kept: &mut Kept,
        phys: &Physics,
        f: impl FnOnce(&mut RouteState) -> R,
    ) -> (R, Mode) {
        let mut s = RouteState::new(kept, self.published());
        // A decision may have moved the route to half-open on its timer; follow it, so that
        // publishing does not undo it.
        if s.k.mode == Mode::Open && Mode::from_u8(self.view.mode.load(Acquire)) == Mode::HalfOpen {
            s.set_mode(Mode::HalfOpen);
        }
        let out = f(&mut s);
        let published = s.published();
        (out, self.publish(kept, &published, phys))
    }

    /// Publishes the state for decisions. The mode goes last (release), so a decision that
    /// sees a mode sees the values written with it. Returns the mode the view had before.
    pub(super) fn publish(&self, k: &Kept, p: &Published, phys: &Physics) -> Mode {
        let v = &self.view;
        store_f(&v.resistance, p.resistance);
        store_f(&v.scar, p.scar);
        v.at.store(p.last.as_nanos(), Relaxed);
        store_f(&v.break_point, p.break_point);
        v.throttle.store(k.throttle().to_bits(), Relaxed);
        v.open_until.store(p.open_until.as_nanos(), Relaxed);
        v.quota.store(k.probe_quota(phys), Relaxed);
        Mode::from_u8(v.mode.swap(k.mode as u8, Release))
    }

    /// The cluster's scar for this route healed to `now`, if other nodes report on it.
    #[inline]
    pub(super) fn cluster(&self, phys: &Physics, now: Timestamp) -> Option<f64> {
        let v = &self.view;
        if !v.cluster_on.load(Acquire) {
            return None;
        }
        let age = secs_since(now, v.cluster_at.load(Relaxed));
        Some(load_f(&v.cluster_scar) * heal_factor_fast(phys.cfg.scar_decay * age))
    }

    #[inline]
    pub(super) fn touch(&self, now: Timestamp) {
        // Written at most once a second (when the second changes), so that deciding threads
        // do not fight over it.
        if self.view.idle_secs(now) > 0 {
            self.view.last_seen.store(whole_secs(now), Relaxed);
        }
    }

    #[inline]
    pub(super) fn status(&self) -> RouteStatus {
        let v = &self.view;
        RouteStatus {
            mode: Mode::from_u8(v.mode.load(Acquire)),
            resistance: load_f(&v.resistance),
            scar: load_f(&v.scar),
            break_point: load_f(&v.break_point),
            open_until: Timestamp::from_nanos(v.open_until.load(Relaxed)),
        }
    }
}

// SAFETY: the one field that is not `Sync`, the kept state in its `UnsafeCell`, is reached
// only through a `KeptGuard`, which holds the cell's lock: one thread at a time.
unsafe impl Sync for RouteCell {}

/// What a route's allocation holds after its count: the cell, then the id.
type Inner = triomphe::HeaderSlice<RouteCell, str>;

/// The longest id a route keeps: the id's length is kept in 16 bits.
const MAX_ID: usize = u16::MAX as usize;
const _: () = assert!(crate::limits::MAX_ROUTE_ID <= MAX_ID);

/// A route: its cell and its id, in one allocation (`triomphe`'s header-and-slice `Arc`,
/// whose count has no weak half). It is the route table's key, hashed and compared by id,
/// so that the id is stored once.
///
/// A thin pointer (8 bytes in the table's buckets, not 16): it points at the cell, which
/// starts the `Arc`'s data and keeps the id's length ([`View::id_len`]); the `Arc`'s fat
/// pointer is rebuilt from the two when needed.
pub(super) struct Route(std::ptr::NonNull<RouteCell>);

// SAFETY: a `Route` is a `triomphe::Arc<Inner>` held as a thin pointer, and that `Arc` is
// `Send` and `Sync` because `Inner` is (`RouteCell` is `Sync`, see its impl, and `Send`).
unsafe impl Send for Route {}
// SAFETY: as above.
unsafe impl Sync for Route {}

impl Route {
    pub(super) fn new(name: &str, phys: &Arc<Physics>, now: Timestamp) -> Self {
        // Ids are checked to at most `MAX_ROUTE_ID` bytes before a route is made; were one
        // longer, it would be cut at a character boundary, never its length misstated.
        let mut len = name.len().min(MAX_ID);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let (name, id_len) = (&name[..len], len as u16);
        Route::from_arc(triomphe::Arc::from_header_and_str(RouteCell::new(phys, now.as_nanos(), id_len), name))
    }

    fn from_arc(arc: triomphe::Arc<Inner>) -> Self {
        let data = triomphe::Arc::into_raw(arc);
        // `HeaderSlice` is `repr(C)`: the cell is at the start of the data.
        // SAFETY: `into_raw` gives the pointer to the data of a live `Arc`, never null.
        Route(unsafe { std::ptr::NonNull::new_unchecked(data.cast::<RouteCell>().cast_mut()) })
    }

    /// The fat pointer `Arc::into_raw` gave: the data's address and the id's length.
    #[inline]
    fn raw(&self) -> *const Inner {
        let len = usize::from(self.cell().view.id_len);
        std::ptr::slice_from_raw_parts(self.0.as_ptr().cast_const().cast::<u8>(), len) as *const Inner
    }

    /// The `Arc` this route holds, borrowed (its count untouched).
    #[inline]
    fn arc(&self) -> std::mem::ManuallyDrop<triomphe::Arc<Inner>> {
        // SAFETY: `raw` rebuilds exactly the pointer `into_raw` gave (the address it was made
        // from and the id's length, kept in the cell when it was made), and this route holds
        // one count of it; `ManuallyDrop` leaves that count to `Drop`.
        std::mem::ManuallyDrop::new(unsafe { triomphe::Arc::from_raw(self.raw()) })
    }

    #[inline]
    pub(super) fn name(&self) -> &str {
        // SAFETY: the data lives as long as `self` holds its count; see `arc`.
        unsafe { &(*self.raw()).slice }
    }

    #[inline]
    pub(super) fn cell(&self) -> &RouteCell {
        // SAFETY: the cell starts the data (`from_arc`), alive while `self` holds its count.
        unsafe { self.0.as_ref() }
    }

    /// Whether both are the same route (one allocation), not merely of the same id.
    #[inline]
    pub(super) fn same_as(&self, other: &Route) -> bool {
        self.0 == other.0
    }
}

impl Clone for Route {
    #[inline]
    fn clone(&self) -> Self {
        Route::from_arc(triomphe::Arc::clone(&self.arc()))
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        // SAFETY: as in `arc`; this gives back the count this route held, once.
        drop(unsafe { triomphe::Arc::from_raw(self.raw()) });
    }
}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Route {}

impl std::borrow::Borrow<str> for Route {
    fn borrow(&self) -> &str {
        self.name()
    }
}

/// Every physics the engine has handed to a route, kept until the engine is dropped (cells
/// point into it). Equal configurations share one, so that setting the same per-route
/// config again and again does not grow it.
#[derive(Debug, Default)]
pub(super) struct PhysicsSet(Mutex<Vec<Arc<Physics>>>);

impl PhysicsSet {
    pub(super) fn keep(&self, phys: Physics) -> Arc<Physics> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(same) = all.iter().find(|p| p.cfg == phys.cfg) {
            return same.clone();
        }
        let phys = Arc::new(phys);
        all.push(phys.clone());
        phys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PhysicsConfig;

    #[test]
    fn a_route_keeps_its_id_through_its_thin_pointer() {
        let phys = Arc::new(Physics::new(PhysicsConfig::default()));
        let longest = "é".repeat(crate::limits::MAX_ROUTE_ID / 2);
        for id in ["a", "GET /checkout", "tenant-000042 GET /orders", "ünïcödé /päth", longest.as_str()] {
            let route = Route::new(id, &phys, Timestamp::from_millis(1));
            let copy = route.clone();
            assert_eq!((route.name(), copy.name()), (id, id));
            assert!(route.same_as(&copy));
            assert!(!route.same_as(&Route::new(id, &phys, Timestamp::ZERO)), "another route of the same id");
            drop(route);
            assert_eq!(copy.name(), id, "a clone outlives the original");
            assert_eq!(copy.cell().view.mode.load(Relaxed), Mode::Bootstrap as u8);
        }
        assert_eq!(std::mem::size_of::<Route>(), 8);
    }
}
