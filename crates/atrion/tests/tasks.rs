//! Task leases through the facade, on tokio's paused clock: one that completes, one that
//! overruns (aborted by the sweeper with nobody calling), one that misses its heartbeats
//! (swept on a call), one dropped (cancelled), heavy work without an abort handle refused.

use std::time::Duration;

use atrion::state::TokioClock;
use atrion::{
    AbortHandle, AbortReason, Atrion, CollectorObserver, Hold, LeaseError, LeaseOptions, LeaseOutcome, OwnedEvent,
    Profile, ProfileConfig, TaskError,
};

fn atrion() -> Atrion<CollectorObserver> {
    Atrion::builder().observer(CollectorObserver::new()).clock(TokioClock::new()).build().unwrap()
}

/// The lease events and reports of `route`, in order.
fn events(a: &Atrion<CollectorObserver>, route: &str) -> Vec<String> {
    a.engine()
        .observer()
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            OwnedEvent::LeaseStarted { route: r, .. } if r == route => Some("start".to_owned()),
            OwnedEvent::LeaseEnded { route: r, outcome, .. } if r == route => Some(format!("end {}", outcome.name())),
            OwnedEvent::Update { route: r, .. } if r == route => Some("report".to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_task_that_completes_is_reported_ok_and_the_count_returns_to_zero() {
    let a = atrion();
    let mut lease = a.start_task("reports/build", LeaseOptions::new()).unwrap();
    assert_eq!((lease.route(), lease.profile()), ("reports/build", "standard"));
    assert_eq!(a.active_tasks("reports/build"), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lease.remaining(), Duration::from_secs(28));
    assert_eq!(lease.complete(true), Ok(LeaseOutcome::Completed));
    assert_eq!(a.active_tasks("reports/build"), 0);
    assert_eq!(events(&a, "reports/build"), ["start", "report", "end completed"]);
    assert_eq!(a.engine().snapshot("reports/build").unwrap().updates, 1);
    // Once ended, the lease is gone; dropping it does nothing more.
    assert_eq!(lease.complete(true), Err(LeaseError::Gone { id: lease.id() }));
    drop(lease);
    assert!(events(&a, "reports/build").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_that_overruns_is_aborted_by_the_sweeper_with_nobody_calling() {
    let a = atrion();
    a.connect().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let abort = AbortHandle::with_callback(move |reason| {
        let _ = tx.send(reason);
    });
    let lease = a.start_task("video/transcode", LeaseOptions::new().profile(Profile::Light).abort(abort)).unwrap();
    assert_eq!(lease.deadlines().expires_at, lease.started_at() + Duration::from_secs(1));
    // The sweeper wakes at the deadline: the abort arrives without a call on the lease.
    assert_eq!(rx.recv().await, Some(AbortReason::MaxDuration));
    assert!(lease.is_aborted() && !lease.is_active());
    assert_eq!(a.engine().active_leases("video/transcode"), 0);
    assert_eq!(events(&a, "video/transcode"), ["start", "report", "end max_duration"]);
    // The failure was learned: the route's one sample is an error.
    assert_eq!(a.engine().snapshot("video/transcode").unwrap().updates, 1);
    drop(lease);
    assert!(events(&a, "video/transcode").is_empty(), "dropping an aborted lease cancels nothing");
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_task_that_misses_its_heartbeats_is_aborted_when_swept_on_a_call() {
    let a = atrion();
    let mut custom = Profile::Standard.config().custom();
    custom.heartbeat = Some(Duration::from_millis(100));
    let mut lease = a.start_task("agents/research", LeaseOptions::new().profile(custom)).unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let d = lease.heartbeat().unwrap();
    assert_eq!(d.heartbeat_by, Some(lease.started_at() + Duration::from_millis(550)));
    tokio::time::sleep(Duration::from_millis(301)).await;
    assert!(!lease.is_aborted(), "no sweeper without connect: nothing noticed yet");
    assert_eq!(a.active_tasks("agents/research"), 0);
    assert_eq!(lease.abort_reason(), Some(AbortReason::MissedHeartbeat));
    assert_eq!(lease.heartbeat(), Err(LeaseError::Gone { id: lease.id() }));
    assert_eq!(events(&a, "agents/research"), ["start", "report", "end missed_heartbeat"]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_task_is_cancelled_not_failed() {
    let a = atrion();
    let lease = a.start_task("etl", LeaseOptions::new()).unwrap();
    let abort = lease.abort_handle().clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(lease);
    assert_eq!(a.active_tasks("etl"), 0);
    assert_eq!(events(&a, "etl"), ["start", "end cancelled"]);
    assert!(!abort.is_aborted());
    assert_eq!(a.engine().snapshot("etl").unwrap().updates, 0, "nothing was reported");
}

#[tokio::test(start_paused = true)]
async fn heavy_work_without_an_abort_handle_is_refused() {
    let a = atrion();
    a.set_route_profile("genome/sequence", Profile::Extreme).unwrap();
    let err = a.start_task("genome/sequence", LeaseOptions::new()).unwrap_err();
    assert_eq!(
        err,
        TaskError::Lease(LeaseError::AbortRequired { route: "genome/sequence".into(), profile: "extreme" })
    );
    let err = a.start_task("ml/infer", LeaseOptions::new().profile(Profile::Heavy)).unwrap_err();
    assert!(matches!(err, TaskError::Lease(LeaseError::AbortRequired { profile: "heavy", .. })), "{err}");
    assert_eq!(a.active_tasks("genome/sequence") + a.active_tasks("ml/infer"), 0);
    // With one, the route's profile gives the lease its defaults.
    let lease = a.start_task("genome/sequence", LeaseOptions::new().abort(AbortHandle::new())).unwrap();
    assert_eq!(lease.profile(), "extreme");
    assert_eq!(lease.heartbeat_interval(), Some(Duration::from_secs(10)));
    assert_eq!(a.engine().route_profile("genome/sequence"), Some(ProfileConfig::from(Profile::Extreme)));
}

#[tokio::test(start_paused = true)]
async fn a_route_that_sheds_sheds_its_tasks() {
    let a = atrion();
    a.engine().hold("down", Hold::Open, a.now()).unwrap();
    match a.start_task("down", LeaseOptions::new()) {
        Err(TaskError::Shed(d)) => assert!(!d.is_admitted() && d.retry_after.is_some()),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.active_tasks("down"), 0);
}

#[test]
fn a_lease_can_move_across_threads_and_tasks() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<atrion::Lease>();
    send_sync::<atrion::Lease<CollectorObserver>>();
    send_sync::<AbortHandle>();
}
