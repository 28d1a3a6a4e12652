//! The fleet in virtual time: a tiny fleet converges, survives its faults, and repeats its
//! figures for a seed. Nothing here depends on how fast the machine is: time is tokio's,
//! paused.

use atrion_bench::vfleet::{Faults, Params, run_paused};

fn tiny(seed: u64) -> Params {
    let mut p = Params::new(3, 100);
    p.dirty = 0.05;
    p.pulses = 8;
    p.seed = seed;
    p
}

#[test]
fn a_tiny_fleet_converges_and_repeats_its_figures() {
    let a = run_paused(&tiny(7)).unwrap();
    assert_eq!(a.unconverged, 0, "{a:?}");
    assert!(a.converge_max <= 3.0, "every probe within three pulses: {a:?}");
    assert!(a.ops > 0.0 && a.notices > 0.0 && a.pushed > 0.0, "{a:?}");
    assert_eq!(a.store_errors, 0, "{a:?}");
    let b = run_paused(&tiny(7)).unwrap();
    assert_eq!(a.figures(), b.figures(), "the same seed, the same figures");
}

#[test]
fn a_tiny_fleet_converges_again_after_a_partition_and_a_store_restart() {
    let mut p = tiny(3);
    p.faults = Some(Faults { partition_share: 0.34, partition_pulses: 5, restart_pulses: 5 });
    let r = run_paused(&p).unwrap();
    assert!(r.partition_heal.is_some(), "{r:?}");
    assert!(r.restart_heal.is_some(), "{r:?}");
    assert!(r.republished > 0, "the restarted store got the contributions back: {r:?}");
    assert_eq!(r.figures(), run_paused(&p).unwrap().figures());
}

/// A store that comes back empty has lost every heartbeat: each node beats again at its next
/// pulse (not at the heartbeat's period, 10 s at a 60 s `node_ttl`), so that the others
/// count its shares, and the fleet converges again within a few pulses.
#[test]
fn after_a_store_loses_its_data_the_fleet_heals_within_a_few_pulses() {
    let mut p = tiny(3);
    p.faults = Some(Faults { partition_share: 0.34, partition_pulses: 5, restart_pulses: 5 });
    let r = run_paused(&p).unwrap();
    let healed = r.restart_heal.expect("healed");
    assert!(healed <= 5.0, "healed in {healed} pulses (a heartbeat period is 100 pulses): {r:?}");
}

/// Membership at the default `node_ttl` (3 s, a heartbeat every 5 pulses): only the two
/// watchers beat aloud, the others quietly, and every node still sees every other live; a
/// partition that takes most of the fleet (and so, most likely, both watchers) away is seen
/// by the nodes left, which never lose sight of each other (the next in line watch); healed,
/// everyone is back.
#[test]
fn watchers_keep_the_membership_while_the_other_nodes_beat_quietly() {
    use std::sync::Arc;

    use atrion::{Engine, PhysicsConfig};
    use atrion_bench::vfleet::{ModelConfig, PULSE, StoreModel, VirtualClock};
    use atrion_state::{Clock, StateStore};
    use atrion_sync::{NodeStatus, StateManager, SyncConfig};

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let n = 12;
        let clock = Arc::new(VirtualClock::new());
        let model = StoreModel::new(ModelConfig::default(), clock.clone() as Arc<dyn Clock>, n);
        let mut managers = Vec::new();
        for i in 0..n {
            let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
            let mut cfg = SyncConfig::for_node(format!("node-{i}"));
            cfg.namespace = "members".into();
            cfg.pulse = PULSE;
            let store: Arc<dyn StateStore> = Arc::new(model.node(i));
            managers.push(StateManager::start(engine, store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap());
        }
        let statuses = |m: &StateManager<atrion::SilentObserver>| -> Vec<(String, NodeStatus)> {
            m.nodes().into_iter().filter(|i| !i.this_node).map(|i| (i.id, i.status)).collect()
        };
        tokio::time::sleep(40 * PULSE).await;
        let before = model.counts();
        tokio::time::sleep(50 * PULSE).await;
        let beats = (model.counts().heartbeat_deliveries - before.heartbeat_deliveries) as f64 / 50.0;
        // Every node aloud: 12 beats per 5 pulses, each to 12 subscribers, 28.8 a pulse; the
        // two watchers alone: 4.8.
        assert!(beats > 0.0 && beats <= 8.0, "{beats} heartbeat deliveries a pulse");
        for m in &managers {
            let seen = statuses(m);
            assert_eq!(seen.len(), n - 1, "{seen:?}");
            assert!(seen.iter().all(|(_, s)| *s == NodeStatus::Healthy), "{seen:?}");
        }

        let cut: Vec<usize> = (0..n - 2).collect();
        model.partition(&cut);
        for _ in 0..60 {
            tokio::time::sleep(PULSE).await;
            for m in &managers[n - 2..] {
                let seen = statuses(m);
                let left = seen.iter().find(|(id, _)| {
                    id.as_str() == format!("node-{}", n - 1) || id.as_str() == format!("node-{}", n - 2)
                });
                assert!(left.is_some_and(|(_, s)| *s != NodeStatus::Gone), "the nodes left see each other: {seen:?}");
            }
        }
        for m in &managers[n - 2..] {
            let gone = statuses(m).into_iter().filter(|(_, s)| *s == NodeStatus::Gone).count();
            assert_eq!(gone, n - 2, "the nodes cut off are gone: {:?}", statuses(m));
        }

        model.heal();
        tokio::time::sleep(40 * PULSE).await;
        for m in &managers {
            let seen = statuses(m);
            assert!(seen.iter().all(|(_, s)| *s != NodeStatus::Gone), "{seen:?}");
        }
        for m in managers {
            m.shutdown().await;
        }
    });
}
