//! Atrion's models as controllers of the wind tunnel, alone or behind an AIMD limit.

use super::*;

/// Atrion behind a concurrency limit: the limit bounds what is in flight (overload), the
/// physics sheds failing routes (trauma, priorities).
#[derive(Debug)]
pub struct Paired {
    pub(super) atrion: Atrion,
    pub(super) limit: Aimd,
}

impl Controller for Paired {
    fn kind(&self) -> ControllerKind {
        ControllerKind::AtrionAimd
    }
    fn admit(&mut self, route: usize, now: u64, inflight: u32) -> bool {
        self.admit_attempt(route, now, inflight, 0)
    }
    fn admit_attempt(&mut self, route: usize, now: u64, inflight: u32, attempt: u8) -> bool {
        self.limit.admit(route, now, inflight) && self.atrion.admit_attempt(route, now, inflight, attempt)
    }
    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        self.limit.complete(route, now, sample);
        self.atrion.complete(route, now, sample);
    }
    fn gauge(&self, route: usize) -> Gauge {
        self.atrion.gauge(route)
    }
    fn select(&mut self, members: &[usize], now: u64, u: f64) -> usize {
        self.atrion.select(members, now, u)
    }
    fn transitions(&self) -> u64 {
        self.atrion.transitions()
    }
}

/// Atrion: the engine itself, one route per scenario route, time passed in.
pub struct Atrion {
    kind: ControllerKind,
    engine: Engine,
    routes: Vec<String>,
    priorities: Vec<Priority>,
    states: Vec<State>,
    transitions: u64,
}

impl std::fmt::Debug for Atrion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Atrion").field("kind", &self.kind).field("routes", &self.routes).finish_non_exhaustive()
    }
}

/// `model`'s default config with a scenario's overrides merged in (nested tables merge key
/// by key), validated.
pub fn physics_config(
    controller: &str,
    model: Model,
    settings: Option<&toml::Table>,
) -> Result<PhysicsConfig, SettingsError> {
    let base = PhysicsConfig::for_model(model);
    let Some(overrides) = settings else { return Ok(base) };
    let mut table = toml::Table::try_from(&base).map_err(|e| SettingsError::Invalid {
        controller: controller.to_owned(),
        reason: format!("cannot encode the base config: {e}"),
    })?;
    merge(&mut table, overrides);
    let cfg = PhysicsConfig::deserialize(toml::Value::Table(table))
        .map_err(|source| SettingsError::Malformed { controller: controller.to_owned(), source })?;
    cfg.validated().map_err(|source| SettingsError::Physics { controller: controller.to_owned(), source })
}

fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Atrion {
    /// An engine of `model` with the routes registered, as controller `kind`.
    pub fn new(
        kind: ControllerKind,
        model: Model,
        routes: &[RouteInfo],
        settings: Option<&toml::Table>,
    ) -> Result<Self, SettingsError> {
        let name = kind.name();
        let cfg = physics_config(name, model, settings)?;
        let engine =
            Engine::new(cfg).map_err(|source| SettingsError::Physics { controller: name.to_owned(), source })?;
        for r in routes {
            let Some(own) = &r.atrion else { continue };
            let mut merged = settings.cloned().unwrap_or_default();
            merge(&mut merged, own);
            let cfg = physics_config(name, model, Some(&merged))?;
            engine.set_route_config(&r.name, Some(cfg)).map_err(|e| SettingsError::Invalid {
                controller: name.to_owned(),
                reason: format!("route `{}`: {e}", r.name),
            })?;
        }
        Ok(Atrion {
            kind,
            engine,
            routes: routes.iter().map(|r| r.name.clone()).collect(),
            priorities: routes
                .iter()
                .map(|r| {
                    r.priority.unwrap_or(match model {
                        Model::Reference => Priority::Critical,
                        Model::Default => Priority::Normal,
                    })
                })
                .collect(),
            states: vec![State::Closed; routes.len()],
            transitions: 0,
        })
    }

    fn track(&mut self, route: usize, mode: Mode) {
        let state = State::from(mode);
        if self.states[route] != state {
            self.states[route] = state;
            self.transitions += 1;
        }
    }
}

impl Controller for Atrion {
    fn kind(&self) -> ControllerKind {
        self.kind
    }
    fn admit(&mut self, route: usize, now: u64, inflight: u32) -> bool {
        self.admit_attempt(route, now, inflight, 0)
    }
    /// A client's retry is decided one priority tier lower per retry
    /// ([`Priority::for_attempt`]), as the layer and the sidecar do with `X-Retry-Attempt`.
    fn admit_attempt(&mut self, route: usize, now: u64, _: u32, attempt: u8) -> bool {
        let priority = self.priorities[route].for_attempt(u32::from(attempt));
        let d = self.engine.decide(&self.routes[route], Timestamp::from_nanos(now), priority);
        self.track(route, d.mode);
        d.is_admitted()
    }
    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        // The simulator only produces valid values; a rejected one is dropped, not guessed.
        if let Ok(t) = Telemetry::outcome(sample.latency_ms, sample.ok, sample.saturation) {
            let status = self.engine.report(&self.routes[route], t, Timestamp::from_nanos(now));
            self.track(route, status.mode);
        }
    }
    fn gauge(&self, route: usize) -> Gauge {
        match self.engine.status(&self.routes[route]) {
            Ok(s) => Gauge { level: s.resistance, state: State::from(s.mode) },
            Err(_) => Gauge { level: self.engine.config().r_base, state: State::Closed },
        }
    }
    fn transitions(&self) -> u64 {
        self.transitions
    }
    /// Softmax of `exp(-R)` over the members not open (docs/DESIGN.md §7.1, beta = 1); a member not
    /// seen yet counts as new and healthy; at random when every member is open.
    fn select(&mut self, members: &[usize], now: u64, u: f64) -> usize {
        let names: Vec<&str> = members.iter().map(|&m| self.routes[m].as_str()).collect();
        match self.engine.select(&names, Timestamp::from_nanos(now), 1.0, u) {
            Some(i) => members[i],
            None => members[((u * members.len() as f64) as usize).min(members.len() - 1)],
        }
    }
    fn tick(&mut self, route: usize, now: u64, latency_ms: f64, error: f64, saturation: f64) -> bool {
        if let Ok(t) = Telemetry::unbounded(latency_ms, error, saturation) {
            let status = self.engine.report(&self.routes[route], t, Timestamp::from_nanos(now));
            self.track(route, status.mode);
        }
        true
    }
}
