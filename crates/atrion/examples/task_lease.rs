//! Long-running work under task leases: a training job that heartbeats and completes, and
//! one whose worker hangs, aborted when it misses its heartbeats (a short custom profile, so
//! that the example runs in seconds).
//!
//! ```text
//! cargo run -p atrion --example task_lease
//! ```

use std::time::Duration;

use atrion::{AbortHandle, Atrion, LeaseOptions, Profile};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let atrion = Atrion::builder().build()?;
    // `connect` starts the lease sweeper beside the pulse: aborts fire on time.
    atrion.connect().await?;
    // Heavy work: a 200 ms normal, at most 2 s, a heartbeat every 100 ms, stoppable.
    let mut training = Profile::Heavy.config().custom();
    training.baseline_latency_ms = 200.0;
    training.max_duration = Duration::from_secs(2);
    training.heartbeat = Some(Duration::from_millis(100));
    atrion.set_route_profile("ml/train", training)?;

    // A job that does its work and heartbeats.
    let stop = AbortHandle::new();
    let mut lease = atrion.start_task("ml/train", LeaseOptions::new().abort(stop.clone()))?;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        lease.heartbeat()?;
    }
    println!("live tasks: {}", atrion.active_tasks("ml/train"));
    println!("first job: {:?}", lease.complete(true)?);

    // A job whose worker hangs: no heartbeat, so the sweeper aborts it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let hung = AbortHandle::with_callback(move |reason| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(reason);
        }
    });
    let lease = atrion.start_task("ml/train", LeaseOptions::new().abort(hung))?;
    let reason = rx.await?;
    println!(
        "second job aborted: {reason} (aborted: {}), live tasks: {}",
        lease.is_aborted(),
        atrion.active_tasks("ml/train")
    );
    atrion.shutdown().await;
    Ok(())
}
