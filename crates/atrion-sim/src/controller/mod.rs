//! The controllers the wind tunnel compares, behind one trait, each fed the same requests.
//!
//! | name | what it is | published defaults used |
//! |---|---|---|
//! | `none` | no protection | |
//! | `breaker` | a count-window circuit breaker as common libraries build it | resilience4j: window 100 calls, failure rate 50%, 10 half-open calls; Polly: 5 s break |
//! | `aimd` | Netflix `AIMDLimit` | initial 20, min 20, max 200, backoff 0.9, timeout 5 s |
//! | `gradient2` | Netflix `Gradient2Limit` | initial 20, min 20, max 200, smoothing 0.2, queue 4, long window 600, RTT tolerance 1.5 |
//! | `envoy` | Envoy's adaptive-concurrency gradient controller | update every 100 ms, p50, min RTT over 50 requests every 60 s at concurrency 3, buffer 25%, max 1000 |
//! | `atrion-reference` | Atrion, [`Model::Reference`] | docs/DESIGN.md §7.1 |
//! | `atrion-default` | Atrion, [`Model::Default`] | `PhysicsConfig::default()` |
//! | `atrion-aimd` | Atrion's default model behind an AIMD concurrency limit: admitted only when both admit | the two above; a scenario's `atrion-default` settings unless it has its own |
//!
//! A scenario may override any of these per controller (`[settings.NAME]`); unknown keys
//! are errors.

use std::collections::VecDeque;

use atrion_core::{Engine, Mode, Model, PhysicsConfig, Priority, Telemetry, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod aimd;
mod atrion;
mod breaker;
mod envoy;
mod gradient2;

pub use aimd::{Aimd, AimdSettings};
pub use atrion::{Atrion, Paired, physics_config};
pub use breaker::{Breaker, BreakerSettings};
pub use envoy::{Envoy, EnvoySettings};
pub use gradient2::{Gradient2, Gradient2Settings};

/// A controller of the wind tunnel, by the name scenarios, settings tables and the command
/// line use (`none`, `breaker`, `aimd`, `gradient2`, `envoy`, `atrion-reference`,
/// `atrion-default`, `atrion-aimd`). Parsing one is the only check a name needs; past the
/// edges (TOML, flags, JSON), a controller is this enum, never its name. [`Self::ALL`] is
/// the one list of them, and [`Self::name`] the one place a name is written (serde's
/// kebab-case names are the same, as a test checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControllerKind {
    /// No protection.
    None,
    /// The count-window circuit breaker.
    Breaker,
    /// Netflix's AIMD limit.
    Aimd,
    /// Netflix's Gradient2 limit.
    Gradient2,
    /// Envoy's adaptive-concurrency gradient controller.
    Envoy,
    /// Atrion's reference model.
    AtrionReference,
    /// Atrion's default model.
    AtrionDefault,
    /// Atrion's default model behind an AIMD limit.
    AtrionAimd,
}

impl ControllerKind {
    /// Every controller, in table order.
    pub const ALL: [ControllerKind; 8] = [
        ControllerKind::None,
        ControllerKind::Breaker,
        ControllerKind::Aimd,
        ControllerKind::Gradient2,
        ControllerKind::Envoy,
        ControllerKind::AtrionReference,
        ControllerKind::AtrionDefault,
        ControllerKind::AtrionAimd,
    ];

    /// Its name.
    pub const fn name(self) -> &'static str {
        match self {
            ControllerKind::None => "none",
            ControllerKind::Breaker => "breaker",
            ControllerKind::Aimd => "aimd",
            ControllerKind::Gradient2 => "gradient2",
            ControllerKind::Envoy => "envoy",
            ControllerKind::AtrionReference => "atrion-reference",
            ControllerKind::AtrionDefault => "atrion-default",
            ControllerKind::AtrionAimd => "atrion-aimd",
        }
    }

    /// One of Atrion's (`atrion-*`): it has a resistance, and the physics behind it.
    pub const fn is_atrion(self) -> bool {
        matches!(self, ControllerKind::AtrionReference | ControllerKind::AtrionDefault | ControllerKind::AtrionAimd)
    }

    /// A concurrency limiter (`aimd`, `gradient2`, `envoy`): it has a limit, and no
    /// open state of its own.
    pub const fn is_limiter(self) -> bool {
        matches!(self, ControllerKind::Aimd | ControllerKind::Gradient2 | ControllerKind::Envoy)
    }

    /// The names of all controllers, in table order.
    pub fn names() -> [&'static str; 8] {
        ControllerKind::ALL.map(ControllerKind::name)
    }
}

