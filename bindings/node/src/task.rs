//! Task leases for long-running work (docs/DESIGN.md §2): the facade's [`atrion::Lease`]
//! behind N-API. Expiry is swept by the engine (no timer per lease): JavaScript learns of an
//! abort by asking ([`NativeLease::aborted`]) from one timer per `Atrion` with live leases,
//! and fires the task's `AbortController` itself, on its own thread.

use std::time::Duration;

use atrion::{AbortHandle, Atrion, Lease, LeaseError, LeaseOptions, Profile, ProfileConfig, TaskError, Timestamp};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{NativeAtrion, invalid, mode_code, priority, to_napi};

/// A workload profile as JavaScript gives it: a name (`light`, `standard`, `heavy`,
/// `extreme`, any case; `custom` is standard's values) or the original's `ProfileConfig`.
#[napi(object)]
pub struct NativeProfile {
    /// A named profile.
    pub name: Option<String>,
    /// A custom profile: the latency expected (ms).
    pub baseline_latency_ms: Option<f64>,
    /// The longest a lease runs (ms).
    pub max_duration_ms: Option<f64>,
    /// Whether leases must heartbeat.
    pub heartbeat_required: Option<bool>,
    /// Their heartbeat interval (ms).
    pub heartbeat_interval_ms: Option<f64>,
    /// How fast trauma becomes scar on the route (lower: more tolerant).
    pub scar_multiplier: Option<f64>,
}

fn ms(v: f64, field: &str) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(format!("{field} must be a positive number of milliseconds, not {v}")));
    }
    Ok(Duration::from_secs_f64(v / 1e3))
}

/// The profile `p` names or describes.
pub(crate) fn profile(p: &NativeProfile) -> Result<ProfileConfig> {
    if let Some(name) = &p.name {
        if name.eq_ignore_ascii_case("custom") {
            return Ok(Profile::Standard.config().custom());
        }
        return name.parse::<Profile>().map(Profile::config).map_err(invalid);
    }
    let mut c = Profile::Standard.config().custom();
    if let Some(b) = p.baseline_latency_ms {
        c.baseline_latency_ms = b;
    }
    if let Some(d) = p.max_duration_ms {
        c.max_duration = ms(d, "maxDurationMs")?;
    }
    if p.heartbeat_required == Some(true) {
        c.heartbeat = Some(ms(p.heartbeat_interval_ms.unwrap_or(5_000.0), "heartbeatIntervalMs")?);
    }
    if let Some(m) = p.scar_multiplier {
        c.scar_multiplier = m;
    }
    c.validate().map_err(invalid)?;
    Ok(c)
}

/// How JavaScript starts a task.
#[napi(object)]
pub struct NativeTaskOptions {
    /// The profile (else the route's, else standard).
    pub profile: Option<NativeProfile>,
    /// The longest it may run (ms), over the profile's.
    pub max_duration_ms: Option<f64>,
    /// Its heartbeat interval (ms), over the profile's.
    pub heartbeat_ms: Option<f64>,
    /// Its priority's index (critical first).
    pub priority: Option<u32>,
    /// Whether JavaScript holds an `AbortController` for it.
    pub abortable: bool,
}

/// A task shed at its start: the decision, packed as the hot calls pack it, and when to
/// retry.
#[napi(object)]
pub struct NativeShed {
    /// The decision packed (bit 0 admitted, bits 1–2 mode, bits 3– reason).
    pub code: u32,
    /// The resistance it saw.
    pub resistance: f64,
    /// When to try again (ms).
    pub retry_after_ms: f64,
}

/// A live task lease.
#[napi]
pub struct NativeLease {
    lease: Lease,
    /// When it started, in ms since the Unix epoch: read once, so that its deadlines, taken
    /// from it, are whole durations after it.
    started_wall: f64,
}

fn lease_error(e: LeaseError) -> Error {
    let status = match e {
        LeaseError::Aborted { .. } => "ATRION_LEASE_ABORTED",
        LeaseError::Gone { .. } => "ATRION_LEASE_GONE",
        _ => "ATRION_LEASE",
    };
    Error::new(Status::GenericFailure, format!("{status}: {e}"))
}

impl NativeLease {
    fn new(lease: Lease, atrion: &Atrion) -> Self {
        let ago = atrion.now().as_millis_f64() - lease.started_at().as_millis_f64();
        NativeLease { started_wall: (atrion.clock().wall_ms() as f64 - ago).round(), lease }
    }

    /// An engine time as wall milliseconds, counted from the start.
    fn wall(&self, t: Timestamp) -> f64 {
        self.started_wall + (t.as_millis_f64() - self.lease.started_at().as_millis_f64())
    }
}

