//! The cluster's policy state as the store holds it: desired state, every node's report,
//! the history and the audit trail. What a node serves, and what the CLI reads straight
//! from a store.

use std::collections::HashSet;
use std::sync::Arc;

use atrion_core::{Hold, RoutePolicy};
use atrion_state::StateStore;

use crate::keys::PolicyKeys;

use crate::PolicyError;
use crate::desired::{Change, Changed, DesiredStore};
use crate::log::{Log, Logged, Page, Retention};
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
    /// refused or not (a trail that cannot be written is logged, and does not undo the
    /// change).
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
        let result = self.desired.change_until(source, change, who, expected, now_ms, deadline).await;
        let (action, target) = describe(change);
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

    /// Appends to the audit trail (also logged under the `atrion::audit` target).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<String, PolicyError> {
        tracing::info!(target: "atrion::audit", who = %entry.who, action = %entry.action, target = ?entry.target, ok = entry.ok, error = ?entry.error, "admin action");
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