/// Ordered by name, as the settings tables that are keyed by it are written.
impl Ord for ControllerKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for ControllerKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for ControllerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ControllerKind {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, SettingsError> {
        ControllerKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| SettingsError::Unknown(s.to_owned()))
    }
}

/// Settings that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// No controller has this name.
    #[error("unknown controller `{0}` (known: {known:?})", known = ControllerKind::names())]
    Unknown(String),
    /// The settings table has unknown keys or mistyped values.
    #[error("settings of `{controller}`: {source}")]
    Malformed {
        /// The controller.
        controller: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// The merged physics config breaks a rule.
    #[error("settings of `{controller}`: {source}")]
    Physics {
        /// The controller.
        controller: String,
        /// Why.
        #[source]
        source: atrion_core::ConfigError,
    },
    /// A value breaks a rule.
    #[error("settings of `{controller}`: {reason}")]
    Invalid {
        /// The controller.
        controller: String,
        /// Why.
        reason: String,
    },
}

/// The outcome of one admitted request, as the controller sees it when it completes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Latency seen by the caller (a timeout counts as the timeout), milliseconds.
    pub latency_ms: f64,
    /// Succeeded (no error, no timeout).
    pub ok: bool,
    /// Share of the route's workers and queue in use, in [0, 1].
    pub saturation: f64,
    /// Requests in flight on the route when this one was admitted, itself included.
    pub inflight: u32,
}

/// Open, half-open or closed: what transitions are counted between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Admitting by the usual rule.
    Closed = 0,
    /// Letting probes through.
    HalfOpen = 1,
    /// Shedding everything.
    Open = 2,
}

impl From<Mode> for State {
    /// Atrion's modes: bootstrap and operational admit by the usual rule (closed).
    fn from(mode: Mode) -> State {
        match mode {
            Mode::Bootstrap | Mode::Operational => State::Closed,
            Mode::Open => State::Open,
            Mode::HalfOpen => State::HalfOpen,
        }
    }
}

/// What a controller shows of a route at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauge {
    /// Resistance (Atrion), concurrency limit (limiters), failure rate in % (breaker).
    pub level: f64,
    /// Its state.
    pub state: State,
}

/// One admission controller over all routes of a scenario (routes are indexed).
pub trait Controller {
    /// Which controller it is.
    fn kind(&self) -> ControllerKind;
    /// Whether a request on `route` may go ahead at `now` (ns) with `inflight` requests
    /// already in flight there.
    fn admit(&mut self, route: usize, now: u64, inflight: u32) -> bool;
    /// As [`Controller::admit`], for attempt `attempt` of a client's request (0: the first
    /// try; a retry's number otherwise). Only controllers that can tell a retry from a first
    /// try (Atrion, through its priority) use it.
    fn admit_attempt(&mut self, route: usize, now: u64, inflight: u32, attempt: u8) -> bool {
        let _ = attempt;
        self.admit(route, now, inflight)
    }
    /// An admitted request completed.
    fn complete(&mut self, route: usize, now: u64, sample: &Sample);
    /// The route's level and state.
    fn gauge(&self, route: usize) -> Gauge;
    /// State transitions so far, over all routes.
    fn transitions(&self) -> u64;
    /// A balancer's choice among `members` (route indexes) for a request at `now`; `u` is
    /// uniform in [0, 1). By default, at random among the members not open (all of them
    /// when every one is).
    fn select(&mut self, members: &[usize], now: u64, u: f64) -> usize {
        let _ = now;
        let closed = members.iter().filter(|&&m| self.gauge(m).state != State::Open).count();
        let pick = |n: usize| ((u * n as f64) as usize).min(n.saturating_sub(1));
        if closed == 0 {
            return members[pick(members.len())];
        }
        let k = pick(closed);
        members.iter().copied().filter(|&m| self.gauge(m).state != State::Open).nth(k).unwrap_or(members[0])
    }
    /// Telemetry-driven experiments: one observation per tick. Returns false when the
    /// controller does not apply (limiters learn from requests, not from rates).
    fn tick(&mut self, route: usize, now: u64, latency_ms: f64, error: f64, saturation: f64) -> bool {
        let _ = (route, now, latency_ms, error, saturation);
        false
    }
}

