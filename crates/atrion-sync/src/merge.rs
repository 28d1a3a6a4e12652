//! MERGE: the best live share but this node's own, handed to the engine, which heals it and
//! blends it by gamma.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use atrion_state::shares::Best;

use crate::clock::EngineClock;
use crate::manager::{Set, Shared};
use crate::wire::Contribution;

impl Shared {
    /// Re-merges the routes whose listed shares name nodes that joined or fell silent since
    /// the last pulse. Other routes need nothing: the engine heals cluster values on its own,
    /// and changed shares are merged as they arrive.
    pub(crate) fn merge_if_liveness_changed(&self) {
        let wall = self.clock.wall_ms();
        let routes: Vec<String> = {
            let mut st = self.lock();
            // Unchanged (the common case) is found without building the set.
            let mut n = 0;
            if self.live_nodes(&st, wall).all(|node| {
                n += 1;
                st.live.contains(node)
            }) && n == st.live.len()
            {
                return;
            }
            let live: Set<String> = self.live_nodes(&st, wall).cloned().collect();
            let changed: Set<&String> = live.symmetric_difference(&st.live).collect();
            let routes = st
                .remote
                .iter()
                .filter(|(_, shares)| !shares.complete() || shares.top.iter().any(|s| changed.contains(&s.member)))
                .map(|(r, _)| r.to_string())
                .collect();
            st.live = live;
            routes
        };
        for route in routes {
            self.merge_route(&route);
        }
    }

    pub(crate) fn merge_all(&self) {
        let routes: Vec<Arc<str>> = self.lock().remote.keys().cloned().collect();
        for route in routes {
            self.merge_route(&route);
        }
    }

    /// Makes the merges the feed batch just applied queued ([`SyncState::merging`]), under
    /// one lock, at one reading of the clocks.
    pub(crate) fn merge_queued(&self) {
        let mut st = self.lock();
        if st.merging.is_empty() {
            return;
        }
        let (wall, now) = (self.clock.wall_ms(), self.clock.now());
        // Taken out and put back drained: its capacity is kept (no allocation per batch).
        let mut queue = std::mem::take(&mut st.merging);
        for (route, merge) in queue.drain() {
            let leader = match merge {
                Some(leader) => leader,
                None => {
                    let Some(shares) = st.remote.get(&route) else { continue };
                    let leader = self.leader(shares.best(self.counts(&st, wall)));
                    match leader {
                        Some(leader) => leader,
                        None => {
                            st.rebuild.insert(route.to_string());
                            continue;
                        }
                    }
                }
            };
            self.merge_at(&route, leader, wall, now);
        }
        st.merging = queue;
    }

    /// Hands the leading share of `route` among the other live nodes, with its age, to the
    /// engine, which heals it ([`atrion_core::Engine::merge_cluster`]) and blends the result by gamma. The
    /// shares are ranked by healed scar, so the leader is the largest at any time; when every
    /// listed leader is this node or a silent one, the route is read in full next pulse.
    pub(crate) fn merge_route(&self, route: &str) {
        let wall = self.clock.wall_ms();
        let leader = {
            let mut st = self.lock();
            let Some(shares) = st.remote.get(route) else { return };
            match self.leader(shares.best(self.counts(&st, wall))) {
                Some(leader) => leader,
                None => {
                    st.rebuild.insert(route.to_owned());
                    return;
                }
            }
        };
        self.merge_leader(route, leader, wall);
    }

    /// The contribution to merge for `best` (`Some(None)`: none; a leader's value that does
    /// not decode is counted and merged as none), or `None` when the route must be read in
    /// full first.
    pub(crate) fn leader(&self, best: Best<'_>) -> Option<Option<Contribution>> {
        match best {
            Best::Found(s) => Some(Contribution::decode(&s.value).or_else(|| {
                self.counters.decode_errors.fetch_add(1, Relaxed);
                None
            })),
            Best::None => Some(None),
            Best::Incomplete => None,
        }
    }

    /// Hands `leader` (read at wall time `wall`) to the engine as `route`'s cluster view.
    pub(crate) fn merge_leader(&self, route: &str, leader: Option<Contribution>, wall: u64) {
        self.merge_at(route, leader, wall, self.clock.now());
    }

    /// [`Shared::merge_leader`] at engine time `now`.
    fn merge_at(&self, route: &str, leader: Option<Contribution>, wall: u64, now: atrion_core::Timestamp) {
        let mut contributions = leader.map(|c| (c.scar, wall.saturating_sub(c.at_ms) as f64 / 1e3)).into_iter();
        if self.engine.merge_cluster(route, &mut contributions, now).is_ok() {
            self.counters.merges.fetch_add(1, Relaxed);
        }
    }
}
