//! The cluster's policy state as the store holds it: desired state, every node's report,
//! the history and the audit trail. What a node serves, and what the CLI reads straight
//! from a store.

use std::collections::HashSet;
use std::sync::Arc;

use atrion_core::{Hold, RoutePolicy};
use atrion_state::{GroupWrite, StateStore};

use crate::keys::PolicyKeys;

use crate::PolicyError;
use crate::desired::{Change, Changed, DesiredStore};
use crate::log::{Log, Logged, Page, Prepared, Retention};
use crate::model::{Ban, Desired, Source};
use crate::reconcile::{Applicable, AuditEntry, HistoryEvent, NodeDiff, PolicyChange, Report, StateDump};
use crate::validate::Validator;

/// The cluster's policy state in a store.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) desired: DesiredStore,
    pub(crate) history: Arc<Log>,
    pub(crate) audit: Arc<Log>,
    keys: PolicyKeys,
}

impl Cluster {
    /// The state of the cluster whose keys are `keys` (its node id names what this side
    /// appends to the logs), the history and audit logs kept within `history` and `audit`.
    pub fn new(
        store: Arc<dyn StateStore>,
        keys: PolicyKeys,
        validator: Validator,
        history: Retention,
        audit: Retention,
    ) -> Self {
        let node = keys.node_id().to_owned();
        Cluster {
            desired: DesiredStore::new(store.clone(), &keys, validator),
            history: Arc::new(Log::new(store.clone(), keys.policy_history_prefix(), &node, history)),
            audit: Arc::new(Log::new(store, keys.audit_prefix(), &node, audit)),
            keys,
        }
    }

    /// Desired state.
    pub fn desired(&self) -> &DesiredStore {
        &self.desired
    }

