//! `SyncStats`: the sync's counters, and the atomics they are read from.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters of the sync, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Pulses run.
    pub pulses: u64,
    /// Route contributions pushed.
    pub pushed: u64,
    /// Remote changes applied from the change feed.
    pub pulled: u64,
    /// Aggregates handed to the engine.
    pub merges: u64,
    /// Full syncs run.
    pub full_syncs: u64,
    /// Full syncs forced by lost events or a store that came back.
    pub resyncs: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Values under our keys that did not decode and were skipped.
    pub decode_errors: u64,
    /// Contributions waiting to be pushed.
    pub buffered: u64,
    /// Contributions not shared because their route id is too long for a cluster key
    /// ([`crate::ClusterKeys::max_route_len`]): those routes are decided on local state only.
    pub kept_local: u64,
    /// Contributions the store refused for themselves (not for being unreachable): dropped,
    /// so that one bad item never blocks the rest of a batch.
    pub rejected: u64,
    /// Contributions pushed again because a full sync found that the store had lost them
    /// after acknowledging them (a restarted store without persistence).
    pub republished: u64,
    /// Contributions not pushed because the cluster's prediction of them (the last pushed
    /// scar, healed) was within the deadband.
    pub deadbanded: u64,
    /// Contributions not pushed because two other live nodes lead the route and this one
    /// would not beat the second by more than the deadband: no node's merged view would move
    /// by more than that.
    pub outranked: u64,
    /// Routes whose shares were read in full because every leader listed was this node or a
    /// node gone silent.
    pub rebuilds: u64,
    /// Changes held for a second look because this node is not one of the route's two
    /// designated pushers ([`crate::SyncConfig::second_look`]).
    pub deferred: u64,
    /// This node's route records (holds, open intervals: [`crate::RouteRecord`]) written or
    /// removed in the store.
    pub records: u64,
    /// The last push failed: deciding on local state only.
    pub degraded: bool,
}

impl SyncStats {
    /// The counters by name (`pulses`, `pushed`, ...), in one place for every exporter; the
    /// gauges `buffered` and `degraded` are not among them.
    pub fn counters(&self) -> [(&'static str, u64); 16] {
        [
            ("pulses", self.pulses),
            ("pushed", self.pushed),
            ("pulled", self.pulled),
            ("merges", self.merges),
            ("full_syncs", self.full_syncs),
            ("resyncs", self.resyncs),
            ("store_errors", self.store_errors),
            ("decode_errors", self.decode_errors),
            ("kept_local", self.kept_local),
            ("rejected", self.rejected),
            ("republished", self.republished),
            ("deadbanded", self.deadbanded),
            ("outranked", self.outranked),
            ("rebuilds", self.rebuilds),
            ("deferred", self.deferred),
            ("records", self.records),
        ]
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) pulses: AtomicU64,
    pub(crate) pushed: AtomicU64,
    pub(crate) pulled: AtomicU64,
    pub(crate) merges: AtomicU64,
    pub(crate) full_syncs: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) buffered: AtomicU64,
    pub(crate) kept_local: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) republished: AtomicU64,
    pub(crate) deadbanded: AtomicU64,
    pub(crate) outranked: AtomicU64,
    pub(crate) rebuilds: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) degraded: AtomicBool,
    /// When the store last acknowledged a pulse (wall ms; 0 before the first).
    pub(crate) last_push_ms: AtomicU64,
}

impl Counters {
    /// The counters as they are now.
    pub(crate) fn snapshot(&self) -> SyncStats {
        let c = self;
        SyncStats {
            pulses: c.pulses.load(Relaxed),
            pushed: c.pushed.load(Relaxed),
            pulled: c.pulled.load(Relaxed),
            merges: c.merges.load(Relaxed),
            full_syncs: c.full_syncs.load(Relaxed),
            resyncs: c.resyncs.load(Relaxed),
            store_errors: c.store_errors.load(Relaxed),
            decode_errors: c.decode_errors.load(Relaxed),
            buffered: c.buffered.load(Relaxed),
            kept_local: c.kept_local.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            republished: c.republished.load(Relaxed),
            deadbanded: c.deadbanded.load(Relaxed),
            outranked: c.outranked.load(Relaxed),
            rebuilds: c.rebuilds.load(Relaxed),
            deferred: c.deferred.load(Relaxed),
            records: c.records.load(Relaxed),
            degraded: c.degraded.load(Relaxed),
        }
    }
}