/// What a controller needs to know of a route.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The route's name.
    pub name: String,
    /// The priority of its requests; when absent, each controller's default (Atrion's
    /// reference model: critical, its default voltage of 100; the default model: normal,
    /// as the `atrion` facade).
    pub priority: Option<Priority>,
    /// Atrion's physics for this route only (`[route.atrion]`), merged over the
    /// controller's settings.
    pub atrion: Option<toml::Table>,
}

/// Builds controller `kind` for `routes`, with a scenario's overrides.
pub fn build(
    kind: ControllerKind,
    routes: &[RouteInfo],
    settings: Option<&toml::Table>,
) -> Result<Box<dyn Controller>, SettingsError> {
    let n = routes.len();
    let name = kind.name();
    Ok(match kind {
        ControllerKind::None => {
            parse::<NoSettings>(name, settings)?;
            Box::new(Unprotected)
        }
        ControllerKind::Breaker => Box::new(Breaker::new(check(name, parse::<BreakerSettings>(name, settings)?)?, n)),
        ControllerKind::Aimd => Box::new(Aimd::new(check(name, parse::<AimdSettings>(name, settings)?)?, n)),
        ControllerKind::Gradient2 => {
            Box::new(Gradient2::new(check(name, parse::<Gradient2Settings>(name, settings)?)?, n))
        }
        ControllerKind::Envoy => Box::new(Envoy::new(check(name, parse::<EnvoySettings>(name, settings)?)?, n)),
        ControllerKind::AtrionReference => Box::new(Atrion::new(kind, Model::Reference, routes, settings)?),
        ControllerKind::AtrionDefault => Box::new(Atrion::new(kind, Model::Default, routes, settings)?),
        ControllerKind::AtrionAimd => {
            // `[settings.atrion-aimd]`: an `aimd` table for the limit, the rest for the physics.
            let mut physics = settings.cloned().unwrap_or_default();
            let aimd = match physics.remove("aimd") {
                None => AimdSettings::default(),
                Some(toml::Value::Table(t)) => parse(name, Some(&t))?,
                Some(_) => {
                    return Err(SettingsError::Invalid {
                        controller: name.to_owned(),
                        reason: "`aimd` must be a table".into(),
                    });
                }
            };
            let atrion = Atrion::new(kind, Model::Default, routes, Some(&physics))?;
            Box::new(Paired { atrion, limit: Aimd::new(check(name, aimd)?, n) })
        }
    })
}

fn parse<T: DeserializeOwned + Default>(name: &str, settings: Option<&toml::Table>) -> Result<T, SettingsError> {
    match settings {
        None => Ok(T::default()),
        Some(t) => T::deserialize(toml::Value::Table(t.clone()))
            .map_err(|source| SettingsError::Malformed { controller: name.to_owned(), source }),
    }
}

fn check<T: Checked>(name: &str, s: T) -> Result<T, SettingsError> {
    match s.problem() {
        None => Ok(s),
        Some(reason) => Err(SettingsError::Invalid { controller: name.to_owned(), reason }),
    }
}

/// Settings that can say what is wrong with them.
trait Checked {
    /// The first rule broken, in words naming the key.
    fn problem(&self) -> Option<String>;
}

/// The largest limit, window or count a setting may hold.
const MAX_COUNT: u32 = 1_000_000;

/// The longest duration a setting may hold, milliseconds (one day).
const MAX_MS: f64 = 86_400_000.0;

fn limits_problem(initial: u32, min: u32, max: u32) -> Option<String> {
    (min < 1 || min > max || initial < min || initial > max || max > MAX_COUNT).then(|| {
        format!("need 1 <= min_limit ({min}) <= initial_limit ({initial}) <= max_limit ({max}) <= {MAX_COUNT}")
    })
}

/// `Some(message)` when `v` is not a finite number in `range`.
fn outside(key: &str, v: f64, range: std::ops::RangeInclusive<f64>, words: &str) -> Option<String> {
    (!(v.is_finite() && range.contains(&v))).then(|| format!("`{key}` must be {words}, got {v}"))
}