    /// Every node's last report: the nodes of the report index (a scan of the namespace
    /// only where there is no index yet). Nodes whose report is gone (expired) leave the
    /// index.
    pub async fn reports(&self) -> Result<Vec<Report>, PolicyError> {
        let store = self.desired.store();
        let (nodes, keys) = match self.index().await? {
            Some(nodes) => {
                let keys = nodes.iter().map(|n| self.keys.policy_report_of(n)).collect();
                (nodes, keys)
            }
            None => (Vec::new(), store.list_keys(&self.keys.policy_reports_prefix()).await?),
        };
        let values = store.batch_get(&keys).await?;
        let gone: Vec<&String> = nodes.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(n, _)| n).collect();
        if !gone.is_empty() {
            let gone: Vec<String> = gone.into_iter().cloned().collect();
            self.reindex(|list| list.retain(|n| !gone.contains(n))).await?;
        }
        Ok(values.into_iter().flatten().filter_map(|e| serde_json::from_slice::<Report>(&e.value).ok()).collect())
    }

    /// The node ids of the report index; `None` when there is none.
    async fn index(&self) -> Result<Option<Vec<String>>, PolicyError> {
        let key = self.keys.policy_index();
        match self.desired.store().get(&key).await? {
            None => Ok(None),
            // A garbled index is rebuilt by the next node that reports.
            Some(e) => Ok(Some(serde_json::from_slice(&e.value).unwrap_or_default())),
        }
    }

    /// Changes the report index by compare-and-swap.
    async fn reindex(&self, f: impl Fn(&mut Vec<String>) + Send + Sync) -> Result<(), PolicyError> {
        let key = self.keys.policy_index();
        atrion_state::update(self.desired.store().as_ref(), &key, 32, |current| {
            let mut list: Vec<String> = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
            f(&mut list);
            list.sort_unstable();
            list.dedup();
            bytes::Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
        })
        .await?;
        Ok(())
    }

    /// Puts this side's node in the report index (once it reports).
    pub(crate) async fn join(&self) -> Result<(), PolicyError> {
        let me = self.keys.node_id().to_owned();
        if self.index().await?.is_some_and(|nodes| nodes.contains(&me)) {
            return Ok(());
        }
        self.reindex(|list| list.push(me.clone())).await
    }

    /// Takes this side's node out: its report and its place in the index (a node that
    /// leaves cleanly is not taken for cut off).
    pub(crate) async fn leave(&self) -> Result<(), PolicyError> {
        self.desired.store().delete(&self.keys.policy_report()).await?;
        let me = self.keys.node_id().to_owned();
        self.reindex(|list| list.retain(|n| *n != me)).await
    }

    /// Desired state, what it resolves to (on nodes whose defaults are the validator's),
    /// and every node's report: the dump without a node of its own (no alerts: those are a
    /// node's judgement).
    pub async fn dump(&self) -> Result<StateDump, PolicyError> {
        let (desired, _) = self.desired.read().await?;
        let applicable = resolve(self.desired.validator(), &desired).map(|(a, _)| a).unwrap_or_default();
        Ok(StateDump {
            node: None,
            stale: false,
            current: self.reports().await?,
            desired,
            applicable,
            alerts: Vec::new(),
        })
    }

    /// What each node of `dump` runs that differs from desired: the changes of the versions
    /// it has not applied, from the history.
    pub async fn diff(&self, dump: &StateDump) -> Result<Vec<NodeDiff>, PolicyError> {
        let desired = dump.desired.version;
        let events: Vec<HistoryEvent> = if dump.current.iter().any(|r| r.version < desired) {
            self.history.all::<HistoryEvent>().await?.into_iter().map(|l| l.entry).collect()
        } else {
            Vec::new()
        };
        Ok(dump
            .current
            .iter()
            .map(|r| {
                let mut missing: Vec<PolicyChange> = Vec::new();
                let mut seen = HashSet::new();
                for e in events.iter().filter(|e| e.version > r.version) {
                    if seen.insert(e.version) {
                        missing.extend(e.changes.iter().cloned());
                    }
                }
                NodeDiff {
                    in_sync: r.version == desired && r.error.is_none(),
                    node: r.node.clone(),
                    version: r.version,
                    desired,
                    missing,
                    error: r.error.clone(),
                }
            })
            .collect())
    }

    /// A page of the history of applied changes, newest first.
    pub async fn history(&self, before: Option<&str>, limit: usize) -> Result<Page<HistoryEvent>, PolicyError> {
        self.history.page(before, limit).await
    }

    /// A page of the audit trail, newest first.
    pub async fn audit_page(&self, before: Option<&str>, limit: usize) -> Result<Page<AuditEntry>, PolicyError> {
        self.audit.page(before, limit).await
    }

    /// The whole audit trail, oldest first.
    pub async fn audit_all(&self) -> Result<Vec<Logged<AuditEntry>>, PolicyError> {
        self.audit.all().await
    }

    /// Changes desired state ([`DesiredStore::change`]) and records it in the audit trail,
    /// refused or not. On a store with groups ([`atrion_state::StateStore::transact`]) a
    /// change and its audit entry are written as one group: both or neither, never a change
    /// without its entry. Elsewhere (a Redis Cluster: the two keys are in different slots)
    /// the entry is written after the change; an entry that cannot be written is logged,
    /// and does not undo the change.
    pub async fn change(
        &self,
        source: Source,
        change: &Change,
        who: &str,
        expected: Option<u64>,
        now_ms: u64,
    ) -> Result<Changed, PolicyError> {
        self.change_until(source, change, who, expected, now_ms, None).await
    }

    /// [`Cluster::change`] through [`DesiredStore::change_until`]: written only if the
    /// write can start before `deadline`.
    pub async fn change_until(
        &self,
        source: Source,
        change: &Change,
        who: &str,
        expected: Option<u64>,
        now_ms: u64,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Changed, PolicyError> {
        let (action, target) = describe(change);
        let entry_of = |c: &Changed| AuditEntry {
            at_ms: now_ms,
            who: who.to_owned(),
            action: action.into(),
            target: target.clone(),
            before: serde_json::to_value(c.before.layer(source)).ok(),
            after: serde_json::to_value(c.after.layer(source)).ok(),
            ok: true,
            error: None,
            node: self.keys.node_id().to_owned(),
            count: None,
        };
        let with = |c: &Changed| {
            let entry = entry_of(c);
            let prepared = self.prepare_audit(&entry)?;
            let write = GroupWrite::Put { key: prepared.key.clone(), value: prepared.value.clone(), ttl: None };
            Ok((vec![write], (prepared, entry)))
        };
        let result = self.desired.change_with(source, change, who, expected, now_ms, deadline, &with).await;
        let result = match result {
            Ok((changed, Some((prepared, entry)))) => {
                log_audit(&entry);
                if let Err(e) = self.audit.written(&prepared).await {
                    tracing::warn!(target: "atrion::audit", error = %e, "the audit trail's retention could not be enforced");
                }
                return Ok(changed);
            }
            Ok((changed, None)) => Ok(changed),
            Err(e) => Err(e),
        };
        let (before, after, error) = match &result {
            Ok(c) => (
                serde_json::to_value(c.before.layer(source)).ok(),
                serde_json::to_value(c.after.layer(source)).ok(),
                None,
            ),
            Err(e) => (None, Some(change_value(change)), Some(e.to_string())),
        };
        let entry = AuditEntry {
            at_ms: now_ms,
            who: who.to_owned(),
            action: action.into(),
            target,
            before,
            after,
            ok: result.is_ok(),
            error,
            node: self.keys.node_id().to_owned(),
            count: None,
        };
        if let Err(e) = self.audit(&entry).await {
            tracing::warn!(target: "atrion::audit", error = %e, "the audit entry could not be written");
        }
        result
    }

    /// An audit entry encoded and keyed to be written in a group; too large for the log, it
    /// is kept without its before and after (as [`Cluster::audit`] keeps it).
    fn prepare_audit(&self, entry: &AuditEntry) -> Result<Prepared, PolicyError> {
        match self.audit.prepare(entry.at_ms, entry) {
            Err(PolicyError::TooLarge { bytes, .. }) => {
                let note = serde_json::json!({ "omitted_bytes": bytes });
                let lean = AuditEntry { before: None, after: Some(note), ..entry.clone() };
                self.audit.prepare(entry.at_ms, &lean)
            }
            other => other,
        }
    }

    /// Appends to the audit trail (also logged under the `atrion::audit` target).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<String, PolicyError> {
        log_audit(entry);
        match self.audit.append(entry.at_ms, entry).await {
            // Too large for the log: kept without its before and after.
            Err(PolicyError::TooLarge { bytes, .. }) => {
                let note = serde_json::json!({ "omitted_bytes": bytes });
                let lean = AuditEntry { before: None, after: Some(note), ..entry.clone() };
                self.audit.append(entry.at_ms, &lean).await
            }
            other => other,
        }
    }
}

