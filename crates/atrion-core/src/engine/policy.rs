//! Policies on routes: per-pattern physics and holds (`Engine::set_route_config`,
//! `Engine::set_policies`), resolved when policies change and when a route first appears,
//! never per decision; the overrides indexed by exact id and ordered by specificity.

use super::*;

impl<O: PhysicsObserver> Engine<O> {
    /// Sets the physics of the routes that `pattern` matches (`Some`), or removes the
    /// override so that they run the engine's config again (`None`).
    ///
    /// A pattern is an exact route id (`GET /users`) or a glob ([`RoutePattern`]: `*` any
    /// run of characters, `?` one): `GET /reports/*`; an exact id wins over a glob, and a
    /// glob with more literal characters over one with fewer. The config is validated and
    /// must be of the engine's model. Routes that exist keep what they learned (scar,
    /// normal, tuner, mode) and run the new constants from their next decision (the physics
    /// is swapped under each route's lock, so that no report is lost or straddles two
    /// configs). Every config set stays in memory until the engine is dropped; equal configs
    /// share one. A hold a policy set on the same pattern ([`Engine::set_policies`]) stays.
    pub fn set_route_config(&self, pattern: &str, config: Option<PhysicsConfig>) -> Result<(), EngineError> {
        let pat = RoutePattern::parse(pattern)?;
        let phys = config.map(|cfg| self.physics_of(pattern, cfg)).transpose()?;
        let mut list = self.overrides.read().unwrap_or_else(PoisonError::into_inner).list.clone();
        let hold = list.iter().find(|o| o.pat == pat).map_or(Hold::Released, |o| o.hold);
        list.retain(|o| o.pat != pat);
        match phys {
            Some(phys) => list.push(Override { pat, phys, hold }),
            None if hold != Hold::Released => list.push(Override { pat, phys: self.phys.clone(), hold }),
            None => {}
        }
        self.install(list);
        Ok(())
    }

    /// Replaces every per-route override at once with `policies`: the physics and the hold
    /// each pattern's routes run (a hot patch: routes keep their scar, mode, tuner and
    /// normal). Everything is checked first; on an error nothing changes. A route whose
    /// applicable hold changes gets it (an operator's own [`Engine::hold`] on a route
    /// stays until its policy's hold changes); routes created later take their policy's
    /// physics and hold when they appear. The resolution happens here, never per decision.
    pub fn set_policies(&self, policies: Vec<RoutePolicy>) -> Result<(), EngineError> {
        let mut list = Vec::with_capacity(policies.len());
        for p in policies {
            let pat = RoutePattern::parse(&p.pattern)?;
            let phys = match p.config {
                Some(cfg) => self.physics_of(&p.pattern, cfg)?,
                None => self.phys.clone(),
            };
            list.push(Override { pat, phys, hold: p.hold });
        }
        self.install(list);
        Ok(())
    }

    /// The validated physics of `cfg`, shared with any equal config already kept.
    pub(super) fn physics_of(&self, pattern: &str, cfg: PhysicsConfig) -> Result<Arc<Physics>, EngineError> {
        cfg.validate()?;
        if cfg.model != self.phys.cfg.model {
            return Err(EngineError::ModelMismatch {
                route: pattern.to_owned(),
                expected: self.phys.cfg.model,
                found: cfg.model,
            });
        }
        Ok(self.physics.keep(Physics::new(cfg)))
    }

