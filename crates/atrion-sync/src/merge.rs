//! MERGE: the best live share but this node's own, handed to the engine, which heals it and
//! blends it by gamma.

use std::sync::atomic::Ordering::Relaxed;

use atrion_state::shares::Best;

use crate::clock::EngineClock;
use crate::manager::Shared;
use crate::wire::Contribution;

impl Shared {
    /// Re-merges the routes whose listed shares name nodes that joined or fell silent since
    /// the last pulse. Other routes need nothing: the engine heals cluster values on its own,
    /// and changed shares are merged as they arrive.
    pub(crate) fn merge_if_liveness_changed(&self) {
        let wall = self.clock.wall_ms();
        let routes: Vec<String> = {
            let mut st = self.lock();
            let live: std::collections::HashSet<String> = self.live_nodes(&st, wall).cloned().collect();
            if live == st.live {
                return;
            }
            let changed: std::collections::HashSet<&String> = live.symmetric_difference(&st.live).collect();
            let routes = st
                .remote
                .iter()
                .filter(|(_, shares)| !shares.complete() || shares.top.iter().any(|s| changed.contains(&s.member)))
                .map(|(r, _)| r.clone())
                .collect();
            st.live = live;
            routes
        };
        for route in routes {
            self.merge_route(&route);
        }
    }

    pub(crate) fn merge_all(&self) {
        let routes: Vec<String> = self.lock().remote.keys().cloned().collect();
        for route in routes {
            self.merge_route(&route);
        }
    }

    /// Hands the leading share of `route` among the other live nodes, with its age, to the
    /// engine, which heals it ([`atrion_core::Engine::merge_cluster`]) and blends the result by gamma. The
    /// shares are ranked by healed scar, so the leader is the largest at any time; when every
    /// listed leader is this node or a silent one, the route is read in full next pulse.
    pub(crate) fn merge_route(&self, route: &str) {
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let leader = {
            let mut st = self.lock();
            let Some(shares) = st.remote.get(route) else { return };
            match shares.best(self.counts(&st, wall)) {
                Best::Found(s) => match Contribution::decode(&s.value) {
                    Some(c) => Some(c),
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                        None
                    }
                },
                Best::None => None,
                Best::Incomplete => {
                    st.rebuild.insert(route.to_owned());
                    return;
                }
            }
        };
        let mut contributions = leader.map(|c| (c.scar, wall.saturating_sub(c.at_ms) as f64 / 1e3)).into_iter();
        if self.engine.merge_cluster(route, &mut contributions, now).is_ok() {
            self.counters.merges.fetch_add(1, Relaxed);
        }
    }
}