fn duration_ms(key: &str, v: f64) -> Option<String> {
    outside(key, v, f64::MIN_POSITIVE..=MAX_MS, "a positive number of milliseconds up to one day")
}

fn count(key: &str, v: u32, min: u32) -> Option<String> {
    (v < min || v > MAX_COUNT).then(|| format!("`{key}` must be in [{min}, {MAX_COUNT}], got {v}"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

/// No protection: everything is admitted.
#[derive(Debug)]
pub struct Unprotected;

impl Controller for Unprotected {
    fn kind(&self) -> ControllerKind {
        ControllerKind::None
    }
    fn admit(&mut self, _: usize, _: u64, _: u32) -> bool {
        true
    }
    fn complete(&mut self, _: usize, _: u64, _: &Sample) {}
    fn gauge(&self, _: usize) -> Gauge {
        Gauge { level: 0.0, state: State::Closed }
    }
    fn transitions(&self) -> u64 {
        0
    }
}

const MS: f64 = 1e6;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A completed request, for the controllers' formula tests.
    pub(crate) fn sample(latency_ms: f64, ok: bool, inflight: u32) -> Sample {
        Sample { latency_ms, ok, saturation: 0.0, inflight }
    }

    #[test]
    fn settings_are_checked() {
        let routes = [RouteInfo { name: "a".into(), priority: None, atrion: None }];
        let bad: toml::Table = toml::from_str("min_limit = 50\ninitial_limit = 20").unwrap();
        assert!(matches!(build(ControllerKind::Aimd, &routes, Some(&bad)), Err(SettingsError::Invalid { .. })));
        let unknown: toml::Table = toml::from_str("windw = 5").unwrap();
        assert!(matches!(
            build(ControllerKind::Breaker, &routes, Some(&unknown)),
            Err(SettingsError::Malformed { .. })
        ));
        let physics: toml::Table = toml::from_str("scar_decay = -1.0").unwrap();
        assert!(matches!(
            build(ControllerKind::AtrionDefault, &routes, Some(&physics)),
            Err(SettingsError::Physics { .. })
        ));
        assert!(matches!("nope".parse::<ControllerKind>(), Err(SettingsError::Unknown(_))));
        assert_eq!("atrion-aimd".parse::<ControllerKind>().unwrap(), ControllerKind::AtrionAimd);
        for k in ControllerKind::ALL {
            assert_eq!(k.name().parse::<ControllerKind>().unwrap(), k);
            assert_eq!(build(k, &routes, None).unwrap().kind(), k);
            let t: toml::Table = toml::from_str(&format!("k = \"{k}\"")).unwrap();
            assert_eq!(t["k"].clone().try_into::<ControllerKind>().unwrap(), k, "serde uses the same names");
        }
        for (controller, text, says) in [
            (ControllerKind::Breaker, "failure_threshold = nan", "failure_threshold"),
            (ControllerKind::Breaker, "window = 0", "window"),
            (ControllerKind::Breaker, "open_ms = 1e300", "open_ms"),
            (ControllerKind::Envoy, "percentile = 7.0", "percentile"),
            (ControllerKind::Envoy, "min_concurrency = 0", "min_concurrency"),
            (ControllerKind::Envoy, "interval_ms = -1.0", "interval_ms"),
            (ControllerKind::Aimd, "backoff_ratio = 1.5", "backoff_ratio"),
            (ControllerKind::Gradient2, "smoothing = 0.0", "smoothing"),
        ] {
            let t: toml::Table = toml::from_str(text).unwrap();
            match build(controller, &routes, Some(&t)) {
                Err(SettingsError::Invalid { reason, .. }) => assert!(reason.contains(says), "{controller}: {reason}"),
                other => panic!("{controller} {text}: {:?}", other.map(|c| c.kind())),
            }
        }
        let nested: toml::Table = toml::from_str("half_open = { open_max = 10.0 }").unwrap();
        let cfg = physics_config("atrion-default", Model::Default, Some(&nested)).unwrap();
        assert_eq!(cfg.half_open.open_max.as_secs(), 10);
        assert_eq!(cfg.half_open.open_base, PhysicsConfig::default().half_open.open_base, "siblings keep their values");
    }
}
