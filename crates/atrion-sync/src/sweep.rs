//! The sweep: the periodic full sync, spread over its period. Every `full_sync` a node lists
//! the routes' keys, reads the membership digest, checks that the store still holds its
//! heartbeat and its route records, and then reads the routes' shares a slice per pulse
//! (at least [`MIN_SLICE`] keys, enough slices to end within the period), repairing what
//! the change feed lost: a route's leaders, a route gone, a contribution of this node the
//! store acknowledged and lost. A node with 100,000 routes reads about 170 a pulse at the
//! defaults instead of all of them in one burst a minute. The warm start and a resync (a
//! lost feed, a store back) still read everything at once ([`Shared::full_sync`]).

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use atrion_state::shares::Shares;

use crate::clock::EngineClock;
use crate::manager::{Shared, transient};

/// The fewest route keys a sweep reads in one pulse: a small cluster's sweep ends in a few
/// pulses rather than costing a round trip every pulse.
pub(crate) const MIN_SLICE: usize = 256;

/// A sweep under way.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    /// The route keys listed at its start.
    keys: Vec<String>,
    /// The next key to read.
    next: usize,
    /// Keys read per pulse.
    per: usize,
    /// The routes known at its start: those not listed have lost their shares.
    known: HashSet<String>,
    /// This node's contributions the store had acknowledged at its start.
    stored: HashSet<String>,
    /// The routes listed.
    listed: HashSet<String>,
}

impl Shared {
    /// Starts a sweep (unless one is under way): lists the routes' keys, reads the
    /// membership digest, this node's heartbeat (gone: beat at the next pulse) and its
    /// route records (lost ones are written again).
    pub(crate) async fn begin_sweep(&self) {
        if self.lock().sweep.is_some() {
            return;
        }
        let within = self.cfg.store_timeout;
        let listed = tokio::time::timeout(within, self.store.list_shares(self.keys.routes_prefix())).await;
        let heartbeat = tokio::time::timeout(within, self.store.get(&self.keys.heartbeat())).await;
        let (Ok(Ok(keys)), Ok(Ok(beat))) = (listed, heartbeat) else {
            self.counters.store_errors.fetch_add(1, Relaxed);
            return;
        };
        if self.read_digest().await.is_err() || self.read_records(false).await.is_err() {
            self.counters.store_errors.fetch_add(1, Relaxed);
            return;
        }
        let slices = (self.cfg.full_sync.as_nanos() / self.cfg.pulse.as_nanos().max(1)).max(1) as usize;
        let mut st = self.lock();
        let st = &mut *st;
        st.beat_lost |= beat.is_none();
        st.sweep = Some(Sweep {
            per: keys.len().div_ceil(slices).max(MIN_SLICE),
            keys,
            next: 0,
            known: st.remote.keys().map(|r| r.to_string()).collect(),
            stored: st.stored.keys().cloned().collect(),
            listed: HashSet::new(),
        });
    }

    /// Reads the next slice of the sweep under way, and ends it after the last: routes
    /// known at its start but not listed lose their cluster view, and this node's
    /// acknowledged contributions the store no longer holds are pushed again.
    pub(crate) async fn sweep_step(&self) {
        let chunk: Vec<String> = {
            let mut st = self.lock();
            let Some(sw) = st.sweep.as_mut() else { return };
            let end = (sw.next + sw.per).min(sw.keys.len());
            let chunk = sw.keys[sw.next..end].to_vec();
            sw.next = end;
            chunk
        };
        let node = self.keys.node_id();
        if !chunk.is_empty() {
            match tokio::time::timeout(self.cfg.store_timeout, self.store.shares(&chunk, node)).await {
                Ok(Ok(views)) => self.take_slice(&chunk, views),
                Ok(Err(e)) if !transient(&e) => {
                    // Something under our keys that is not shares: the full sync's key-by-key
                    // read skips it; here the slice is left to the next full sync.
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                }
                Ok(Err(_)) | Err(_) => {
                    // Read again at the next pulse.
                    self.counters.store_errors.fetch_add(1, Relaxed);
                    if let Some(sw) = self.lock().sweep.as_mut() {
                        sw.next -= chunk.len();
                    }
                    return;
                }
            }
        }
        let done = {
            let mut st = self.lock();
            let st = &mut *st;
            match st.sweep.take_if(|sw| sw.next >= sw.keys.len()) {
                None => None,
                Some(sw) => {
                    let lost: Vec<String> = sw
                        .stored
                        .iter()
                        .filter(|r| !sw.listed.contains(*r) && !st.pending.contains_key(*r))
                        .cloned()
                        .collect();
                    self.republish(st, lost);
                    Some(sw.known.into_iter().filter(|r| !sw.listed.contains(r)).collect::<Vec<String>>())
                }
            }
        };
        if let Some(gone) = done {
            let now = self.clock.now();
            let mut st = self.lock();
            for route in gone {
                if st.remote.remove(route.as_str()).is_some() {
                    let _ = self.engine.set_cluster(&route, None, now);
                }
            }
            self.counters.full_syncs.fetch_add(1, Relaxed);
        }
    }

    /// Takes one slice's shares: the routes' leaders as they are, this node's lost
    /// contributions pushed again, the routes merged.
    fn take_slice(&self, keys: &[String], views: Vec<Option<Shares>>) {
        let node = self.keys.node_id();
        let mut routes = Vec::with_capacity(keys.len());
        {
            let mut st = self.lock();
            let st = &mut *st;
            let mut lost = Vec::new();
            for (key, view) in keys.iter().zip(views) {
                let Some(route) = self.keys.parse_route(key) else { continue };
                let Some(shares) = view else { continue };
                if let Some(sw) = st.sweep.as_mut() {
                    sw.listed.insert(route.to_owned());
                }
                if shares.get(node).is_none() && st.stored.contains_key(route) && !st.pending.contains_key(route) {
                    lost.push(route.to_owned());
                }
                st.remote.insert(std::sync::Arc::from(route), shares);
                routes.push(route.to_owned());
            }
            self.republish(st, lost);
        }
        for route in routes {
            self.merge_route(&route);
        }
    }

    /// Pushes again this node's acknowledged contributions to `routes` (the store lost
    /// them): the full sync's repair and the sweep's.
    pub(crate) fn republish(&self, st: &mut crate::manager::SyncState, routes: Vec<String>) {
        if routes.is_empty() {
            return;
        }
        self.counters.republished.fetch_add(routes.len() as u64, Relaxed);
        tracing::warn!(node = %self.cfg.node_id, routes = routes.len(), "the store lost contributions it had acknowledged: pushing them again");
        for route in routes {
            if let Some(p) = st.stored.get(&route).copied() {
                st.pending.insert(route, p);
            }
        }
    }
}