    /// Installs `list` as the overrides and re-resolves the routes an added, removed or
    /// changed override matches. Linear in the overrides (one sort, hashed comparisons) and
    /// in the routes times the changed globs: a bulk replace is one pass, not one per policy.
    pub(super) fn install(&self, list: Vec<Override>) {
        let new = Overrides::new(list);
        let old = {
            let mut o = self.overrides.write().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *o, new.clone())
        };
        let same = |a: &Override, b: &Override| a.pat == b.pat && Arc::ptr_eq(&a.phys, &b.phys) && a.hold == b.hold;
        let unchanged = |o: &Override, other: &Overrides| other.by_text(o.pat.as_str()).is_some_and(|n| same(o, n));
        let changed: Vec<&RoutePattern> = old
            .list
            .iter()
            .filter(|o| !unchanged(o, &new))
            .chain(new.list.iter().filter(|n| !unchanged(n, &old)))
            .map(|o| &o.pat)
            .collect();
        if changed.is_empty() {
            return;
        }
        let changed_ids: std::collections::HashSet<&str> =
            changed.iter().filter(|p| !p.is_glob()).map(|p| p.as_str()).collect();
        let changed_globs: Vec<&RoutePattern> = changed.iter().copied().filter(|p| p.is_glob()).collect();
        let resolve = |l: &Overrides, route: &str| {
            l.find(route).map_or((self.phys.clone(), Hold::Released), |o| (o.phys.clone(), o.hold))
        };
        // Existing routes keep their cell and state and run the new physics from now on:
        // swapped under the route's lock, so that no physics step straddles two physics (a
        // window of samples gathered before the swap is folded with the new one).
        let guard = scc::Guard::new();
        for (route, ()) in self.routes.iter(&guard) {
            let name = route.name();
            if !changed_ids.contains(name) && !changed_globs.iter().any(|p| p.matches(name)) {
                continue;
            }
            let (phys, hold) = resolve(&new, name);
            let (_, was) = resolve(&old, name);
            let cell = route.cell();
            if hold != was {
                cell.view.held.store(hold as u8, Relaxed);
            }
            if std::ptr::eq(Arc::as_ptr(&phys), cell.phys()) {
                continue;
            }
            cell.modify(&phys, |_| cell.phys.store(Arc::as_ptr(&phys).cast_mut(), Release));
            cell.view.dirty.store(true, Relaxed);
        }
    }

    /// The physics and hold a route of this id starts with: the best-matching override's,
    /// or the engine's.
    pub(super) fn override_for(&self, route: &str) -> (Arc<Physics>, Hold) {
        let o = self.overrides.read().unwrap_or_else(PoisonError::into_inner);
        o.find(route).map_or_else(|| (self.phys.clone(), Hold::Released), |o| (o.phys.clone(), o.hold))
    }

    /// The pattern of the override a route of this id runs (the most specific that matches),
    /// `None` when it runs the engine's defaults: its applicable policy.
    pub fn route_pattern(&self, route: &str) -> Option<String> {
        let o = self.overrides.read().unwrap_or_else(PoisonError::into_inner);
        o.find(route).map(|o| o.pat.as_str().to_owned())
    }

    /// The physics a route of this id runs: the best-matching override, or the engine's.
    pub(super) fn physics_for(&self, route: &str) -> Arc<Physics> {
        self.override_for(route).0
    }
}

/// One per-route override of [`Engine::set_policies`]: the routes a pattern matches run
/// `config` (the engine's when `None`) under `hold`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    /// An exact route id or a glob ([`RoutePattern`]).
    pub pattern: String,
    /// The physics of its routes; `None`: the engine's.
    pub config: Option<PhysicsConfig>,
    /// Its routes' hold.
    pub hold: Hold,
}

/// An installed override.
#[derive(Debug, Clone)]
pub(super) struct Override {
    pub(super) pat: RoutePattern,
    pub(super) phys: Arc<Physics>,
    pub(super) hold: Hold,
}

/// The overrides, the most specific first (exact ids, then globs by literal characters;
/// equal ones by text), with exact ids and patterns indexed: a route finds its override by
/// one hash lookup and a scan of the globs alone.
#[derive(Clone, Default)]
pub(super) struct Overrides {
    list: Vec<Override>,
    /// Pattern text → index in `list`.
    by_text: std::collections::HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    /// Where the globs start in `list` (exact ids rank above every glob).
    globs: usize,
}

impl Overrides {
    fn new(mut list: Vec<Override>) -> Self {
        list.sort_by(|a, b| {
            b.pat.specificity().cmp(&a.pat.specificity()).then_with(|| a.pat.as_str().cmp(b.pat.as_str()))
        });
        let by_text = list.iter().enumerate().map(|(i, o)| (Box::from(o.pat.as_str()), i)).collect();
        let globs = list.partition_point(|o| !o.pat.is_glob());
        Overrides { list, by_text, globs }
    }

    /// The override on exactly this pattern.
    fn by_text(&self, pattern: &str) -> Option<&Override> {
        self.by_text.get(pattern).map(|&i| &self.list[i])
    }

    /// The most specific override that matches `route`.
    pub(super) fn find(&self, route: &str) -> Option<&Override> {
        self.by_text(route)
            .filter(|o| !o.pat.is_glob())
            .or_else(|| self.list[self.globs..].iter().find(|o| o.pat.matches(route)))
    }
}

impl std::ops::Deref for Overrides {
    type Target = [Override];

    fn deref(&self) -> &[Override] {
        &self.list
    }
}

/// What the policy layer may do to an engine, and nothing more: read its engine-wide and a
/// route's physics, and put a new set of policies in force. `atrion-policy` holds an engine
/// only through this trait, so that its reconciliation is not generic over the engine's
/// observer and cannot reach decisions or the cluster's view.
pub trait PolicyTarget: Send + Sync + 'static {
    /// [`Engine::config`].
    fn config(&self) -> &PhysicsConfig;
    /// [`Engine::route_config`].
    fn route_config(&self, route: &str) -> PhysicsConfig;
    /// [`Engine::set_policies`].
    fn set_policies(&self, policies: Vec<RoutePolicy>) -> Result<(), EngineError>;
}

impl<O: PhysicsObserver + 'static> PolicyTarget for Engine<O> {
    fn config(&self) -> &PhysicsConfig {
        Engine::config(self)
    }

    fn route_config(&self, route: &str) -> PhysicsConfig {
        Engine::route_config(self, route)
    }

    fn set_policies(&self, policies: Vec<RoutePolicy>) -> Result<(), EngineError> {
        Engine::set_policies(self, policies)
    }
}