/// An audit entry in the process's log, under the `atrion::audit` target.
fn log_audit(entry: &AuditEntry) {
    tracing::info!(target: "atrion::audit", who = %entry.who, action = %entry.action, target = ?entry.target, ok = entry.ok, error = ?entry.error, "admin action");
}

/// Desired state resolved into what a node applies: every policy in force with its
/// physics, and the engine's overrides. `Err` says why it cannot be applied.
pub(crate) fn resolve(v: &Validator, desired: &Desired) -> Result<(Vec<Applicable>, Vec<RoutePolicy>), String> {
    v.check_desired(desired).map_err(|e| e.to_string())?;
    let mut applicable = Vec::new();
    let mut policies = Vec::new();
    for (source, p) in desired.effective() {
        let physics = v
            .physics(p)
            .map_err(|issues| issues.iter().map(|i| format!("{}: {i}", p.route)).collect::<Vec<_>>().join("; "))?;
        policies.push(RoutePolicy {
            pattern: p.route.clone(),
            config: physics.clone(),
            hold: p.state.map_or(Hold::Released, Into::into),
        });
        applicable.push(Applicable {
            route: p.route.clone(),
            source,
            physics,
            state: p.state,
            vip: p.lanes.as_ref().map(|l| l.vip.clone()).unwrap_or_default(),
        });
    }
    Ok((applicable, policies))
}

