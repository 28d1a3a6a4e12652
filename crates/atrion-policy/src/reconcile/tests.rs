//! The reconciliation loop's transitions, driven by hand: each test stops the node's
//! background loop and calls `reconcile` and `check_divergence` itself, on a clock it
//! moves, so that every step is one transition.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use atrion_core::PhysicsConfig;
use atrion_state::InMemoryStore;
use serde_json::json;

use super::*;
use crate::model::ManualState;
use crate::validate::Limits;

/// A wall clock the test moves by hand.
struct Hand(AtomicU64);

impl Clock for Hand {
    fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.load(Relaxed))
    }
    fn wall_ms(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Hand {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Relaxed);
    }
}

const T0: u64 = 1_000_000;

/// One tick is 100 ms, a node is behind for 3 ticks (300 ms) before an alert, and a
/// node is silent after three report intervals (300 ms).
fn cfg(limits: Limits) -> PolicyConfig {
    PolicyConfig {
        every: Duration::from_millis(100),
        report_every: Duration::from_millis(100),
        divergence_after: 3,
        limits,
        ..PolicyConfig::default()
    }
}

/// A node whose background loop is stopped: the test drives it.
async fn node(store: &Arc<dyn StateStore>, id: &str, clock: &Arc<Hand>, limits: Limits) -> Arc<PolicyNode<()>> {
    let engine = Arc::new(Engine::with_observer(PhysicsConfig::default(), Default::default(), ()).unwrap());
    let clock: Arc<dyn Clock> = clock.clone();
    let n = PolicyNode::start(engine, store.clone(), PolicyKeys::new("t", id), clock, cfg(limits)).await;
    n.cancel.cancel();
    let task = n.task.lock().unwrap().take();
    task.unwrap().await.unwrap();
    n
}

fn policy(route: &str) -> Policy {
    serde_json::from_value(json!({"route": route, "physics": {"tuner": {"k": 4.0}}})).unwrap()
}

fn report(node: &str, version: u64, at_ms: u64, error: Option<ApplyError>) -> Report {
    Report { node: node.into(), version, hash: String::new(), applied_ms: at_ms, at_ms, error }
}

fn drain(rx: &mut broadcast::Receiver<PolicyEvent>) -> Vec<PolicyEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn setup() -> (Arc<dyn StateStore>, Arc<Hand>) {
    (Arc::new(InMemoryStore::new()), Arc::new(Hand(AtomicU64::new(T0))))
}

#[tokio::test]
async fn a_change_is_applied_once_recorded_and_reported() {
    let (store, clock) = setup();
    let a = node(&store, "a", &clock, Limits::default()).await;
    let mut events = a.events();
    a.desired().change(Source::Api, &Change::Upsert(policy("GET /a")), "alice", None, T0).await.unwrap();
    a.inner.reconcile().await;
    assert_eq!(drain(&mut events), [PolicyEvent::Applied { version: 1, changes: 1 }]);
    let current = a.current();
    assert_eq!((current.version, current.applied_ms, current.error), (1, T0, None));
    assert_eq!(a.inner.engine.route_config("GET /a").tuner.k, 4.0, "in force in the engine");
    // The history holds the event; the store holds the report.
    let h = a.cluster().history(None, 10).await.unwrap();
    assert_eq!(h.entries.len(), 1);
    assert_eq!((h.entries[0].entry.version, h.entries[0].entry.changes[0].target.as_str()), (1, "GET /a"));
    let stored = a.cluster().reports().await.unwrap();
    assert_eq!(stored, [a.current()]);
    // Desired state unchanged: a reconciliation does nothing (no event, no history).
    a.inner.reconcile().await;
    assert!(drain(&mut events).is_empty());
    assert_eq!(a.cluster().history(None, 10).await.unwrap().entries.len(), 1);
}

