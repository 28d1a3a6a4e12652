//! The reconciliation loop of one node: desired → applicable → current, the history of
//! what changed, the node's report (its current state), and divergence alerts.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use atrion_core::{Engine, EngineError, PhysicsObserver, PolicyTarget};
use atrion_state::{Change as FeedChange, Clock, StateStore};

use crate::keys::{PolicyKeys, fnv1a};
use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::PolicyError;
use crate::desired::{Change, Changed, DesiredStore};
use crate::model::{Ban, Desired, Policy, Source};
use crate::runtime::Gate;
use crate::validate::{Stage, Validator};
use crate::view::{Cluster, resolve};

mod types;

pub use types::*;

struct NodeState {
    desired: Desired,
    applied: Vec<Applicable>,
    current: Report,
    /// When the last report was written (engine instant), and what it said.
    reported: Option<(Instant, Report)>,
    reports: Vec<Report>,
    /// Nodes behind desired: since when (wall ms).
    behind: HashMap<String, u64>,
    alerts: BTreeMap<String, Alert>,
    /// Since when this node's reads of desired state fail (wall ms); `None` while they work.
    read_failing_since: Option<u64>,
}

struct Inner {
    /// The engine, seen through what the policy layer may do to it.
    engine: Arc<dyn PolicyTarget>,
    cluster: Cluster,
    keys: PolicyKeys,
    clock: Arc<dyn Clock>,
    gate: Arc<Gate>,
    cfg: PolicyConfig,
    state: Mutex<NodeState>,
    events: broadcast::Sender<PolicyEvent>,
    /// One reconciliation at a time.
    running: tokio::sync::Mutex<()>,
}

/// One node's policy layer: it reconciles its engine with the cluster's desired state in
/// the background, and answers the API's questions.
pub struct PolicyNode<O> {
    inner: Arc<Inner>,
    /// The engine's observer type: the node is started on an `Engine<O>`.
    _engine: PhantomData<fn() -> O>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<O> std::fmt::Debug for PolicyNode<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyNode").field("node", &self.inner.keys.node_id()).finish()
    }
}

