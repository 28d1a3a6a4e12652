//! What a request meets of the policies beside the engine: bans and the VIP lane. Built
//! at apply time into tables read without a lock; a request without a client key and a
//! cluster without route bans pay one atomic load.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use atrion_core::RoutePattern;

use crate::model::{Ban, Desired};

/// The tables, rebuilt whenever the applied policies change.
#[derive(Debug, Default)]
struct Tables {
    /// Bans on routes for every client: (pattern, until).
    routes: Vec<(RoutePattern, u64)>,
    /// Bans on a client key: (routes or every route, until).
    clients: HashMap<String, Vec<(Option<RoutePattern>, u64)>>,
    /// VIP client keys: the patterns of the policies that list them.
    vip: HashMap<String, Vec<RoutePattern>>,
}

/// Bans and VIP lanes in force on this node.
#[derive(Debug, Default)]
pub struct Gate {
    tables: ArcSwap<Tables>,
}

impl Gate {
    /// An empty gate: nothing banned, no VIP.
    pub fn new() -> Arc<Self> {
        Arc::new(Gate::default())
    }

    /// Installs the bans and VIP lanes of `desired` (its policies in force).
    pub fn install(&self, desired: &Desired) {
        let mut t = Tables::default();
        for b in desired.bans() {
            let Ban { route, client, until_ms, .. } = b;
            let pat = route.and_then(|r| RoutePattern::parse(&r).ok());
            match client {
                Some(c) => t.clients.entry(c).or_default().push((pat, until_ms)),
                None => t.routes.extend(pat.map(|p| (p, until_ms))),
            }
        }
        for (_, p) in desired.effective() {
            let Some(lanes) = &p.lanes else { continue };
            let Ok(pat) = RoutePattern::parse(&p.route) else { continue };
            for c in &lanes.vip {
                t.vip.entry(c.clone()).or_default().push(pat.clone());
            }
        }
        self.tables.store(Arc::new(t));
    }

    /// Until when (ms since the Unix epoch) a request on `route` from `client` is banned at
    /// `now_ms`; `None` when it is not.
    pub fn banned(&self, route: &str, client: Option<&str>, now_ms: u64) -> Option<u64> {
        let t = self.tables.load();
        let mut until = None::<u64>;
        let mut take = |u: u64| {
            if u > now_ms {
                until = Some(until.map_or(u, |x| x.max(u)));
            }
        };
        for (p, u) in &t.routes {
            if p.matches(route) {
                take(*u);
            }
        }
        if let Some(list) = client.and_then(|c| t.clients.get(c)) {
            for (p, u) in list {
                if p.as_ref().is_none_or(|p| p.matches(route)) {
                    take(*u);
                }
            }
        }
        until
    }

    /// Whether no ban is installed (expired ones count until the next apply): one load.
    pub fn no_bans(&self) -> bool {
        let t = self.tables.load();
        t.routes.is_empty() && t.clients.is_empty()
    }

    /// Whether `client` is in a VIP lane of `route`.
    pub fn vip(&self, route: &str, client: &str) -> bool {
        self.tables.load().vip.get(client).is_some_and(|pats| pats.iter().any(|p| p.matches(route)))
    }

    /// Bans in force at `now_ms`.
    pub fn bans_in_force(&self, now_ms: u64) -> usize {
        let t = self.tables.load();
        t.routes.iter().filter(|(_, u)| *u > now_ms).count()
            + t.clients.values().flatten().filter(|(_, u)| *u > now_ms).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Lanes, Policy};

    #[test]
    fn bans_apply_to_their_target_until_their_deadline() {
        let mut d = Desired::default();
        d.api.bans.push(Ban { route: Some("GET /a*".into()), client: None, until_ms: 100, reason: None });
        d.api.bans.push(Ban { route: None, client: Some("bot".into()), until_ms: 200, reason: None });
        d.file.bans.push(Ban { route: Some("GET /x".into()), client: Some("eve".into()), until_ms: 300, reason: None });
        d.api.policies.push(Policy {
            route: "GET /pay".into(),
            physics: None,
            lanes: Some(Lanes { vip: vec!["acme".into()], ..Lanes::default() }),
            state: None,
            note: None,
        });
        let g = Gate::new();
        assert_eq!(g.banned("GET /ab", None, 50), None, "nothing before install");
        g.install(&d);
        assert_eq!(g.banned("GET /ab", None, 50), Some(100));
        assert_eq!(g.banned("GET /ab", None, 100), None, "expired at the deadline");
        assert_eq!(g.banned("GET /b", Some("bot"), 150), Some(200));
        assert_eq!(g.banned("GET /b", Some("eve"), 150), None);
        assert_eq!(g.banned("GET /x", Some("eve"), 150), Some(300));
        assert_eq!(g.banned("GET /x", None, 150), None);
        assert_eq!(g.bans_in_force(150), 2);
        assert!(g.vip("GET /pay", "acme") && !g.vip("GET /pay", "bot") && !g.vip("GET /other", "acme"));
    }
}