#[tokio::test]
async fn a_node_behind_desired_drifts_after_the_grace_and_converges_when_it_catches_up() {
    let (store, clock) = setup();
    let a = node(&store, "a", &clock, Limits::default()).await;
    a.desired().change(Source::Api, &Change::Upsert(policy("x")), "alice", None, T0).await.unwrap();
    a.inner.reconcile().await;
    let mut events = a.events();
    // B runs version 0, and reports it on time.
    a.inner.lock().reports = vec![report("b", 0, clock.wall_ms(), None)];
    a.inner.check_divergence();
    clock.advance(299);
    a.inner.lock().reports = vec![report("b", 0, clock.wall_ms(), None)];
    a.inner.check_divergence();
    assert!(a.alerts().is_empty(), "within the grace of three ticks");
    clock.advance(1);
    a.inner.lock().reports = vec![report("b", 0, clock.wall_ms(), None)];
    a.inner.check_divergence();
    let alert = Alert {
        node: "b".into(),
        class: Divergence::ConfigurationDrift,
        since_ms: T0,
        desired: 1,
        current: 0,
        message: "runs version 0, desired 1".into(),
    };
    assert_eq!(a.alerts(), std::slice::from_ref(&alert));
    assert_eq!(drain(&mut events), [PolicyEvent::Diverged(alert)]);
    // Raised once: the next check judges it again and says nothing new.
    a.inner.check_divergence();
    assert!(drain(&mut events).is_empty());
    // B catches up: the alert clears.
    a.inner.lock().reports = vec![report("b", 1, clock.wall_ms(), None)];
    a.inner.check_divergence();
    assert!(a.alerts().is_empty());
    assert_eq!(drain(&mut events), [PolicyEvent::Converged { node: "b".into() }]);
}

#[tokio::test]
async fn a_late_node_that_goes_silent_becomes_a_network_issue_and_clears_when_it_leaves() {
    let (store, clock) = setup();
    let a = node(&store, "a", &clock, Limits::default()).await;
    a.desired().change(Source::Api, &Change::Upsert(policy("x")), "alice", None, T0).await.unwrap();
    a.inner.reconcile().await;
    let mut events = a.events();
    a.inner.lock().reports = vec![report("b", 0, T0, None)];
    a.inner.check_divergence();
    clock.advance(300);
    a.inner.check_divergence();
    assert_eq!(a.alerts()[0].class, Divergence::ConfigurationDrift, "its last report is 300 ms old");
    clock.advance(1);
    a.inner.check_divergence();
    let alerts = a.alerts();
    assert_eq!((alerts.len(), alerts[0].class, alerts[0].since_ms), (1, Divergence::NetworkIssue, T0));
    let classes: Vec<Divergence> = drain(&mut events)
        .into_iter()
        .filter_map(|e| if let PolicyEvent::Diverged(al) = e { Some(al.class) } else { None })
        .collect();
    assert_eq!(classes, [Divergence::ConfigurationDrift, Divergence::NetworkIssue], "re-raised as its class changed");
    // B's report is gone (it left): its alert goes with it.
    a.inner.lock().reports.clear();
    a.inner.check_divergence();
    assert!(a.alerts().is_empty());
    assert_eq!(drain(&mut events), [PolicyEvent::Converged { node: "b".into() }]);
}

#[tokio::test]
async fn a_node_that_cannot_read_desired_state_flags_itself_as_a_network_issue() {
    let (store, clock) = setup();
    let a = node(&store, "a", &clock, Limits::default()).await;
    a.desired().change(Source::Api, &Change::Upsert(policy("x")), "alice", None, T0).await.unwrap();
    a.inner.reconcile().await;
    // Its reads fail from now on (what `reconcile` records on a store error).
    a.inner.lock().read_failing_since = Some(clock.wall_ms());
    clock.advance(300);
    a.inner.check_divergence();
    assert!(a.alerts().is_empty(), "not silent yet: three report intervals");
    clock.advance(301);
    a.inner.check_divergence();
    assert!(a.alerts().is_empty(), "silent from now: the grace of three ticks begins");
    clock.advance(300);
    a.inner.check_divergence();
    let alerts = a.alerts();
    assert_eq!((alerts[0].node.as_str(), alerts[0].class), ("a", Divergence::NetworkIssue), "{alerts:?}");
    // A read that works again clears it.
    a.inner.reconcile().await;
    a.inner.check_divergence();
    assert!(a.alerts().is_empty());
}