impl<O: PhysicsObserver + 'static> PolicyNode<O> {
    /// Starts the policy layer of `engine` (whose engine-wide physics is the defaults that
    /// policies override) over `store`, as the node and namespace of `keys`: one
    /// reconciliation at once, then on every change of the desired state and every tick.
    pub async fn start(
        engine: Arc<Engine<O>>,
        store: Arc<dyn StateStore>,
        keys: PolicyKeys,
        clock: Arc<dyn Clock>,
        cfg: PolicyConfig,
    ) -> Arc<Self> {
        let validator = Validator::new(engine.config().clone(), cfg.limits.clone());
        let node = keys.node_id().to_owned();
        let cluster = Cluster::new(store, keys.clone(), validator, cfg.history.clone(), cfg.audit.clone());
        let inner = Arc::new(Inner {
            cluster,
            engine,
            clock,
            gate: Gate::new(),
            state: Mutex::new(NodeState {
                desired: Desired::default(),
                applied: Vec::new(),
                current: Report {
                    node: node.clone(),
                    version: 0,
                    hash: hash_of(&[], &[]),
                    applied_ms: 0,
                    at_ms: 0,
                    error: None,
                },
                reported: None,
                reports: Vec::new(),
                behind: HashMap::new(),
                alerts: BTreeMap::new(),
                read_failing_since: None,
            }),
            events: broadcast::channel(256).0,
            running: tokio::sync::Mutex::new(()),
            keys,
            cfg,
        });
        let this = Arc::new(PolicyNode {
            inner: inner.clone(),
            _engine: PhantomData,
            cancel: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let cancel = this.cancel.clone();
        let task = tokio::spawn(async move { inner.run(cancel).await });
        *this.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        this
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.inner.keys.node_id()
    }

    /// Bans and VIP lanes, for the decision path.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.inner.gate
    }

    /// The desired state's store, to change it.
    pub fn desired(&self) -> &DesiredStore {
        self.inner.cluster.desired()
    }

    /// The clock (wall time of bans and logs).
    pub fn wall_ms(&self) -> u64 {
        self.inner.clock.wall_ms()
    }

    /// Events: applied versions, failures, divergence and convergence.
    pub fn events(&self) -> broadcast::Receiver<PolicyEvent> {
        self.inner.events.subscribe()
    }

    /// This node's current state.
    pub fn current(&self) -> Report {
        self.inner.lock().current.clone()
    }

    /// Every node's report as this node last read it (no store access), this node's
    /// first; and the desired version it last read.
    pub fn known(&self) -> (u64, Vec<Report>) {
        let st = self.inner.lock();
        (st.desired.version, self_first(&st.current, st.reports.iter().cloned()))
    }

    /// Divergence alerts in force.
    pub fn alerts(&self) -> Vec<Alert> {
        self.inner.lock().alerts.values().cloned().collect()
    }

    /// Changes the desired state (see [`DesiredStore::change`]) and reconciles this node at
    /// once; the change is recorded in the audit trail, refused or not.
    pub async fn change(
        &self,
        source: Source,
        change: &Change,
        who: &str,
        expected: Option<u64>,
    ) -> Result<Changed, PolicyError> {
        let now = self.wall_ms();
        let changed = self.inner.cluster.change(source, change, who, expected, now).await?;
        self.inner.reconcile().await;
        Ok(changed)
    }

    /// Changes the desired state only if the write can start before `deadline`
    /// ([`DesiredStore::change_until`]), recorded in the audit trail; this node applies it
    /// at its next reconciliation, or at [`PolicyNode::reconcile_now`].
    pub async fn commit(
        &self,
        source: Source,
        change: &Change,
        who: &str,
        expected: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<Changed, PolicyError> {
        let now = self.wall_ms();
        self.inner.cluster.change_until(source, change, who, expected, now, deadline).await
    }

    /// Reads desired state and applies what changed, now (what [`PolicyNode::change`]
    /// does after its write).
    pub async fn apply_now(&self) {
        self.inner.reconcile().await;
    }

    /// The longest a store call may take.
    pub fn store_timeout(&self) -> Duration {
        self.inner.cfg.store_timeout
    }

    /// Rewrites the audit entry at `key` (a count of refused attempts that grew).
    pub async fn audit_rewrite(&self, key: &str, entry: AuditEntry) -> Result<(), PolicyError> {
        self.inner.timed(self.inner.cluster.audit.rewrite(key, &entry)).await
    }

    /// Appends to the audit trail (also logged under the `atrion::audit` target).
    pub async fn audit(&self, entry: AuditEntry) -> Result<String, PolicyError> {
        self.inner.timed(self.inner.cluster.audit(&entry)).await
    }

    /// The cluster's state in the store: desired state, reports, history, audit trail.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// Reconciles now (a tick's work, without waiting for it).
    pub async fn reconcile_now(&self) {
        self.inner.reconcile().await;
        self.inner.read_reports().await;
        self.inner.check_divergence();
    }

    /// Desired, applicable and current state, as this node knows them now (desired and the
    /// other nodes' reports are read from the store).
    ///
    /// When the store cannot be reached, the dump says what this node last knew, marked
    /// `stale`: a partitioned node can still be asked what it runs.
    pub async fn dump(&self) -> Result<StateDump, PolicyError> {
        let c = &self.inner.cluster;
        let read = async { Ok((self.inner.timed(c.desired.read()).await?.0, self.inner.timed(c.reports()).await?)) };
        let fresh: Result<(Desired, Vec<Report>), PolicyError> = read.await;
        let st = self.inner.lock();
        let stale = fresh.is_err();
        let (desired, reports) = fresh.unwrap_or_else(|_| (st.desired.clone(), st.reports.clone()));
        let me = self.inner.keys.node_id();
        let current = self_first(&st.current, reports);
        Ok(StateDump {
            node: Some(me.to_owned()),
            stale,
            desired,
            applicable: st.applied.clone(),
            current,
            alerts: st.alerts.values().cloned().collect(),
        })
    }

    /// What each node runs that differs from desired.
    pub async fn diff(&self) -> Result<Vec<NodeDiff>, PolicyError> {
        let dump = self.dump().await?;
        self.inner.timed(self.inner.cluster.diff(&dump)).await
    }

    /// Stops the loop, and leaves: this node's report and its place in the report index are
    /// removed (bounded by the store timeout), so that the others do not take it for cut off.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = task {
            let _ = t.await;
            if let Err(e) = self.inner.timed(self.inner.cluster.leave()).await {
                tracing::debug!(error = %e, "this node's policy report could not be removed");
            }
        }
    }
}

