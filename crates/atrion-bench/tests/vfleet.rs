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
