//! The two routes a thread last decided or reported on by name: a per-thread cache in front
//! of the route table, so that a thread deciding on the same routes again and again pays
//! neither the name's hash nor the table's epoch-guarded lookup (about 200 instructions of
//! a decision's 370; docs/BENCHMARKS.md, issue 29).
//!
//! An entry is used only when all of these hold, so that it can never stand for anything
//! but what the table would have given:
//! - it is of the same engine: engines are numbered from a process-wide counter, never
//!   reused, so a new engine at a freed engine's address is another engine;
//! - no route has left that engine's table since the entry was made: the engine counts
//!   removals ([`Engine::removals`]) after each one, and an entry remembers the count read
//!   before its lookup. A removed or evicted route, or one removed and created again, is
//!   never reached through the cache: the next call looks it up;
//! - the name is the same, compared in full (the hash plays no part).
//!
//! The entry holds a strong reference to the route (its count, one atomic add when the entry
//! is made), so what it points to cannot be freed while it is used: no epoch guard is held
//! across calls. A route evicted, or whose engine is gone, may stay in a thread's entries
//! until that thread uses two other routes by name (its memory only: nothing reads it, and an
//! engine dropped clears the dropping thread's entries).
//!
//! The entries are borrowed while a decision runs on one: an observer that decides by name
//! from inside a decision still reads them, and a miss made then is simply not remembered. Nothing
//! here allocates (the thread's destructor is registered with the C library on the first
//! use) or panics.

use std::cell::{Cell, RefCell};

use super::*;

/// One route a thread used by name: its engine, the engine's removal count when it was
/// looked up, and a strong reference to it.
struct Entry {
    engine: u64,
    removals: u64,
    route: Route,
}

/// A thread's last two routes by name: two, so that a thread taking turns between two
/// routes (a request and its callee, two tenants) hits too. A miss replaces the one not used
/// last, in place.
struct Last {
    entries: [Option<Entry>; 2],
    /// The entry a miss replaces (0 or 1).
    next: Cell<usize>,
}

thread_local! {
    static LAST: RefCell<Last> = const { RefCell::new(Last { entries: [None, None], next: Cell::new(0) }) };
}

/// The next engine's number (never 0, never reused in a process).
static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// A number for a new engine.
pub(super) fn engine_id() -> u64 {
    NEXT_ENGINE.fetch_add(1, Relaxed)
}

/// Whether two route ids are the same: byte for byte, always (never by pointer: a caller may
/// refill one buffer with another id of the same length). Ids of 8 to 16 bytes, the common
/// case, compare as two overlapping words each, without a call.
#[inline(always)]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    match (a.first_chunk::<8>(), a.last_chunk::<8>(), b.first_chunk::<8>(), b.last_chunk::<8>()) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) if a.len() <= 16 => a0 == b0 && a1 == b1,
        _ => a == b,
    }
}

impl<O: PhysicsObserver> Engine<O> {
    /// Runs `f` on the tracked route `name`: one of the thread's last routes by name when it
    /// is still valid (see the module's doc), else looked up in the table and remembered.
    #[inline]
    pub(super) fn find_by_name<R>(&self, name: &str, f: impl Fn(&Route) -> R) -> Option<R> {
        let hit = LAST.try_with(|last| {
            let last = last.try_borrow().ok()?;
            // Acquire: pairs with the count's release after a removal, so that a thread that
            // saw a route removed (by any means ordered before this call) sees the count move.
            let removals = self.removals.load(Acquire);
            let (i, entry) = last.entries.iter().enumerate().find_map(|(i, e)| {
                e.as_ref()
                    .filter(|e| e.engine == self.id && e.removals == removals && same(e.route.name(), name))
                    .map(|e| (i, e))
            })?;
            last.next.set(i ^ 1);
            Some(f(&entry.route))
        });
        if let Ok(Some(out)) = hit {
            return Some(out);
        }
        self.find_and_remember(name, f)
    }

    /// The table's lookup, remembering what it found for this thread.
    #[inline(never)]
    fn find_and_remember<R>(&self, name: &str, f: impl Fn(&Route) -> R) -> Option<R> {
        // Read before the lookup: a removal after this read moves the count past it, so the
        // entry cannot outlive its route's place in the table.
        let removals = self.removals.load(Acquire);
        self.find(name, |route| {
            remember(self.id, removals, route);
            f(route)
        })
    }

    /// Counts a removal from the table (after it): every thread's entry made before it is
    /// stale from now on.
    pub(super) fn removed(&self) {
        self.removals.fetch_add(1, Release);
    }
}

/// Forgets this thread's entries of engine `engine` (which is going).
pub(super) fn forget(engine: u64) {
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            for e in last.entries.iter_mut() {
                if e.as_ref().is_some_and(|e| e.engine == engine) {
                    *e = None;
                }
            }
        }
    });
}

/// Makes `route` this thread's latest route by name (unless the entries are borrowed: a
/// lookup made from inside a decision on one of them). The same route again (stale only by
/// the count) takes no new reference.
#[inline]
fn remember(engine: u64, removals: u64, route: &Route) {
    let _ = LAST.try_with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else { return };
        let last = &mut *last;
        let mine =
            last.entries.iter().position(|e| e.as_ref().is_some_and(|e| e.engine == engine && e.route.same_as(route)));
        let i = match mine {
            Some(i) => {
                if let Some(Some(e)) = last.entries.get_mut(i) {
                    e.removals = removals;
                }
                i
            }
            None => {
                let i = last.next.get() & 1;
                last.entries[i] = Some(Entry { engine, removals, route: route.clone() });
                i
            }
        };
        last.next.set(i ^ 1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_in_full() {
        let a = String::from("GET /a");
        assert!(same("GET /a", &a));
        assert!(!same("GET /a", "GET /b"));
        assert!(!same("GET /a", "GET /ab"));
        assert!(same("", ""));
        // Every length around the word-sized comparison, differing in each byte.
        for n in 1..40 {
            let a = "x".repeat(n);
            assert!(same(&a, &a.clone()));
            for i in 0..n {
                let mut b = a.clone().into_bytes();
                b[i] = b'y';
                assert!(!same(&a, std::str::from_utf8(&b).unwrap()), "{n} {i}");
            }
        }
    }

    #[test]
    fn engines_are_numbered_apart() {
        let (a, b) = (engine_id(), engine_id());
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