impl<O> Drop for PolicyNode<O> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// This node's report (`own`, as it stands now) first, then the others' from `reports`
/// (an older copy of this node's own among them is dropped).
fn self_first(own: &Report, reports: impl IntoIterator<Item = Report>) -> Vec<Report> {
    std::iter::once(own.clone()).chain(reports.into_iter().filter(|r| r.node != own.node)).collect()
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn timed<T>(&self, f: impl Future<Output = Result<T, PolicyError>>) -> Result<T, PolicyError> {
        tokio::time::timeout(self.cfg.store_timeout, f).await.unwrap_or(Err(PolicyError::Timeout))
    }

    async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut feed = None;
        let mut tick = tokio::time::interval(self.cfg.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let desired_key = self.keys.policy_desired();
        let mut full_at: Option<Instant> = None;
        loop {
            if feed.is_none() {
                // Subscribed before the full read, so that a change in between is not missed.
                let prefix = self.keys.policy_prefix();
                let sub = self.cluster.desired.store().subscribe(&prefix);
                feed = tokio::time::timeout(self.cfg.store_timeout, sub).await.ok().and_then(Result::ok).flatten();
                full_at = None;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {
                    if feed.is_none() || full_at.is_none_or(|at| at.elapsed() >= self.cfg.full_sync) {
                        self.reconcile().await;
                        if self.read_reports().await {
                            full_at = Some(Instant::now());
                        }
                    }
                    self.check_divergence();
                    self.report(false).await;
                }
                change = next(&mut feed) => match change {
                    Some(FeedChange::Resync) => full_at = None,
                    Some(c) if c.key() == Some(desired_key.as_str()) => {
                        self.reconcile().await;
                        self.report(false).await;
                    }
                    Some(c) => self.heard(c).await,
                    None => feed = None,
                },
            }
        }
    }

    /// A change under the policy prefix other than desired state: a node's report.
    async fn heard(&self, change: FeedChange) {
        let Some(node) = change.key().and_then(|k| k.strip_prefix(self.keys.policy_reports_prefix().as_str())) else {
            return;
        };
        if self.keys.is_own(node) {
            return;
        }
        let node = node.to_owned();
        let value = match change {
            FeedChange::Set { value: Some(v), .. } => Some(v),
            FeedChange::Set { key, .. } => {
                match self.timed(async { Ok(self.cluster.desired.store().get(&key).await?) }).await {
                    Ok(entry) => entry.map(|e| e.value),
                    Err(_) => return,
                }
            }
            _ => None,
        };
        let report = value.and_then(|v| serde_json::from_slice::<Report>(&v).ok()).filter(|r| r.node == node);
        let mut st = self.lock();
        st.reports.retain(|r| r.node != node);
        st.reports.extend(report);
    }

    /// Reads every node's report in full; whether it could.
    async fn read_reports(&self) -> bool {
        match self.timed(self.cluster.reports()).await {
            Ok(r) => {
                let me = self.keys.node_id();
                self.lock().reports = r.into_iter().filter(|r| r.node != me).collect();
                true
            }
            Err(_) => false,
        }
    }

    /// Reads desired state and applies what changed. Store errors leave everything as it
    /// is (the next tick or change tries again).
    async fn reconcile(&self) {
        let _one = self.running.lock().await;
        let started = Instant::now();
        let desired = match self.timed(self.cluster.desired.read()).await {
            Ok((d, _)) => d,
            Err(e) => {
                tracing::debug!(error = %e, "the desired policies cannot be read");
                if !matches!(e, PolicyError::Corrupt { .. }) {
                    let now = self.clock.wall_ms();
                    self.lock().read_failing_since.get_or_insert(now);
                    return;
                }
                let version = self.lock().desired.version + 1;
                self.fail(version, Divergence::SoftwareBug, e.to_string());
                return;
            }
        };
        let now = self.clock.wall_ms();
        {
            let mut st = self.lock();
            st.read_failing_since = None;
            if st.desired == desired && st.current.version == desired.version {
                return;
            }
        }
        let version = desired.version;
        let resolved = resolve(self.cluster.desired.validator(), &desired);
        let (applicable, policies) = match resolved {
            Ok(r) => r,
            Err(message) => {
                // A document within the writer's bounds but over this node's own (a node
                // configured with lower limits) is a lack of room, not a bug.
                let class = match self.cluster.desired.validator().check_desired(&desired) {
                    Err(r) if r.issues.iter().all(|i| i.stage == Stage::Resource) => Divergence::ResourceConstraint,
                    _ => Divergence::SoftwareBug,
                };
                return self.fail(version, class, message);
            }
        };
        if let Err(e) = self.engine.set_policies(policies) {
            let class = match e {
                EngineError::TableFull { .. } => Divergence::ResourceConstraint,
                _ => Divergence::SoftwareBug,
            };
            return self.fail(version, class, e.to_string());
        }
        self.gate.install(&desired);
        let bans = desired.bans();
        let changes = {
            let mut st = self.lock();
            let changes = diff(&st.desired, &desired);
            st.current = Report {
                node: self.keys.node_id().to_owned(),
                version,
                hash: hash_of(&applicable, &bans),
                applied_ms: now,
                at_ms: now,
                error: None,
            };
            st.applied = applicable;
            st.desired = desired;
            changes
        };
        metrics::histogram!("atrion_policy_reconcile_seconds").record(started.elapsed().as_secs_f64());
        metrics::gauge!("atrion_policy_version").set(version as f64);
        metrics::gauge!("atrion_policy_bans").set(self.gate.bans_in_force(now) as f64);
        tracing::info!(version, changes = changes.len(), "policies applied");
        let _ = self.events.send(PolicyEvent::Applied { version, changes: changes.len() });
        if !changes.is_empty() {
            let event = HistoryEvent { version, node: self.keys.node_id().to_owned(), at_ms: now, changes };
            if let Err(e) = self.timed(self.cluster.history.append(now, &event)).await {
                tracing::warn!(error = %e, version, "the history event could not be written");
            }
        }
        drop(_one);
        self.report(true).await;
    }

    fn fail(&self, version: u64, class: Divergence, message: String) {
        metrics::counter!("atrion_policy_reconcile_errors_total").increment(1);
        let error = ApplyError { class, message };
        let mut st = self.lock();
        if st.current.error.as_ref() == Some(&error) {
            return;
        }
        tracing::error!(version, class = ?error.class, error = %error.message, "the desired policies cannot be applied: the node keeps what it runs");
        st.current.error = Some(error.clone());
        drop(st);
        let _ = self.events.send(PolicyEvent::Failed { version, error });
    }

    /// Writes this node's report when it changed, or when `report_every` passed.
    async fn report(&self, changed: bool) {
        let now = self.clock.wall_ms();
        let report = {
            let mut st = self.lock();
            st.current.at_ms = now;
            let due = st.reported.as_ref().is_none_or(|(at, r)| {
                at.elapsed() >= self.cfg.report_every || r.version != st.current.version || r.error != st.current.error
            });
            if !changed && !due {
                return;
            }
            st.current.clone()
        };
        let Ok(bytes) = serde_json::to_vec(&report) else { return };
        let ttl = self.cluster.desired.store().capabilities().ttl.then_some(self.cfg.report_every * 30);
        let key = self.keys.policy_report();
        let put = self.cluster.desired.store().put(&key, Bytes::from(bytes), ttl);
        if let Ok(Ok(_)) = tokio::time::timeout(self.cfg.store_timeout, put).await {
            let first = self.lock().reported.replace((Instant::now(), report)).is_none();
            if first && self.timed(self.cluster.join()).await.is_err() {
                // Joined at the next report instead.
                self.lock().reported = None;
            }
        }
    }

    /// Compares every node's report with desired state; raises and clears alerts.
    fn check_divergence(&self) {
        let now = self.clock.wall_ms();
        let limit = self.cfg.every.as_millis() as u64 * u64::from(self.cfg.divergence_after);
        let silent_after = self.cfg.report_every.as_millis() as u64 * 3;
        let mut raised = Vec::new();
        let mut cleared = Vec::new();
        {
            let mut st = self.lock();
            let desired = st.desired.version;
            let me = self.keys.node_id().to_owned();
            // This node: behind when it cannot read desired state, or cannot apply it.
            let mut views: Vec<(String, u64, Option<ApplyError>, bool)> = vec![(
                me.clone(),
                st.current.version,
                st.current.error.clone(),
                st.read_failing_since.is_some_and(|since| now.saturating_sub(since) > silent_after),
            )];
            views.extend(
                st.reports
                    .iter()
                    .map(|r| (r.node.clone(), r.version, r.error.clone(), now.saturating_sub(r.at_ms) > silent_after)),
            );
            let mut seen = Vec::new();
            for (node, version, error, silent) in views {
                seen.push(node.clone());
                let behind = version < desired || error.is_some() || (node == me && silent);
                if !behind {
                    st.behind.remove(&node);
                    if st.alerts.remove(&node).is_some() {
                        cleared.push(node);
                    }
                    continue;
                }
                let since = *st.behind.entry(node.clone()).or_insert(now);
                if now.saturating_sub(since) < limit {
                    continue;
                }
                let (class, message) = match (&error, silent) {
                    (_, true) if node == me => {
                        (Divergence::NetworkIssue, "this node cannot read the desired state".to_owned())
                    }
                    (_, true) => {
                        (Divergence::NetworkIssue, "no report from the node: it cannot reach the store".to_owned())
                    }
                    (Some(e), false) => (e.class, e.message.clone()),
                    (None, false) => {
                        (Divergence::ConfigurationDrift, format!("runs version {version}, desired {desired}"))
                    }
                };
                // Raised once; judged again every check (a late node turns out to be silent).
                if st.alerts.get(&node).is_some_and(|a| a.class == class && a.desired == desired) {
                    continue;
                }
                let alert = Alert { node: node.clone(), class, since_ms: since, desired, current: version, message };
                st.alerts.insert(node, alert.clone());
                raised.push(alert);
            }
            st.behind.retain(|n, _| seen.contains(n));
            let gone: Vec<String> = st.alerts.keys().filter(|n| !seen.contains(n)).cloned().collect();
            for n in gone {
                st.alerts.remove(&n);
                cleared.push(n);
            }
            metrics::gauge!("atrion_policy_desired_version").set(desired as f64);
            metrics::gauge!("atrion_policy_divergence_alerts").set(st.alerts.len() as f64);
            for r in &st.reports {
                metrics::gauge!("atrion_policy_node_version", "node" => r.node.clone()).set(r.version as f64);
            }
        }
        metrics::gauge!("atrion_policy_bans").set(self.gate.bans_in_force(now) as f64);
        for a in raised {
            tracing::warn!(node = %a.node, class = ?a.class, desired = a.desired, current = a.current, "{}", a.message);
            let _ = self.events.send(PolicyEvent::Diverged(a));
        }
        for node in cleared {
            tracing::info!(node = %node, "the node runs desired state again");
            let _ = self.events.send(PolicyEvent::Converged { node });
        }
    }
}

