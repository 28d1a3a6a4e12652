//! The `Atrion` facade: defaults, the guard, and a cluster of instances sharing a store.

use std::sync::Arc;
use std::time::Duration;

use atrion::state::{InMemoryStore, StateStore, TokioClock};
use atrion::{Atrion, AtrionError, Model, PhysicsConfig, Priority};

#[test]
fn the_embedded_default_needs_no_configuration() {
    let atrion = Atrion::builder().build().unwrap();
    assert_eq!(atrion.engine().config().model, Model::Default);
    assert!(atrion.decide("anything", Priority::Normal).is_admitted());
    assert_eq!(atrion.store().backend(), "memory");
}

#[test]
fn invalid_settings_are_typed_errors() {
    let e = Atrion::builder().gamma(1.5).build().unwrap_err();
    assert!(matches!(e, AtrionError::Config(_)), "{e}");
    assert!(e.to_string().contains("gamma"), "{e}");
    let e = Atrion::builder().node_id("not ok!").build().unwrap_err();
    assert!(e.to_string().contains("node_id"), "{e}");
    let mut c = PhysicsConfig::reference();
    c.r_base = -1.0;
    assert!(Atrion::builder().config(c).build().is_err());
}

#[test]
fn the_guard_reports_on_drop_and_counts_panics_as_failures() {
    let atrion = Atrion::builder().build().unwrap();
    {
        let _ok = atrion.enter("r", Priority::Normal).unwrap();
    }
    assert_eq!(atrion.engine().snapshot("r").unwrap().updates, 1);
    {
        let mut failed = atrion.enter("r", Priority::Normal).unwrap();
        failed.fail();
        failed.saturation(7.0); // out of range: reported with the neutral saturation instead
    }
    assert_eq!(atrion.engine().snapshot("r").unwrap().updates, 2);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = atrion.enter("p", Priority::Normal).unwrap();
        panic!("handler bug");
    }));
    assert!(panicked.is_err());
    let v = atrion.engine().snapshot("p").unwrap();
    assert_eq!(v.updates, 1);
    assert!(v.pressure[1] > 0.0, "the panic counted as an error");
}

#[test]
fn connect_needs_a_runtime() {
    use std::future::Future;
    let atrion = Atrion::builder().build().unwrap();
    // Outside a runtime, connect fails at its first poll: polled once, on this thread.
    let mut connect = std::pin::pin!(atrion.connect());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match connect.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e)) => assert!(matches!(e, AtrionError::NoRuntime), "{e}"),
        other => panic!("expected NoRuntime at once, got {other:?}"),
    }
}

/// A node on tokio's time: the tests below run on the paused clock, so what they check is
/// the order of events, whatever the machine's speed.
async fn node(id: &str, store: &Arc<dyn StateStore>) -> Atrion {
    let atrion = Atrion::builder()
        .store_arc(store.clone())
        .node_id(id)
        .pulse(Duration::from_millis(20))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    atrion.connect().await.unwrap();
    atrion
}

async fn hurt(atrion: &Atrion, route: &str) {
    for _ in 0..150 {
        if atrion.decide(route, Priority::Critical).is_admitted() {
            atrion.report(route, Duration::from_millis(900), false, Some(0.9)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn instances_sharing_a_store_converge_and_restarts_keep_what_the_cluster_knew() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (a, b, c) = (node("a", &store).await, node("b", &store).await, node("c", &store).await);
    hurt(&a, "payments").await;
    assert!(a.engine().snapshot("payments").unwrap().scar > 5.0);
    // Within two pulses (40 ms of tokio's time).
    tokio::time::sleep(Duration::from_millis(40)).await;
    for other in [&b, &c] {
        assert!(other.decide("payments", Priority::Critical).resistance > 10.0, "the scar reached another node");
    }
    assert!(b.sync_stats().await.unwrap().merges > 0);

    // B restarts: a fresh instance with the same id warm-starts from the store.
    b.shutdown().await;
    drop(b);
    let b2 = node("b", &store).await;
    assert!(b2.decide("payments", Priority::Critical).resistance > 10.0, "the restarted node knows");
    for n in [a, b2, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn stores_are_built_from_typed_validated_config() {
    use atrion::{StoreConfig, state_service};
    let dir = tempfile::tempdir().unwrap();
    let text = format!("backend = \"file\"\npath = \"{}\"\n", dir.path().join("s.redb").display());
    let file: StoreConfig = toml::from_str(&text).unwrap();
    let memory: StoreConfig = toml::from_str("backend = \"memory\"").unwrap();
    assert!(toml::from_str::<StoreConfig>("backend = \"etcd\"").is_err(), "unknown backends are refused");
    assert!(toml::from_str::<StoreConfig>("backend = \"file\"\npath = \"x\"\nnope = 1").is_err());
    let bad: StoreConfig = toml::from_str("backend = \"file\"\npath = \"\"").unwrap();
    assert!(bad.build().await.is_err(), "validated before it is opened");

    let service = state_service(&[("memory", memory), ("file", file)]).await.unwrap();
    assert_eq!(service.active_name(), "memory");
    service.set("k", "v".into()).await.unwrap();
    service.switch_backend("file").await.unwrap();
    assert_eq!(service.active_store().backend(), "file");
    assert!(service.exists("k").await.unwrap());
}

#[test]
fn per_route_configs_are_set_at_build_and_at_run_time() {
    let mut slo = atrion::PhysicsConfig::default();
    slo.normal.slo_ms = Some(250.0);
    let atrion = atrion::Atrion::builder().route_config("GET /reports/*", slo.clone()).build().unwrap();
    assert_eq!(atrion.engine().route_config("GET /reports/daily").normal.slo_ms, Some(250.0));
    assert_eq!(atrion.engine().route_config("GET /users").normal.slo_ms, None);
    atrion.set_route_config("GET /users", Some(slo)).unwrap();
    assert_eq!(atrion.engine().route_config("GET /users").normal.slo_ms, Some(250.0));
    // A config of the other model is refused at build, with the reason.
    let e = atrion::Atrion::builder().route_config("x", atrion::PhysicsConfig::reference()).build().unwrap_err();
    assert!(matches!(e, atrion::AtrionError::Engine(_)), "{e}");
    assert!(e.to_string().contains("Reference"), "{e}");
}

#[test]
fn every_store_url_parses_into_its_typed_config() {
    use atrion::StoreConfig;
    assert_eq!("memory".parse::<StoreConfig>().unwrap(), StoreConfig::Memory);
    assert!(
        matches!("file:./s.redb".parse::<StoreConfig>().unwrap(), StoreConfig::File(c) if c.path.ends_with("s.redb"))
    );
    for url in ["redis://127.0.0.1:6379", "rediss://user:pw@cache:6380/2"] {
        assert!(matches!(url.parse::<StoreConfig>().unwrap(), StoreConfig::Redis(c) if c.url == url), "{url}");
    }
    for url in ["postgres://u@db/atrion", "postgresql://u@db/atrion"] {
        assert!(matches!(url.parse::<StoreConfig>().unwrap(), StoreConfig::Postgres(c) if c.url == url), "{url}");
    }
    let mut c: StoreConfig = "redis://x".parse().unwrap();
    c.set_namespace("blue");
    assert!(matches!(c, StoreConfig::Redis(r) if r.namespace == "blue"));
    for bad in ["", "file:", "etcd://x", "http://x", "mem"] {
        let e = bad.parse::<StoreConfig>().unwrap_err().to_string();
        assert!(e.contains("store `"), "{bad}: {e}");
    }
}