#[napi]
impl NativeLease {
    /// Its id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        format!("lease-{}", self.lease.id().as_u64())
    }

    /// Its profile's name.
    #[napi(getter)]
    pub fn profile(&self) -> &'static str {
        self.lease.profile()
    }

    /// When it started (ms since the Unix epoch).
    #[napi(getter)]
    pub fn started_at_ms(&self) -> f64 {
        self.started_wall
    }

    /// When it runs out (ms since the Unix epoch).
    #[napi(getter)]
    pub fn expires_at_ms(&self) -> f64 {
        self.wall(self.lease.deadlines().expires_at)
    }

    /// When its next heartbeat is due at the latest (ms since the Unix epoch), if it needs them.
    #[napi(getter)]
    pub fn heartbeat_by_ms(&self) -> Option<f64> {
        self.lease.deadlines().heartbeat_by.map(|t| self.wall(t))
    }

    /// Time left (ms).
    #[napi]
    pub fn remaining_ms(&self) -> f64 {
        self.lease.remaining().as_secs_f64() * 1e3
    }

    /// Neither ended by its holder nor aborted.
    #[napi(getter)]
    pub fn active(&self) -> bool {
        self.lease.is_active()
    }

    /// Why the engine aborted it (`max_duration`, `missed_heartbeat`, `shutdown`), if it did.
    #[napi]
    pub fn aborted(&self) -> Option<&'static str> {
        self.lease.abort_reason().map(|r| r.name())
    }

    /// Keeps it alive.
    #[napi]
    pub fn heartbeat(&mut self) -> Result<()> {
        self.lease.heartbeat().map(|_| ()).map_err(lease_error)
    }

    /// Ends and reports it; returns the outcome's name.
    #[napi]
    pub fn complete(&mut self, ok: bool) -> Result<&'static str> {
        self.lease.complete(ok).map(|o| o.name()).map_err(lease_error)
    }

    /// Ends it without a report (cancelled).
    #[napi]
    pub fn release(&mut self) -> Result<()> {
        self.lease.release().map_err(lease_error)
    }
}

#[napi]
impl NativeAtrion {
    /// Starts a long-running task on `route`: a lease, or the decision that shed it.
    #[napi]
    pub fn start_task(&self, route: String, options: NativeTaskOptions) -> Result<Either<NativeLease, NativeShed>> {
        let mut o = LeaseOptions::new();
        let given = options.profile.as_ref().map(profile).transpose()?;
        let max = options.max_duration_ms.map(|d| ms(d, "maxDurationMs")).transpose()?;
        if let Some(p) = &given {
            o = o.profile(p.clone());
        }
        if let Some(d) = max {
            o = o.max_duration(d);
        }
        match (options.heartbeat_ms, &given, max) {
            (Some(h), _, _) => o = o.heartbeat(ms(h, "heartbeatMs")?),
            // A task shorter than its profile's heartbeat interval (the original's `timeout`
            // allows it): it is checked at its end, not between heartbeats.
            (None, Some(p), Some(d)) if p.heartbeat.is_some_and(|h| h > d) => o = o.heartbeat(d),
            _ => {}
        }
        if let Some(p) = options.priority {
            o = o.priority(priority(p));
        }
        if options.abortable {
            o = o.abort(AbortHandle::new());
        }
        match self.atrion.start_task(&route, o) {
            Ok(lease) => Ok(Either::A(NativeLease::new(lease, &self.atrion))),
            Err(TaskError::Shed(d)) => Ok(Either::B(NativeShed {
                code: u32::from(d.is_admitted()) | (mode_code(d.mode) << 1) | ((d.reason.index() as u32) << 3),
                resistance: d.resistance,
                retry_after_ms: d.retry_after.map_or(0.0, |r| r.as_secs_f64() * 1e3),
            })),
            Err(TaskError::Lease(e)) => Err(lease_error(e)),
            Err(e) => Err(to_napi(e)),
        }
    }

    /// Live leases on `route`.
    #[napi]
    pub fn active_tasks(&self, route: String) -> u32 {
        self.atrion.active_tasks(&route)
    }

    /// Aborts overdue leases now; returns how many.
    #[napi]
    pub fn sweep_tasks(&self) -> u32 {
        u32::try_from(self.atrion.sweep_tasks()).unwrap_or(u32::MAX)
    }

    /// Sets (or, with `None`, removes) the workload profile of the routes `pattern` matches.
    #[napi]
    pub fn set_route_profile(&self, pattern: String, p: Option<NativeProfile>) -> Result<()> {
        match p {
            Some(p) => self.atrion.set_route_profile(&pattern, profile(&p)?).map_err(invalid),
            None => self.atrion.remove_route_profile(&pattern).map_err(invalid),
        }
    }
}
