//! The route a thread last decided or reported on by name: a per-thread cache in front of
//! the route table, so that a thread deciding on the same route again and again pays
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
//! across calls. A route whose engine is gone may stay in a thread's entry until that thread
//! decides by name again (its memory only: nothing reads it, and the engine clears the
//! dropping thread's entry).
//!
//! The entry is borrowed while a decision runs on it: an observer that decides by name from
//! inside a decision still reads it, and a miss made then is simply not remembered. Nothing
//! here allocates (the thread's destructor is registered with the C library on the first
//! use) or panics.

use std::cell::RefCell;

use super::*;

/// A thread's last route by name.
struct Last {
    engine: u64,
    removals: u64,
    route: Route,
}

thread_local! {
    static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
}

/// The next engine's number (never 0, never reused in a process).
static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// A number for a new engine.
pub(super) fn engine_id() -> u64 {
    NEXT_ENGINE.fetch_add(1, Relaxed)
}

/// Whether two route ids are the same: byte for byte, always (never by pointer: a caller may
/// refill one buffer with another id of the same length).
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.as_bytes() == b.as_bytes()
}

impl<O: PhysicsObserver> Engine<O> {
    /// Runs `f` on the tracked route `name`: the thread's last route by name when it is still
    /// valid (see the module's doc), else looked up in the table and remembered.
    #[inline]
    pub(super) fn find_by_name<R>(&self, name: &str, f: impl Fn(&Route) -> R) -> Option<R> {
        let hit = LAST.try_with(|last| {
            let last = last.try_borrow().ok()?;
            let last = last.as_ref()?;
            // Acquire: pairs with the count's release after a removal, so that a thread that
            // saw a route removed (by any means ordered before this call) sees the count move.
            if last.engine != self.id || last.removals != self.removals.load(Acquire) || !same(last.route.name(), name)
            {
                return None;
            }
            Some(f(&last.route))
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

/// Forgets this thread's entry if it is of engine `engine` (which is going).
pub(super) fn forget(engine: u64) {
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut()
            && last.as_ref().is_some_and(|l| l.engine == engine)
        {
            *last = None;
        }
    });
}

/// Makes `route` this thread's last route by name (unless the entry is borrowed: a lookup
/// made from inside a decision on it).
#[inline]
fn remember(engine: u64, removals: u64, route: &Route) {
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            match last.as_mut() {
                // The same route again (the entry was stale only by the count): no new
                // reference is taken.
                Some(l) if l.engine == engine && l.route.same_as(route) => l.removals = removals,
                _ => *last = Some(Last { engine, removals, route: route.clone() }),
            }
        }
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
    }

    #[test]
    fn engines_are_numbered_apart() {
        let (a, b) = (engine_id(), engine_id());
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