fn describe(change: &Change) -> (&'static str, Option<String>) {
    let ban = |r: &Option<String>, c: &Option<String>| Ban::target_text(r.as_deref(), c.as_deref());
    match change {
        Change::Replace(_) => ("policy.replace", None),
        Change::Upsert(p) => ("policy.set", Some(p.route.clone())),
        Change::Remove(r) => ("policy.delete", Some(r.clone())),
        Change::Ban(b) => ("ban", Some(ban(&b.route, &b.client))),
        Change::Unban(r, c) => ("unban", Some(ban(r, c))),
    }
}

fn change_value(change: &Change) -> serde_json::Value {
    match change {
        Change::Replace(s) => serde_json::to_value(s).unwrap_or_default(),
        Change::Upsert(p) => serde_json::to_value(p).unwrap_or_default(),
        Change::Remove(r) => serde_json::Value::from(r.as_str()),
        Change::Ban(b) => serde_json::to_value(b).unwrap_or_default(),
        Change::Unban(r, c) => serde_json::json!({"route": r, "client": c}),
    }
}

#[cfg(test)]
mod tests {
    use atrion_core::PhysicsConfig;
    use atrion_state::InMemoryStore;
    use serde_json::json;

    use super::*;
    use crate::model::{ManualState, Policy};
    use crate::validate::Limits;

    fn validator() -> Validator {
        Validator::new(PhysicsConfig::default(), Limits::default())
    }

    fn cluster(store: &Arc<dyn StateStore>, node: &str) -> Cluster {
        Cluster::new(store.clone(), PolicyKeys::new("t", node), validator(), Retention::default(), Retention::default())
    }

    fn policy(v: serde_json::Value) -> Policy {
        serde_json::from_value(v).unwrap()
    }

    fn report(node: &str, version: u64) -> Report {
        Report { node: node.into(), version, hash: String::new(), applied_ms: 1, at_ms: 1, error: None }
    }

    async fn put_report(store: &Arc<dyn StateStore>, r: &Report) {
        let key = PolicyKeys::new("t", &r.node).policy_report();
        store.put(&key, bytes::Bytes::from(serde_json::to_vec(r).unwrap()), None).await.unwrap();
    }

    #[test]
    fn resolution_puts_the_apis_policy_over_the_files_and_merges_physics_over_the_defaults() {
        let mut d = Desired::default();
        d.api.policies = vec![policy(json!({"route": "GET /a", "state": "open"}))];
        d.file.policies = vec![
            policy(json!({"route": "GET /a", "physics": {"tuner": {"k": 9.0}}})),
            policy(json!({"route": "GET /b*", "physics": {"tuner": {"k": 4.0}}, "lanes": {"vip": ["gold"]}})),
        ];
        let (applicable, policies) = resolve(&validator(), &d).unwrap();
        let a = &applicable[0];
        assert_eq!(
            (a.route.as_str(), a.source, a.physics.is_none(), a.state),
            ("GET /a", Source::Api, true, Some(ManualState::Open))
        );
        let b = &applicable[1];
        assert_eq!((b.route.as_str(), b.source, b.vip.clone()), ("GET /b*", Source::File, vec!["gold".to_owned()]));
        let physics = b.physics.as_ref().unwrap();
        assert_eq!(physics.tuner.k, 4.0);
        assert_eq!(physics.r_base, PhysicsConfig::default().r_base, "the rest is the node's defaults");
        assert_eq!((policies[0].hold, policies[1].hold), (Hold::Open, Hold::Released));
        assert_eq!(policies[1].config.as_ref(), Some(physics));
    }

    #[test]
    fn a_document_that_breaks_the_rules_does_not_resolve() {
        let mut d = Desired::default();
        d.api.policies = vec![policy(json!({"route": "x", "physics": {"tuner": {"k": -1.0}}}))];
        let err = resolve(&validator(), &d).unwrap_err();
        assert!(err.contains("tuner.k"), "{err}");
    }