async fn next(feed: &mut Option<atrion_state::ChangeFeed>) -> Option<FeedChange> {
    match feed {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

/// The hash of what a node runs: FNV-1a over the applicable policies and bans as JSON.
fn hash_of(applicable: &[Applicable], bans: &[Ban]) -> String {
    let bytes = serde_json::to_vec(&(applicable, bans)).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

/// The changes between two desired states: policies in force by pattern, bans by target.
fn diff(before: &Desired, after: &Desired) -> Vec<PolicyChange> {
    let map = |d: &Desired| -> BTreeMap<String, Policy> {
        d.effective().into_iter().map(|(_, p)| (p.route.clone(), p.clone())).collect()
    };
    let (a, b) = (map(before), map(after));
    let mut out = Vec::new();
    let json = |p: Option<&Policy>| p.and_then(|p| serde_json::to_value(p).ok());
    for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(PolicyChange { target: k.clone(), from: json(x), to: json(y) });
        }
    }
    let target = |b: &Ban| format!("ban {}", Ban::target_text(b.route.as_deref(), b.client.as_deref()));
    let (ba, bb) = (before.bans(), after.bans());
    let key = |b: &Ban| (b.route.clone(), b.client.clone());
    let after_by: HashMap<_, &Ban> = bb.iter().map(|b| (key(b), b)).collect();
    let before_by: HashMap<_, &Ban> = ba.iter().map(|b| (key(b), b)).collect();
    for x in &ba {
        let y = after_by.get(&key(x)).copied();
        if y != Some(x) {
            out.push(PolicyChange {
                target: target(x),
                from: serde_json::to_value(x).ok(),
                to: y.and_then(|y| serde_json::to_value(y).ok()),
            });
        }
    }
    for y in bb.iter().filter(|y| !before_by.contains_key(&key(y))) {
        out.push(PolicyChange { target: target(y), from: None, to: serde_json::to_value(y).ok() });
    }
    out
}

#[cfg(test)]
mod tests;