#[tokio::test]
async fn policies_over_a_nodes_own_limits_are_a_resource_constraint() {
    let (store, clock) = setup();
    let a = node(&store, "a", &clock, Limits::default()).await;
    let small = Limits { max_policies: 1, ..Limits::default() };
    let b = node(&store, "b", &clock, small).await;
    let mut events = b.events();
    for route in ["x", "y"] {
        a.desired().change(Source::Api, &Change::Upsert(policy(route)), "alice", None, T0).await.unwrap();
    }
    b.inner.reconcile().await;
    let current = b.current();
    assert_eq!(current.version, 0, "B keeps what it runs");
    let error = current.error.clone().unwrap();
    assert_eq!(error.class, Divergence::ResourceConstraint, "{}", error.message);
    assert!(error.message.contains("at most 1 policies"), "{}", error.message);
    assert_eq!(drain(&mut events), [PolicyEvent::Failed { version: 2, error: error.clone() }]);
    // The same failure again is not news.
    b.inner.reconcile().await;
    assert!(drain(&mut events).is_empty());
    // B alerts on itself, and A classifies B's report the same way.
    b.inner.check_divergence();
    clock.advance(300);
    b.inner.check_divergence();
    assert_eq!(b.alerts()[0].class, Divergence::ResourceConstraint);
    a.inner.reconcile().await;
    a.inner.lock().reports = vec![report("b", 0, clock.wall_ms(), Some(error))];
    a.inner.check_divergence();
    clock.advance(300);
    a.inner.lock().reports[0].at_ms = clock.wall_ms();
    a.inner.check_divergence();
    let alerts = a.alerts();
    assert_eq!((alerts[0].node.as_str(), alerts[0].class), ("b", Divergence::ResourceConstraint), "{alerts:?}");
}

#[tokio::test]
async fn a_document_a_node_cannot_decode_is_a_software_bug() {
    let (store, clock) = setup();
    let a = node(&store, "a", &clock, Limits::default()).await;
    let mut events = a.events();
    store.put(&PolicyKeys::new("t", "a").policy_desired(), Bytes::from_static(b"{"), None).await.unwrap();
    a.inner.reconcile().await;
    let error = a.current().error.unwrap();
    assert_eq!(error.class, Divergence::SoftwareBug);
    assert_eq!(drain(&mut events), [PolicyEvent::Failed { version: 1, error }]);
    a.inner.check_divergence();
    clock.advance(300);
    a.inner.check_divergence();
    assert_eq!(a.alerts()[0].class, Divergence::SoftwareBug);
}

#[test]
fn the_diff_names_what_was_added_changed_and_removed() {
    let ban = |until_ms| Ban { route: None, client: Some("bot".into()), until_ms, reason: None };
    let mut before = Desired::default();
    before.api.policies = vec![policy("a"), policy("b")];
    before.file.policies = vec![policy("c")];
    before.api.bans = vec![ban(10)];
    let mut after = before.clone();
    after.api.policies[1].state = Some(ManualState::Open);
    after.api.policies.remove(0);
    // The API's policy on `c` shadows the file's: a change of the policy in force.
    after.api.policies.push(Policy { note: Some("api".into()), ..policy("c") });
    after.api.bans = vec![ban(20)];
    let targets: Vec<(String, bool, bool)> =
        diff(&before, &after).into_iter().map(|c| (c.target, c.from.is_some(), c.to.is_some())).collect();
    assert_eq!(
        targets,
        [
            ("a".to_owned(), true, false),
            ("b".to_owned(), true, true),
            ("c".to_owned(), true, true),
            ("ban route=* client=bot".to_owned(), true, true),
        ]
    );
    assert!(diff(&after, &after).is_empty());
}

#[test]
fn the_hash_names_what_runs() {
    let applicable =
        |k| Applicable { route: "x".into(), source: Source::Api, physics: None, state: k, vip: Vec::new() };
    assert_eq!(hash_of(&[applicable(None)], &[]), hash_of(&[applicable(None)], &[]));
    assert_ne!(hash_of(&[applicable(None)], &[]), hash_of(&[applicable(Some(ManualState::Open))], &[]));
    assert_ne!(hash_of(&[], &[]), hash_of(&[applicable(None)], &[]));
}

#[test]
fn a_nodes_own_report_comes_first_and_once() {
    let own = report("a", 2, 5, None);
    let listed = self_first(&own, [report("b", 1, 1, None), report("a", 1, 1, None)]);
    let nodes: Vec<(&str, u64)> = listed.iter().map(|r| (r.node.as_str(), r.version)).collect();
    assert_eq!(nodes, [("a", 2), ("b", 1)]);
}
