//! PULL: the change feed, the full sync (and the warm start), this node's route records
//! read back, and the routes read in full when their leaders stopped counting.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use atrion_core::{Hold, Timestamp};
use atrion_state::shares::{Best, Shares};
use atrion_state::{Change, ChangeRef, ErrorKind, Op, StoreError};

use crate::clock::EngineClock;
use crate::manager::{Map, Shared, transient};
use crate::record::RouteRecord;
use crate::wire::{Contribution, Digest, Heartbeat};

impl Shared {
    /// Reads this node's route records. At start (`warm_start`) they are brought back into
    /// the engine: holds as they were, open routes open for the rest of their interval or
    /// half-open. Later, records the store lost after acknowledging them are written again.
    pub(crate) async fn read_records(&self, warm_start: bool) -> Result<(), StoreError> {
        let within = self.cfg.store_timeout;
        let timeout = |op| StoreError::new(self.store.backend(), op, None, ErrorKind::Timeout);
        let keys = tokio::time::timeout(within, self.store.list_keys(self.keys.local_prefix()))
            .await
            .map_err(|_| timeout(Op::ListKeys))??;
        if !warm_start {
            let present: std::collections::HashSet<&str> =
                keys.iter().filter_map(|k| self.keys.parse_local(k)).collect();
            let mut st = self.lock();
            let st = &mut *st;
            let lost: Vec<(String, RouteRecord)> = st
                .records
                .iter()
                .filter(|(r, _)| !present.contains(r.as_str()) && !st.record_pending.contains_key(*r))
                .map(|(r, rec)| (r.clone(), *rec))
                .collect();
            self.counters.republished.fetch_add(lost.len() as u64, Relaxed);
            st.record_pending.extend(lost.into_iter().map(|(r, rec)| (r, Some(rec))));
            return Ok(());
        }
        let mut found = Map::default();
        for chunk in keys.chunks(512) {
            let entries = tokio::time::timeout(within, self.store.batch_get(chunk))
                .await
                .map_err(|_| timeout(Op::BatchGet))??;
            for (key, entry) in chunk.iter().zip(entries) {
                let (Some(entry), Some(route)) = (entry, self.keys.parse_local(key)) else { continue };
                match RouteRecord::decode(&entry.value) {
                    Some(rec) => {
                        found.insert(route.to_owned(), rec);
                    }
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                        tracing::warn!(key = %key, "skipping an unreadable route record");
                    }
                }
            }
        }
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        for (route, rec) in &found {
            if rec.hold != Hold::Released {
                let _ = self.engine.hold(route, rec.hold, now);
            }
            if let Some(left) = rec.open_left(wall) {
                let _ = self.engine.resume_open(route, left, now);
            }
        }
        if !found.is_empty() {
            tracing::info!(node = %self.cfg.node_id, routes = found.len(), "holds and open routes brought back");
        }
        self.lock().records = found;
        Ok(())
    }

    /// Reads in full the shares of routes whose listed leaders all stopped counting (this
    /// node, or nodes gone silent), and merges them.
    pub(crate) async fn rebuild(&self) {
        let routes: Vec<String> = self.lock().rebuild.drain().collect();
        for route in routes {
            let Some(key) = self.keys.route(&route) else { continue };
            match tokio::time::timeout(self.cfg.store_timeout, self.store.all_shares(&key)).await {
                Ok(Ok(shares)) => {
                    self.counters.rebuilds.fetch_add(1, Relaxed);
                    let mut st = self.lock();
                    match shares {
                        Some(shares) => st.remote.insert(Arc::from(route.as_str()), shares),
                        None => st.remote.insert(Arc::from(route.as_str()), Shares::default()),
                    };
                }
                Ok(Err(e)) if !transient(&e) => {
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                    self.lock().remote.remove(route.as_str());
                    let _ = self.engine.set_cluster(&route, None, self.clock.now());
                    continue;
                }
                Ok(Err(_)) | Err(_) => {
                    self.counters.store_errors.fetch_add(1, Relaxed);
                    self.lock().rebuild.insert(route);
                    continue;
                }
            }
            self.merge_route(&route);
        }
    }

    /// Re-reads every route's leading shares and every heartbeat. At start, also seeds this
    /// node's own earlier scar (warm start).
    pub(crate) async fn full_sync(&self, warm_start: bool) -> Result<(), StoreError> {
        let fail = |e: StoreError| {
            self.counters.store_errors.fetch_add(1, Relaxed);
            e
        };
        let timeout = |op| StoreError::new(self.store.backend(), op, None, ErrorKind::Timeout);
        let within = self.cfg.store_timeout;
        let node = self.keys.node_id();
        let keys = tokio::time::timeout(within, self.store.list_shares(self.keys.routes_prefix()))
            .await
            .map_err(|_| fail(timeout(Op::ListShares)))?
            .map_err(fail)?;
        let mut views: Vec<Option<Shares>> = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(512) {
            let got = tokio::time::timeout(within, self.store.shares(chunk, node))
                .await
                .map_err(|_| fail(timeout(Op::GetShares)))?;
            match got {
                Ok(got) => views.extend(got),
                // Something under our keys that is not shares (written by someone else):
                // read the chunk key by key and skip the bad ones.
                Err(e) if !transient(&e) => {
                    for key in chunk {
                        match self.store.shares(std::slice::from_ref(key), node).await {
                            Ok(mut one) => views.push(one.pop().flatten()),
                            Err(e) if !transient(&e) => {
                                self.counters.decode_errors.fetch_add(1, Relaxed);
                                tracing::warn!(key = %key, error = %e, "skipping an unreadable value under the cluster's keys");
                                views.push(None);
                            }
                            Err(e) => return Err(fail(e)),
                        }
                    }
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let (heartbeats, own_beat) = self.read_heartbeats(true).await.map_err(fail)?;
        self.read_digest().await.map_err(fail)?;
        self.read_records(warm_start).await.map_err(fail)?;
        self.counters.full_syncs.fetch_add(1, Relaxed);
        let mut remote: Map<Arc<str>, Shares> = Map::default();
        let mut own = Vec::new();
        for (key, view) in keys.iter().zip(views) {
            let (Some(shares), Some(route)) = (view, self.keys.parse_route(key)) else { continue };
            if let Some(mine) = shares.get(node) {
                match Contribution::decode(&mine.value) {
                    Some(c) => own.push((route.to_owned(), c)),
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                    }
                }
            }
            remote.insert(Arc::from(route), shares);
        }
        let own_routes: std::collections::HashSet<&str> = own.iter().map(|(r, _)| r.as_str()).collect();
        {
            // What the store acknowledged but no longer holds is pushed again.
            let mut st = self.lock();
            let st = &mut *st;
            let lost: Vec<String> = st
                .stored
                .keys()
                .filter(|r| !own_routes.contains(r.as_str()) && !st.pending.contains_key(*r))
                .cloned()
                .collect();
            self.republish(st, lost);
            st.beat_lost = !own_beat;
        }
        if warm_start {
            let (now, wall) = (self.clock.now(), self.clock.wall_ms());
            for (route, c) in own {
                let age = Duration::from_millis(wall.saturating_sub(c.at_ms));
                let at = Timestamp::from_nanos(now.as_nanos().saturating_sub(age.as_nanos() as u64));
                let _ = self.engine.warm_start(&route, c.scar, at, now);
            }
        }
        {
            let mut st = self.lock();
            // Routes that no longer have shares lose their cluster view.
            for route in st.remote.keys().filter(|r| !remote.contains_key(&***r)) {
                let _ = self.engine.set_cluster(route, None, self.clock.now());
            }
            st.remote = remote;
            // Nodes whose heartbeat is no longer in the store have left (or expired).
            let gone: Vec<(String, Heartbeat)> =
                st.heartbeats.drain().filter(|(n, _)| !heartbeats.contains_key(n)).collect();
            st.departed.extend(gone);
            st.departed.retain(|n, _| !heartbeats.contains_key(n));
            st.heartbeats = heartbeats;
        }
        self.merge_all();
        Ok(())
    }

    /// Applies one change from the feed, in place: a change that carries its value (every
    /// change of a route's shares does) is decoded into the node's view without allocating
    /// when the route and its members are known. A change without its value is returned, to
    /// be applied by [`Shared::apply`] (which reads the key).
    pub(crate) fn apply_now(&self, change: ChangeRef<'_>) -> Option<Change> {
        let (key, value, version) = match change {
            ChangeRef::Resync => {
                tracing::debug!(node = %self.cfg.node_id, "change feed lost events: full sync at the next pulse");
                self.counters.resyncs.fetch_add(1, Relaxed);
                self.lock().resync = true;
                return None;
            }
            ChangeRef::Set { key, value: Some(value), version } => (key, value, version),
            ChangeRef::Set { key, value: None, .. } => {
                let wanted = self.keys.parse_route(key).is_some()
                    || self.keys.is_digest(key)
                    || self.keys.parse_heartbeat(key).is_some_and(|node| !self.keys.is_own(node));
                return wanted.then(|| change.to_change());
            }
            ChangeRef::Deleted { key } | ChangeRef::Expired { key } => {
                if let Some(route) = self.keys.parse_route(key) {
                    let mut st = self.lock();
                    st.remote.remove(route);
                    // A merge an earlier notice of the batch queued is out of date.
                    st.merging.remove(route);
                    drop(st);
                    let _ = self.engine.set_cluster(route, None, self.clock.now());
                } else if let Some(node) = self.keys.parse_heartbeat(key) {
                    let mut st = self.lock();
                    if let Some(hb) = st.heartbeats.remove(node) {
                        st.departed.insert(node.to_owned(), hb);
                    }
                }
                return None;
            }
        };
        if let Some(route) = self.keys.parse_route(key) {
            // The merge is queued, made once the batch is applied ([`Shared::merge_queued`]).
            let wall = self.clock.wall_ms();
            let mut st = self.lock();
            let st = &mut *st;
            if !st.scratch.decode_into(value) {
                self.counters.decode_errors.fetch_add(1, Relaxed);
                return None;
            }
            self.counters.pulled.fetch_add(1, Relaxed);
            let digest = st.digest.as_ref().map(|(_, d)| d);
            let counts = self.counts_among(&st.heartbeats, digest, st.vouched_ms, wall);
            match st.remote.get_mut(route) {
                Some(slot) => {
                    let new = st.scratch.best(&counts);
                    let merge = if same_leader(slot.best(&counts), new) {
                        Merge::Nothing
                    } else {
                        match self.leader(new) {
                            Some(leader) => Merge::Leader(leader),
                            None => Merge::Rebuild,
                        }
                    };
                    // The route's previous shares become the next notice's scratch.
                    std::mem::swap(slot, &mut st.scratch);
                    match merge {
                        Merge::Leader(leader) => {
                            if let Some((name, _)) = st.remote.get_key_value(route) {
                                st.merging.insert(name.clone(), Some(leader));
                            }
                        }
                        Merge::Rebuild => {
                            st.rebuild.insert(route.to_owned());
                        }
                        Merge::Nothing => {}
                    }
                }
                None => {
                    let name: Arc<str> = Arc::from(route);
                    st.remote.insert(name.clone(), std::mem::take(&mut st.scratch));
                    st.merging.insert(name, None);
                }
            }
        } else if self.keys.is_digest(key) {
            self.took_digest(version, value);
        } else if let Some(node) = self.keys.parse_heartbeat(key).filter(|node| !self.keys.is_own(node)) {
            self.counters.pulled.fetch_add(1, Relaxed);
            self.heard(node, value);
        }
        None
    }

    /// Takes a membership digest from the feed (a watcher wrote it).
    fn took_digest(&self, version: u64, value: &[u8]) {
        match Digest::decode(value) {
            Some(d) => {
                self.counters.pulled.fetch_add(1, Relaxed);
                self.take_digest(&mut self.lock(), version, d);
            }
            None => {
                self.counters.decode_errors.fetch_add(1, Relaxed);
            }
        }
    }

    /// Applies a change whose value the feed did not carry ([`Shared::apply_now`]): reads
    /// the key.
    pub(crate) async fn apply(&self, change: Change) {
        let Change::Set { key, value: None, .. } = change else {
            self.apply_now(change.view());
            self.merge_queued();
            return;
        };
        if let Some(route) = self.keys.parse_route(&key) {
            let read = self.store.shares(std::slice::from_ref(&key), self.keys.node_id());
            let shares = match tokio::time::timeout(self.cfg.store_timeout, read).await {
                Ok(Ok(mut got)) => match got.pop().flatten() {
                    Some(shares) => shares,
                    None => return,
                },
                Ok(Err(e)) if !transient(&e) => {
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                    return;
                }
                Ok(Err(_)) | Err(_) => {
                    self.counters.store_errors.fetch_add(1, Relaxed);
                    return;
                }
            };
            self.counters.pulled.fetch_add(1, Relaxed);
            // A notice that leaves this node's leader as it was (another node's share moved
            // below it, or this node's own; or there is still none but its own) changes
            // nothing to merge.
            let same_leader = {
                let mut st = self.lock();
                let st = &mut *st;
                let digest = st.digest.as_ref().map(|(_, d)| d);
                let counts = self.counts_among(&st.heartbeats, digest, st.vouched_ms, self.clock.wall_ms());
                match st.remote.get_mut(route) {
                    Some(slot) => {
                        let same = same_leader(slot.best(&counts), shares.best(&counts));
                        *slot = shares;
                        same
                    }
                    None => {
                        st.remote.insert(Arc::from(route), shares);
                        false
                    }
                }
            };
            if !same_leader {
                self.merge_route(route);
            }
        } else if self.keys.is_digest(&key) {
            match tokio::time::timeout(self.cfg.store_timeout, self.store.get(&key)).await {
                Ok(Ok(Some(e))) => self.took_digest(e.version, &e.value),
                Ok(Ok(None)) => {}
                Ok(Err(_)) | Err(_) => {
                    self.counters.store_errors.fetch_add(1, Relaxed);
                }
            }
        } else if let Some(node) = self.keys.parse_heartbeat(&key).filter(|node| !self.keys.is_own(node)) {
            let value = match tokio::time::timeout(self.cfg.store_timeout, self.store.get(&key)).await {
                Ok(Ok(Some(e))) => e.value,
                Ok(Ok(None)) => return,
                Ok(Err(_)) | Err(_) => {
                    self.counters.store_errors.fetch_add(1, Relaxed);
                    return;
                }
            };
            self.counters.pulled.fetch_add(1, Relaxed);
            self.heard(node, &value);
        }
    }

    /// Notes another node's heartbeat (in place when the node is known).
    fn heard(&self, node: &str, value: &[u8]) {
        let Some(hb) = Heartbeat::decode_ref(value) else {
            self.counters.decode_errors.fetch_add(1, Relaxed);
            return;
        };
        let mut st = self.lock();
        st.departed.remove(node);
        match st.heartbeats.get_mut(node) {
            Some(known) => {
                known.ms = hb.0;
                if known.version.as_deref() != hb.1 {
                    known.version = hb.1.map(str::to_owned);
                }
            }
            None => {
                st.heartbeats.insert(node.to_owned(), Heartbeat { ms: hb.0, version: hb.1.map(str::to_owned) });
            }
        }
        // A watcher's beat vouches for every node of the digest (the watchers as chosen at
        // this node's last beat: choosing costs a sort of the nodes).
        if st.watching.iter().any(|w| w == node) {
            st.vouched_ms = st.vouched_ms.max(hb.0);
        }
    }
}

/// What a notice asks of the merge.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Merge {
    /// The leader is as it was.
    Nothing,
    /// A new leader (or none).
    Leader(Option<Contribution>),
    /// Every listed leader stopped counting: read the route in full first.
    Rebuild,
}

/// Whether a notice left this node's leader as it was: the same member with the same value,
/// or still none.
fn same_leader(old: Best<'_>, new: Best<'_>) -> bool {
    match (old, new) {
        (Best::Found(a), Best::Found(b)) => a.member == b.member && a.value == b.value,
        (Best::None, Best::None) => true,
        _ => false,
    }
}
