//! The policy model: what an operator writes (a [`PolicySet`] per source) and what the
//! store keeps (the [`Desired`] document).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A manual state a policy puts its routes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManualState {
    /// Every request shed.
    Open,
    /// Every request admitted.
    Closed,
    /// The physics decides and records, but nothing is shed: the safe way to roll out.
    Shadow,
}

impl From<ManualState> for atrion_core::Hold {
    fn from(s: ManualState) -> Self {
        match s {
            ManualState::Open => atrion_core::Hold::Open,
            ManualState::Closed => atrion_core::Hold::Closed,
            ManualState::Shadow => atrion_core::Hold::Shadow,
        }
    }
}

/// Priority lanes of a policy's routes: at which resistance each priority is shed (a
/// fraction of the way from `r_base` to the break point, as
/// [`atrion_core::PriorityThresholds`]), and the client keys of the VIP lane, whose
/// requests run as critical: shed only when the route is open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lanes {
    /// Threshold of high priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// Threshold of normal priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<f64>,
    /// Threshold of low priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Threshold of bulk priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<f64>,
    /// Client keys admitted as critical on these routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip: Vec<String>,
}

/// One policy: the routes it targets and what it sets. Fields it leaves out run the node's
/// defaults; a route runs the most specific policy that matches it, whole (policies do not
/// stack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// An exact route id, or a glob (`*` any run of characters, `?` one):
    /// [`atrion_core::RoutePattern`].
    pub route: String,
    /// Physics overrides: any field of [`atrion_core::PhysicsConfig`], nested as it is
    /// (`tuner.k`, `normal.slo_ms`, `half_open.open_base`...), merged over the node's
    /// configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physics: Option<Map<String, Value>>,
    /// Priority lanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes: Option<Lanes>,
    /// A manual state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ManualState>,
    /// Why, for the people reading it later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A ban: requests on a route (a pattern), from a client key, or from a client key on a
/// route, are shed on every node until `until_ms` (the roadmap's GossipBan).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// The routes banned (a pattern); every route when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The client key banned; every client when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The deadline, in milliseconds since the Unix epoch.
    pub until_ms: u64,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Ban {
    /// A ban's target in words: `route=GET /a* client=bot` (`*` for every one).
    pub fn target_text(route: Option<&str>, client: Option<&str>) -> String {
        format!("route={} client={}", route.unwrap_or("*"), client.unwrap_or("*"))
    }

    /// Whether two bans target the same thing (their deadlines aside).
    pub fn same_target(&self, other: &Ban) -> bool {
        self.route == other.route && self.client == other.client
    }
}

/// What one source wants: policies and bans, as a policy file or the API writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    /// The policies, at most one per pattern.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// The bans.
    #[serde(default)]
    pub bans: Vec<Ban>,
}

/// Where a policy comes from. The API's (priority 1) wins over the file's (priority 2) on
/// the same pattern; routes no policy targets run the defaults (priority 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The management API (and the CLI through it or on the store).
    Api,
    /// The policy file.
    File,
}

/// The desired state as the shared store keeps it: one document, versioned, written by
/// compare-and-swap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// Raised by one on every change; 0 before the first.
    pub version: u64,
    /// When it last changed (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Who changed it last (a token's name, `file`, or a CLI user).
    pub updated_by: String,
    /// The API's layer.
    pub api: PolicySet,
    /// The policy file's layer.
    pub file: PolicySet,
}

impl Desired {
    /// A source's layer.
    pub fn layer(&self, source: Source) -> &PolicySet {
        match source {
            Source::Api => &self.api,
            Source::File => &self.file,
        }
    }

    /// A source's layer, to change.
    pub fn layer_mut(&mut self, source: Source) -> &mut PolicySet {
        match source {
            Source::Api => &mut self.api,
            Source::File => &mut self.file,
        }
    }

    /// The policies in force, with their source: the API's, then the file's on patterns
    /// the API does not set; sorted by pattern.
    pub fn effective(&self) -> Vec<(Source, &Policy)> {
        let mut out: Vec<(Source, &Policy)> = self.api.policies.iter().map(|p| (Source::Api, p)).collect();
        let api: std::collections::HashSet<&str> = self.api.policies.iter().map(|p| p.route.as_str()).collect();
        out.extend(self.file.policies.iter().filter(|p| !api.contains(p.route.as_str())).map(|p| (Source::File, p)));
        out.sort_by(|a, b| a.1.route.cmp(&b.1.route));
        out
    }

    /// Every ban of both layers (a ban on the same target in both: the later deadline).
    pub fn bans(&self) -> Vec<Ban> {
        let mut out: Vec<Ban> = Vec::new();
        let mut at: std::collections::HashMap<(Option<&str>, Option<&str>), usize> = std::collections::HashMap::new();
        for b in self.api.bans.iter().chain(&self.file.bans) {
            match at.entry((b.route.as_deref(), b.client.as_deref())) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let o = &mut out[*e.get()];
                    o.until_ms = o.until_ms.max(b.until_ms);
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push(b.clone());
                }
            }
        }
        out
    }
}
