//! PUSH: a pulse judges this node's dirty routes (deadband, outranked, second look), and
//! writes the contributions worth it, its route records and its heartbeat.

use std::sync::atomic::Ordering::Relaxed;

use atrion_core::{LocalContribution, Timestamp, heal, heal_rank};
use atrion_state::shares::{Share, ShareWrite};

use crate::clock::EngineClock;
use crate::manager::{Map, Shared, SyncState, transient};
use crate::record::RouteRecord;
use crate::wire::Contribution;
use atrion_state::fnv1a;

/// A contribution with its route's healing rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pushed {
    pub(crate) c: Contribution,
    pub(crate) scar_decay: f64,
}

impl Pushed {
    /// The share this contribution is, for the store: ranked by its healed scar.
    pub(crate) fn share(&self, node: &str) -> Share {
        Share {
            member: node.to_owned(),
            rank: heal_rank(self.c.scar, self.scar_decay, self.c.at_ms as f64 / 1e3),
            value: self.c.encode(),
        }
    }

    /// The scar the other nodes expect of this route at `at_ms`.
    pub(crate) fn predicted(&self, at_ms: u64) -> f64 {
        heal(self.c.scar, self.scar_decay, at_ms.saturating_sub(self.c.at_ms) as f64 / 1e3)
    }
}

impl Shared {
    /// Whether to push `next`, after `last`: `Some(true)` to push; `Some(false)` when the
    /// other nodes predict it from `last` (the deadband); `None` when two other live nodes
    /// lead the route and `next` would not beat the second by more than the deadband, so
    /// that no node's merged view would move by more (readers take the best share but their
    /// own: the two leaders are all they use). A contribution older than `max_interval` is
    /// refreshed either way.
    pub(crate) fn worth_pushing(
        &self,
        st: &SyncState,
        route: &str,
        last: Option<&Pushed>,
        next: &Pushed,
        wall: u64,
    ) -> Option<bool> {
        let band = self.cfg.deadband;
        let (changed, stale) = match last {
            None => (next.c.scar > band, false),
            Some(last) => {
                let off = (next.c.scar - last.predicted(next.c.at_ms)).abs() > band;
                let old = next.c.at_ms.saturating_sub(last.c.at_ms) >= self.cfg.max_interval.as_millis() as u64;
                (off || (band == 0.0 && next.c != last.c), old && next.c.scar > band)
            }
        };
        if stale {
            return Some(true);
        }
        if !changed {
            return Some(false);
        }
        (!self.outranked(st, route, next, wall)).then_some(true)
    }

    /// Whether `route` has two other live leaders and `next` would not beat the second by
    /// more than the deadband: then every node's merged view (the best share but its own) is
    /// within the deadband of what it would be with `next` pushed.
    pub(crate) fn outranked(&self, st: &SyncState, route: &str, next: &Pushed, wall: u64) -> bool {
        let Some(shares) = st.remote.get(route) else { return false };
        let counts = self.counts(st, wall);
        let mut ahead = 0;
        let (first, second) = shares.top_two();
        for s in first.into_iter().chain(second) {
            let Some(c) = Contribution::decode(&s.value) else { return false };
            let healed = heal(c.scar, next.scar_decay, next.c.at_ms.saturating_sub(c.at_ms) as f64 / 1e3);
            if !counts(&s.member) || next.c.scar > healed + self.cfg.deadband {
                return false;
            }
            ahead += 1;
        }
        ahead == 2
    }