    #[tokio::test]
    async fn the_dump_reads_desired_state_and_every_indexed_report() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let (a, b) = (cluster(&store, "a"), cluster(&store, "b"));
        a.change(Source::Api, &Change::Upsert(policy(json!({"route": "x"}))), "alice", None, 1).await.unwrap();
        for (c, r) in [(&a, report("a", 1)), (&b, report("b", 0))] {
            put_report(&store, &r).await;
            c.join().await.unwrap();
        }
        let dump = a.dump().await.unwrap();
        assert_eq!((dump.node.clone(), dump.stale, dump.desired.version), (None, false, 1));
        assert_eq!(dump.applicable.len(), 1);
        assert_eq!(dump.current, [report("a", 1), report("b", 0)]);
        // B leaves: its report and its place in the index go.
        b.leave().await.unwrap();
        assert_eq!(a.dump().await.unwrap().current, [report("a", 1)]);
        // A report that vanished without a leave (expired) drops out of the index at the next read.
        store.delete(&PolicyKeys::new("t", "a").policy_report()).await.unwrap();
        assert!(a.reports().await.unwrap().is_empty());
        let index = store.get(&PolicyKeys::new("t", "a").policy_index()).await.unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Vec<String>>(&index.value).unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn the_diff_lists_the_changes_a_node_has_not_applied() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let a = cluster(&store, "a");
        let change = |v: u64, target: &str| HistoryEvent {
            version: v,
            node: "a".into(),
            at_ms: v,
            changes: vec![PolicyChange { target: target.into(), from: None, to: Some(json!(1)) }],
        };
        for e in [change(1, "x"), change(2, "y"), change(2, "y"), change(3, "z")] {
            a.history.append(e.at_ms, &e).await.unwrap();
        }
        let mut failing = report("c", 3);
        failing.error = Some(crate::reconcile::ApplyError {
            class: crate::reconcile::Divergence::SoftwareBug,
            message: "no".into(),
        });
        let desired = Desired { version: 3, ..Desired::default() };
        let dump = StateDump {
            node: None,
            stale: false,
            desired,
            applicable: Vec::new(),
            current: vec![report("a", 3), report("b", 1), failing],
            alerts: Vec::new(),
        };
        let diff = a.diff(&dump).await.unwrap();
        let seen: Vec<(&str, bool, Vec<&str>)> = diff
            .iter()
            .map(|d| (d.node.as_str(), d.in_sync, d.missing.iter().map(|c| c.target.as_str()).collect()))
            .collect();
        assert_eq!(
            seen,
            [("a", true, vec![]), ("b", false, vec!["y", "z"]), ("c", false, vec![])],
            "each version's changes once (two nodes applied version 2)"
        );
        assert!(diff[2].error.is_some(), "a node at the desired version that reports an error is not in sync");
    }

    #[tokio::test]
    async fn every_change_is_audited_refused_or_not() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let a = cluster(&store, "a");
        a.change(Source::Api, &Change::Upsert(policy(json!({"route": "x"}))), "alice", None, 1).await.unwrap();
        a.change(Source::Api, &Change::Remove("nope".into()), "bob", None, 2).await.unwrap_err();
        let trail = a.audit_all().await.unwrap();
        let seen: Vec<(&str, &str, Option<&str>, bool)> = trail
            .iter()
            .map(|l| (l.entry.who.as_str(), l.entry.action.as_str(), l.entry.target.as_deref(), l.entry.ok))
            .collect();
        assert_eq!(seen, [("alice", "policy.set", Some("x"), true), ("bob", "policy.delete", Some("nope"), false)]);
        assert!(trail[1].entry.error.is_some());
    }

    /// A store that loses whatever is written alone under `audit/` (as a process that dies
    /// between the change and its audit entry would), and can fail every group.
    #[derive(Debug)]
    struct Torn {
        inner: InMemoryStore,
        groups_fail: bool,
    }

    #[async_trait::async_trait]
    impl StateStore for Torn {
        fn backend(&self) -> &'static str {
            "torn"
        }
        fn capabilities(&self) -> atrion_state::Capabilities {
            self.inner.capabilities()
        }
        async fn get(&self, key: &str) -> Result<Option<atrion_state::Entry>, atrion_state::StoreError> {
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            value: bytes::Bytes,
            ttl: Option<std::time::Duration>,
        ) -> Result<u64, atrion_state::StoreError> {
            if key.contains("/audit/") {
                let kind = atrion_state::ErrorKind::Unavailable;
                return Err(atrion_state::StoreError::new("torn", atrion_state::Op::Set, Some(key), kind));
            }
            self.inner.put(key, value, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<bool, atrion_state::StoreError> {
            self.inner.delete(key).await
        }
        async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, atrion_state::StoreError> {
            self.inner.list_keys(prefix).await
        }
        async fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<u64>,
            value: bytes::Bytes,
            ttl: Option<std::time::Duration>,
        ) -> Result<atrion_state::CasOutcome, atrion_state::StoreError> {
            self.inner.compare_and_swap(key, expected, value, ttl).await
        }
        async fn stats(&self) -> Result<atrion_state::StoreStats, atrion_state::StoreError> {
            self.inner.stats().await
        }
        async fn cleanup(&self) -> Result<atrion_state::CleanupStats, atrion_state::StoreError> {
            self.inner.cleanup().await
        }
        async fn transact(&self, group: atrion_state::Group) -> Result<Vec<Option<u64>>, atrion_state::StoreError> {
            if self.groups_fail {
                let kind = atrion_state::ErrorKind::Unavailable;
                return Err(atrion_state::StoreError::new("torn", atrion_state::Op::Transact, None, kind));
            }
            self.inner.transact(group).await
        }
    }

    /// A change and its audit entry are one group: where an entry written on its own would
    /// be lost, the change still carries its entry; where the group fails, neither is
    /// written (the failed attempt is what the trail may record, never a change without
    /// its entry).
    #[tokio::test]
    async fn a_change_and_its_audit_entry_are_written_together_or_not_at_all() {
        let store: Arc<dyn StateStore> = Arc::new(Torn { inner: InMemoryStore::new(), groups_fail: false });
        let a = cluster(&store, "a");
        let c = a.change(Source::Api, &Change::Upsert(policy(json!({"route": "x"}))), "alice", None, 1).await.unwrap();
        assert_eq!(c.after.version, 1);
        let trail = a.audit_all().await.unwrap();
        assert_eq!(trail.len(), 1, "the entry came with the change, not after it");
        assert!(trail[0].entry.ok && trail[0].entry.after.is_some(), "{:?}", trail[0].entry);
        assert_eq!(a.desired().read().await.unwrap().0.version, 1);

        let inner = InMemoryStore::new();
        let store: Arc<dyn StateStore> = Arc::new(Torn { inner: inner.clone(), groups_fail: true });
        let a = cluster(&store, "a");
        let e = a.change(Source::Api, &Change::Upsert(policy(json!({"route": "x"}))), "alice", None, 1).await;
        assert!(matches!(e, Err(PolicyError::Store(_))), "{e:?}");
        assert_eq!(a.desired().read().await.unwrap().0.version, 0, "the change did not land");
        assert!(inner.list_keys("").await.unwrap().is_empty(), "nothing half-written");
    }

    /// A writer that changed desired state first makes the group's precondition fail: with
    /// an expected version, a conflict, and no audit entry claims a change.
    #[tokio::test]
    async fn a_group_that_lost_the_race_writes_no_audit_entry_of_a_change() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let a = cluster(&store, "a");
        a.change(Source::Api, &Change::Upsert(policy(json!({"route": "x"}))), "alice", None, 1).await.unwrap();
        let stale = Some(0);
        let e = a.change(Source::Api, &Change::Upsert(policy(json!({"route": "y"}))), "bob", stale, 2).await;
        assert!(matches!(e, Err(PolicyError::Conflict { expected: 0, found: 1 })), "{e:?}");
        let trail = a.audit_all().await.unwrap();
        let oks: Vec<bool> = trail.iter().map(|l| l.entry.ok).collect();
        assert_eq!(oks, [true, false], "bob's attempt is recorded as refused, not as a change");
        assert_eq!(a.desired().read().await.unwrap().0.api.policies.len(), 1);
    }
}
