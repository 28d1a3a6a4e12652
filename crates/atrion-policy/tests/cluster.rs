//! The policy layer over a shared in-memory store, on tokio's paused clock: desired state
//! written by many writers, reconciled on every node, divergence raised and cleared.

use std::sync::Arc;
use std::time::Duration;

use atrion_core::{Engine, Hold, PhysicsConfig, Priority, Reason, Telemetry, Timestamp};
use atrion_policy::{
    Ban, Change, Divergence, Policy, PolicyConfig, PolicyError, PolicyEvent, PolicyKeys, PolicyNode, Source,
};
use atrion_state::{Clock, InMemoryStore, StateStore, TokioClock};
use serde_json::json;

fn cfg() -> PolicyConfig {
    let mut c = PolicyConfig::default();
    c.every = Duration::from_millis(100);
    c.report_every = Duration::from_millis(100);
    c.divergence_after = 3;
    c
}

async fn node(store: &Arc<dyn StateStore>, id: &str) -> (Arc<Engine<()>>, Arc<PolicyNode<()>>) {
    let engine = Arc::new(Engine::with_observer(PhysicsConfig::default(), Default::default(), ()).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let p = PolicyNode::start(engine.clone(), store.clone(), PolicyKeys::new("t", id), clock, cfg()).await;
    (engine, p)
}

fn policy(route: &str, v: serde_json::Value) -> Policy {
    let mut p: Policy = serde_json::from_value(v).unwrap();
    p.route = route.into();
    p
}

/// Waits (on the paused clock) until `f` holds, at most a minute of tokio time.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(start_paused = true)]
async fn a_change_on_one_node_is_in_force_on_the_others_and_keeps_route_state() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (ea, a) = node(&store, "a").await;
    let (eb, b) = node(&store, "b").await;
    // B has a route with history: it learns, then fails and scars.
    for i in 0..400u64 {
        eb.report("GET /pay", Telemetry::new(20.0, 0.0, 0.3).unwrap(), Timestamp::from_millis(i * 10));
    }
    for i in 400..520u64 {
        eb.report("GET /pay", Telemetry::new(900.0, 1.0, 0.9).unwrap(), Timestamp::from_millis(i * 10));
    }
    let before = eb.snapshot("GET /pay").unwrap();
    assert!(before.scar > 0.0);
    let change = Change::Upsert(policy("GET /*", json!({"route": "", "physics": {"tuner": {"k": 4.5}}})));
    let done = a.change(Source::Api, &change, "alice", None).await.unwrap();
    assert_eq!(done.after.version, 1);
    assert_eq!(ea.route_config("GET /x").tuner.k, 4.5, "in force on the writer at once");
    until("B runs version 1", || b.current().version == 1).await;
    assert_eq!(eb.route_config("GET /pay").tuner.k, 4.5);
    let after = eb.snapshot("GET /pay").unwrap();
    assert_eq!((after.scar, after.mode, after.updates), (before.scar, before.mode, before.updates), "a hot patch");
    assert_eq!(a.current().hash, b.current().hash, "both run the same");
    // The dump shows desired, applicable and both nodes' current state; the diff is empty.
    let dump = a.dump().await.unwrap();
    assert_eq!(dump.desired.version, 1);
    assert_eq!(dump.applicable.len(), 1);
    until("A hears B's report of version 1", || a.known().1.iter().any(|r| r.node == "b" && r.version == 1)).await;
    let diff = a.diff().await.unwrap();
    assert!(diff.iter().all(|d| d.in_sync), "{diff:?}");
    // The history has one event per node for version 1.
    let h = a.cluster().history(None, 10).await.unwrap();
    let mut nodes: Vec<&str> = h.entries.iter().map(|e| e.entry.node.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["a", "b"]);
    assert_eq!(h.entries[0].entry.changes[0].target, "GET /*");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn many_writers_lose_no_change_and_expected_versions_conflict() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (_, a) = node(&store, "a").await;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..8 {
                    let p = policy(&format!("w{w}/r{i}"), json!({"route": "", "state": "closed"}));
                    a.desired().change(Source::Api, &Change::Upsert(p), &format!("w{w}"), None, 1).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let (d, _) = a.desired().read().await.unwrap();
    assert_eq!((d.api.policies.len(), d.version), (128, 128), "every change landed, one version each");
    // With an expected version, the second of two writers at the same version gets a conflict.
    let p = |r: &str| Change::Upsert(policy(r, json!({"route": ""})));
    a.desired().change(Source::Api, &p("x"), "one", Some(128), 1).await.unwrap();
    let err = a.desired().change(Source::Api, &p("y"), "two", Some(128), 1).await.unwrap_err();
    assert!(matches!(err, PolicyError::Conflict { expected: 128, found: 129 }), "{err}");
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rejected_changes_leave_state_untouched_and_are_audited() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (e, a) = node(&store, "a").await;
    a.change(Source::Api, &Change::Upsert(policy("GET /a", json!({"route": "", "state": "open"}))), "alice", None)
        .await
        .unwrap();
    let bad = Change::Upsert(policy("GET /b", json!({"route": "", "physics": {"tuner": {"k": -1.0}}})));
    let err = a.change(Source::Api, &bad, "mallory", None).await.unwrap_err();
    let PolicyError::Rejected(r) = &err else { panic!("{err}") };
    assert_eq!(r.issues[0].to_string(), "api.policies[1].physics.tuner.k: must be > 0, got -1");
    let (d, _) = a.desired().read().await.unwrap();
    assert_eq!((d.version, d.api.policies.len()), (1, 1));
    assert_eq!(e.decide("GET /a", Timestamp::from_millis(1), Priority::Critical).reason, Reason::Held);
    // A ban whose deadline passed is refused; a live one is applied.
    let now = a.wall_ms();
    let past = Ban { route: None, client: Some("bot".into()), until_ms: now - 1, reason: None };
    assert!(matches!(a.change(Source::Api, &Change::Ban(past), "alice", None).await, Err(PolicyError::Rejected(_))));
    let ban = Ban { route: None, client: Some("bot".into()), until_ms: now + 1_000, reason: Some("scraping".into()) };
    a.change(Source::Api, &Change::Ban(ban), "alice", None).await.unwrap();
    assert_eq!(a.gate().banned("GET /x", Some("bot"), a.wall_ms()), Some(now + 1_000));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(a.gate().banned("GET /x", Some("bot"), a.wall_ms()), None, "expired at its deadline");
    // Every action is in the audit trail, newest first, the refused ones too.
    let page = a.cluster().audit_page(None, 10).await.unwrap();
    let seen: Vec<(&str, &str, bool)> =
        page.entries.iter().map(|e| (e.entry.who.as_str(), e.entry.action.as_str(), e.entry.ok)).collect();
    assert_eq!(
        seen,
        [
            ("alice", "ban", true),
            ("alice", "ban", false),
            ("mallory", "policy.set", false),
            ("alice", "policy.set", true)
        ]
    );
    let older = a.cluster().audit_page(Some(&page.entries[1].id), 10).await.unwrap();
    assert_eq!(older.entries.len(), 2, "paging goes on from a cursor");
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_raises_a_divergence_alert_that_clears_when_it_catches_up() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (_, a) = node(&store, "a").await;
    let (_, c) = node(&store, "c").await;
    let mut events = a.events();
    until("A hears C's report", || a.known().1.iter().any(|r| r.node == "c")).await;
    // Dropped without a shutdown: its loop stops, its report stays (a crash, or a cut link).
    drop(c);
    tokio::time::sleep(Duration::from_millis(50)).await; // its loop sees the cancellation
    a.change(Source::Api, &Change::Upsert(policy("x", json!({"route": ""}))), "alice", None).await.unwrap();
    until("A raises an alert for C", || a.alerts().iter().any(|al| al.node == "c")).await;
    let alert = a.alerts().into_iter().find(|al| al.node == "c").unwrap();
    assert_eq!((alert.class, alert.desired, alert.current), (Divergence::NetworkIssue, 1, 0), "{alert:?}");
    let mut diverged = false;
    while let Ok(e) = events.try_recv() {
        diverged |= matches!(e, PolicyEvent::Diverged(ref al) if al.node == "c");
    }
    assert!(diverged, "observers hear of it");
    // C comes back: it catches up, and A clears the alert.
    let (ec, c) = node(&store, "c").await;
    until("C catches up and A clears", || c.current().version == 1 && a.alerts().is_empty()).await;
    assert_eq!(ec.route_config("x"), PhysicsConfig::default());
    c.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_desired_state_a_node_cannot_apply_is_reported_and_kept_out() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (e, a) = node(&store, "a").await;
    a.change(Source::Api, &Change::Upsert(policy("x", json!({"route": "", "state": "shadow"}))), "alice", None)
        .await
        .unwrap();
    // Garbage under the desired key (written around the API): the node keeps what it runs.
    let key = PolicyKeys::new("t", "a").policy_desired();
    store.put(&key, bytes::Bytes::from_static(b"\xffnot json"), None).await.unwrap();
    until("A reports the failure", || a.current().error.is_some()).await;
    let err = a.current().error.unwrap();
    assert_eq!(err.class, Divergence::SoftwareBug);
    assert_eq!(a.current().version, 1);
    e.decide("x", Timestamp::from_millis(1), Priority::Normal);
    assert_eq!(e.held("x"), Ok(Hold::Shadow), "the last good policies stay");
    until("A alerts on itself", || a.alerts().iter().any(|al| al.node == "a")).await;
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_that_leaves_cleanly_is_not_taken_for_cut_off() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (_, a) = node(&store, "a").await;
    let (_, b) = node(&store, "b").await;
    until("A lists B's report", || a.known().1.iter().any(|r| r.node == "b")).await;
    assert_eq!(a.dump().await.unwrap().current.len(), 2);
    let index = store.get(&PolicyKeys::new("t", "a").policy_index()).await.unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Vec<String>>(&index.value).unwrap(), ["a", "b"]);
    b.shutdown().await;
    assert_eq!(a.dump().await.unwrap().current.len(), 1, "B's report is gone with it");
    a.change(Source::Api, &Change::Upsert(policy("x", json!({"route": ""}))), "alice", None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(a.alerts().is_empty(), "{:?}", a.alerts());
    let index = store.get(&PolicyKeys::new("t", "a").policy_index()).await.unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Vec<String>>(&index.value).unwrap(), ["a"]);
    a.shutdown().await;
}