    /// Whether changes wait for their second look.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.lock().deferred.is_empty()
    }

    /// Judges one contribution of `route`: pending (to push), deferred (for its second
    /// look, when `may_wait` and this node is not one of the route's designated pushers), or
    /// held back (deadband, outranked).
    pub(crate) fn judge(
        &self,
        st: &mut SyncState,
        route: &str,
        next: Pushed,
        may_wait: Option<&[u64]>,
        wall: u64,
        tally: &mut Judged,
    ) {
        let last = st.pending.get(route).or_else(|| st.stored.get(route));
        match self.worth_pushing(st, route, last, &next, wall) {
            Some(true) if may_wait.is_some_and(|others| !designated(&self.cfg.node_id, route, others)) => {
                tally.deferred += 1;
                put(&mut st.deferred, route, next);
            }
            Some(true) => {
                st.held.remove(route);
                put(&mut st.pending, route, next);
            }
            Some(false) => {
                tally.deadbanded += 1;
                put(&mut st.held, route, next);
            }
            None => {
                tally.outranked += 1;
                put(&mut st.held, route, next);
            }
        }
    }

    /// BUFFER, PUSH, MERGE. A pulse judges the dirty routes and the changes held for a
    /// second look; a second look judges only the latter, and writes no heartbeat; a flush
    /// (a node leaving) holds nothing for later and also pushes the contributions held back
    /// by the deadband or outranked on routes this node has a share of, so that the store
    /// keeps its exact last word for its warm start.
    pub(crate) async fn pulse(&self, look: Look) {
        let _one_at_a_time = self.pulsing.lock().await;
        if look == Look::Second && self.lock().deferred.is_empty() {
            return;
        }
        if look != Look::Second {
            self.counters.pulses.fetch_add(1, Relaxed);
        }
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let max_route = self.keys.max_route_len();
        let node = self.keys.node_id();
        let (sent, shares, records, beat) = {
            let mut st = self.lock();
            let st = &mut *st;
            let mut tally = Judged::default();
            let mut waited = std::mem::take(&mut st.deferred);
            let seeds = (look == Look::Pulse && self.cfg.second_look > 0.0).then(|| self.live_seeds(st, wall));
            if look != Look::Second {
                self.engine.take_dirty(&mut |route, c| {
                    self.note_record(st, route, &c, now, wall);
                    if route.len() > max_route {
                        if self.counters.kept_local.fetch_add(1, Relaxed) == 0 {
                            tracing::warn!(
                                node = %self.cfg.node_id,
                                len = route.len(),
                                max = max_route,
                                "a route id is too long for a cluster key: it is decided on local state only"
                            );
                        }
                        return;
                    }
                    let at_ms = wall.saturating_sub(now.saturating_since(c.at).as_millis() as u64);
                    let next = Pushed {
                        c: Contribution { scar: c.scar, momentum: c.momentum, at_ms },
                        scar_decay: c.scar_decay,
                    };
                    // A change that already waited its second look does not wait again.
                    let may_wait = if waited.remove(route).is_some() { None } else { seeds.as_deref() };
                    self.judge(st, route, next, may_wait, wall, &mut tally);
                });
            }
            for (route, next) in waited {
                self.judge(st, &route, next, None, wall, &mut tally);
            }
            let flush = look == Look::Flush;
            if flush {
                // The exact last word, for the routes this node has a share of (a share it
                // never pushed would only add a member that leads nothing).
                let held = std::mem::take(&mut st.held);
                let changed: Vec<(String, Pushed)> =
                    held.into_iter().filter(|(r, p)| st.stored.get(r).is_some_and(|s| s.c != p.c)).collect();
                st.pending.extend(changed);
            }
            self.counters.deadbanded.fetch_add(tally.deadbanded, Relaxed);
            self.counters.outranked.fetch_add(tally.outranked, Relaxed);
            self.counters.deferred.fetch_add(tally.deferred, Relaxed);
            if st.pending.len() > self.cfg.max_buffered {
                // Bounded: keep the newest contributions.
                let mut by_age: Vec<(u64, String)> = st.pending.iter().map(|(r, p)| (p.c.at_ms, r.clone())).collect();
                by_age.sort_unstable();
                let excess = st.pending.len() - self.cfg.max_buffered;
                for (_, route) in by_age.into_iter().take(excess) {
                    st.pending.remove(&route);
                }
            }
            // Taken out of the buffer with their routes (no copy of a route per share), and
            // put back below unless written: nothing else changes the buffer meanwhile (one
            // pulse at a time).
            let (mut sent, mut shares) = (Vec::with_capacity(st.pending.len()), Vec::with_capacity(st.pending.len()));
            let mut unkeyed = Vec::new();
            for (route, p) in st.pending.drain() {
                match self.keys.route(&route) {
                    Some(key) => {
                        shares.push(ShareWrite { key, share: p.share(node) });
                        sent.push((route, p));
                    }
                    None => unkeyed.push((route, p)),
                }
            }
            st.pending.extend(unkeyed);
            let degraded = self.counters.degraded.load(Relaxed);
            let beat = degraded || st.beat_lost || wall.saturating_sub(st.heartbeat_ms) >= self.heartbeat_every();
            let records: Vec<(String, Option<RouteRecord>)> =
                st.record_pending.iter().map(|(r, rec)| (r.clone(), *rec)).collect();
            // A watcher beats aloud; so does a node the others may not know (its first beat,
            // or after the store or the node was away).
            let watcher = beat && {
                st.watching = self.watchers(st, wall).into_iter().map(str::to_owned).collect();
                st.watching.iter().any(|w| w == node)
            };
            let aloud = watcher || degraded || st.beat_lost || st.heartbeat_ms == 0;
            (sent, shares, records, (look != Look::Second && beat).then_some((aloud, watcher)))
        };
        let pushed = if shares.is_empty() { Ok(Vec::new()) } else { self.push_shares(shares, &sent).await };
        let recorded = match &pushed {
            Ok(_) => self.write_records(records).await,
            Err(()) => Err(()),
        };
        let beat = match (&pushed, recorded, beat) {
            (Ok(_), Ok(()), Some((aloud, watcher))) => {
                let beat = self.beat(wall, aloud).await;
                if beat.is_ok() && watcher && self.watch(wall).await.is_err() {
                    self.counters.store_errors.fetch_add(1, Relaxed);
                }
                beat.map(|()| true)
            }
            (Ok(_), Ok(()), None) => Ok(false),
            _ => Err(()),
        };
        match pushed {
            Ok(done) => {
                let mut st = self.lock();
                let mut n = 0;
                // What the store refused for itself is dropped (counted by `push_shares`).
                for ((route, p), ok) in sent.into_iter().zip(done) {
                    if ok {
                        n += 1;
                        st.stored.insert(route, p);
                    }
                }
                self.counters.pushed.fetch_add(n, Relaxed);
            }
            Err(()) => {
                // Back in the buffer, unless a newer contribution took its place.
                let mut st = self.lock();
                for (route, p) in sent {
                    st.pending.entry(route).or_insert(p);
                }
            }
        }
        match beat {
            Ok(beat) => {
                if beat {
                    let mut st = self.lock();
                    st.heartbeat_ms = wall;
                    st.beat_lost = false;
                }
                self.counters.last_push_ms.store(wall, Relaxed);
                if self.counters.degraded.swap(false, Relaxed) {
                    // The store is back: whatever changed meanwhile was not seen.
                    tracing::info!(node = %self.cfg.node_id, "store reachable again: resynchronising");
                    self.lock().resync = true;
                }
            }
            Err(()) => {
                // Failed or timed out: the contributions stay pending, newest per route.
                self.counters.store_errors.fetch_add(1, Relaxed);
                if !self.counters.degraded.swap(true, Relaxed) {
                    tracing::warn!(node = %self.cfg.node_id, "store unreachable: deciding on local state only");
                }
            }
        }
        self.counters.buffered.store(self.lock().pending.len() as u64, Relaxed);
        let resync = std::mem::take(&mut self.lock().resync);
        if resync {
            self.counters.resyncs.fetch_add(1, Relaxed);
            if self.full_sync(false).await.is_err() {
                self.lock().resync = true;
            }
        }
        self.rebuild().await;
        if look == Look::Pulse {
            self.sweep_step().await;
        }
        self.merge_if_liveness_changed();
    }

    /// Notes `route`'s record as of this pulse: pending when it differs from what the store
    /// holds (a route too long for its record key is not kept).
    pub(crate) fn note_record(
        &self,
        st: &mut SyncState,
        route: &str,
        c: &LocalContribution,
        now: Timestamp,
        wall: u64,
    ) {
        if !self.keys.local_fits(route) {
            return;
        }
        let next = RouteRecord::of(c, now, wall);
        let same = match (st.records.get(route), &next) {
            (Some(stored), Some(next)) => stored.same(next),
            (None, None) => true,
            _ => false,
        };
        if same {
            st.record_pending.remove(route);
        } else {
            st.record_pending.insert(route.to_owned(), next);
        }
    }

    /// Writes and removes the pending route records, in one call each; `Err` when the store
    /// failed (they stay pending).
    pub(crate) async fn write_records(&self, records: Vec<(String, Option<RouteRecord>)>) -> Result<(), ()> {
        if records.is_empty() {
            return Ok(());
        }
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for (route, rec) in &records {
            let Some(key) = self.keys.local(route) else { continue };
            match rec {
                Some(rec) => puts.push((key, rec.encode(), None)),
                None => deletes.push(key),
            }
        }
        let within = self.cfg.store_timeout;
        if !puts.is_empty() && !matches!(tokio::time::timeout(within, self.store.batch_set(puts)).await, Ok(Ok(_))) {
            return Err(());
        }
        if !deletes.is_empty()
            && !matches!(tokio::time::timeout(within, self.store.batch_delete(&deletes)).await, Ok(Ok(_)))
        {
            return Err(());
        }
        let mut st = self.lock();
        for (route, rec) in records {
            // Only what was written leaves the buffer: a newer record stays.
            if st.record_pending.get(&route) == Some(&rec) {
                st.record_pending.remove(&route);
            }
            match rec {
                Some(rec) => st.records.insert(route, rec),
                None => st.records.remove(&route),
            };
            self.counters.records.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Pushes shares in one call; after the store refused the batch for something in it (not
    /// for being unreachable), item by item, so that one bad item does not block the rest:
    /// items refused for themselves are dropped and counted. Which were written, in order;
    /// `Err` when the store is unreachable (the caller keeps everything pending).
    /// `shares` are those of `sent`, in order (rebuilt from it item by item: no copy of the
    /// batch is kept for the rare retry).
    pub(crate) async fn push_shares(
        &self,
        shares: Vec<ShareWrite>,
        sent: &[(String, Pushed)],
    ) -> Result<Vec<bool>, ()> {
        let n = shares.len();
        match tokio::time::timeout(self.cfg.store_timeout, self.store.put_shares(shares)).await {
            Ok(Ok(())) => return Ok(vec![true; n]),
            Ok(Err(e)) if !transient(&e) => {}
            Ok(Err(_)) | Err(_) => return Err(()),
        }
        let node = self.keys.node_id();
        let mut done = Vec::with_capacity(n);
        for (route, p) in sent {
            let Some(key) = self.keys.route(route) else {
                done.push(false);
                continue;
            };
            let w = ShareWrite { key: key.clone(), share: p.share(node) };
            match tokio::time::timeout(self.cfg.store_timeout, self.store.put_shares(vec![w])).await {
                Ok(Ok(())) => done.push(true),
                Ok(Err(e)) if !transient(&e) => {
                    self.counters.rejected.fetch_add(1, Relaxed);
                    tracing::warn!(node = %self.cfg.node_id, key = %key, error = %e, "the store refused a contribution: dropped");
                    done.push(false);
                }
                Ok(Err(_)) | Err(_) => return Err(()),
            }
        }
        Ok(done)
    }
}

/// Sets `route`'s entry of `map` to `p`, without a new key when it has one.
fn put(map: &mut Map<String, Pushed>, route: &str, p: Pushed) {
    match map.get_mut(route) {
        Some(slot) => *slot = p,
        None => {
            map.insert(route.to_owned(), p);
        }
    }
}

/// How many nodes push a route's change at once; the others give it a second look.
pub(crate) const DESIGNATED: usize = 2;

/// Whether `node` is one of the [`DESIGNATED`] pushers of `route` among itself and the
/// nodes of `others` (their [`fnv1a`] seeds): rendezvous hashing, so that every node with
/// the same view of who is live picks the same ones, and a node joining or leaving moves
/// only the routes it wins or held.
pub(crate) fn designated(node: &str, route: &str, others: &[u64]) -> bool {
    if others.len() < DESIGNATED {
        return true;
    }
    let r = fnv1a(route.as_bytes());
    let mine = rendezvous(fnv1a(node.as_bytes()), r);
    others.iter().filter(|&&o| rendezvous(o, r) > mine).count() < DESIGNATED
}

/// A node's (its [`fnv1a`] seed) rendezvous score for a key (a hash): splitmix64's
/// finaliser, the seed and key mixed into an even spread.
pub(crate) fn rendezvous(seed: u64, key: u64) -> u64 {
    let mut z = (seed ^ key).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one pulse's judging held back, by reason ([`Shared::judge`]).
#[derive(Debug, Default)]
pub(crate) struct Judged {
    pub(crate) deadbanded: u64,
    pub(crate) outranked: u64,
    pub(crate) deferred: u64,
}

/// What a run of [`Shared::pulse`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// The regular pulse.
    Pulse,
    /// The second look at the changes a pulse held ([`SyncConfig::second_look`]).
    Second,
    /// The last pulse of a node leaving.
    Flush,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn every_node_agrees_on_two_designated_pushers_per_route_spread_over_the_fleet() {
        let nodes: Vec<String> = (0..12).map(|i| format!("node-{i}")).collect();
        let mut wins = vec![0; nodes.len()];
        for r in 0..600 {
            let route = format!("GET /r/{r}");
            let picked: Vec<usize> = (0..nodes.len())
                .filter(|&i| {
                    let others: Vec<u64> =
                        nodes.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, n)| fnv1a(n.as_bytes())).collect();
                    designated(&nodes[i], &route, &others)
                })
                .collect();
            assert_eq!(picked.len(), DESIGNATED, "{route}: {picked:?}");
            for i in picked {
                wins[i] += 1;
            }
        }
        // 1,200 picks over 12 nodes: 100 each on average.
        assert!(wins.iter().all(|&w| (50..=150).contains(&w)), "{wins:?}");
        // Alone or with one other node, a node always pushes at once.
        assert!(designated("a", "r", &[]) && designated("a", "r", &[fnv1a(b"b")]));
    }
}
