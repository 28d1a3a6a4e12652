//! The validation pipeline: schema (unknown fields, types) → semantic (ranges, order,
//! pattern syntax, ambiguous patterns, deadlines) → resource (how many, how long). Every
//! stage runs on what the one before let through, every issue is collected with its path,
//! and any issue rejects the whole change.

use atrion_core::{ConfigError, PhysicsConfig, RoutePattern, merge_json};
use serde_json::{Map, Value};

use crate::model::{Ban, Desired, Lanes, Policy, PolicySet};

/// The stage an issue was found at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Unknown fields, wrong types, text that does not parse.
    Schema,
    /// Ranges, order, pattern syntax, overlapping patterns, deadlines.
    Semantic,
    /// Bounds on counts and lengths.
    Resource,
}

/// One problem, at a path into the document (`policies[3].physics.tuner.k`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    /// Where it was found.
    pub stage: Stage,
    /// The path.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A change refused by the pipeline, with every issue found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} issue(s): {}", issues.len(), issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Rejected {
    /// The issues, in document order within each stage.
    pub issues: Vec<Issue>,
}

/// Bounds of the resource stage.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Policies in one layer (default 5,000): a larger set is refused before its items
    /// are read.
    pub max_policies: usize,
    /// Bans in one layer.
    pub max_bans: usize,
    /// The longest pattern, in bytes (default [`atrion_core::limits::MAX_POLICY_PATTERN`]).
    pub max_pattern_len: usize,
    /// The longest client key, in bytes.
    pub max_client_len: usize,
    /// VIP client keys in one policy.
    pub max_vip: usize,
    /// The longest note or ban reason, in bytes.
    pub max_note_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_policies: 5_000,
            max_bans: 10_000,
            max_pattern_len: atrion_core::limits::MAX_POLICY_PATTERN,
            max_client_len: 256,
            max_vip: 1_000,
            max_note_len: 1_024,
        }
    }
}

/// Validates policy sets against the physics a node runs.
#[derive(Debug, Clone)]
pub struct Validator {
    base: PhysicsConfig,
    base_json: Map<String, Value>,
    limits: Limits,
}

impl Validator {
    /// A validator for nodes whose engine-wide physics is `base`.
    pub fn new(base: PhysicsConfig, limits: Limits) -> Self {
        let base_json = match serde_json::to_value(&base) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Validator { base, base_json, limits }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A policy file's text (TOML), through the whole pipeline, at `now_ms` (wall ms: a
    /// ban's deadline must be later).
    pub fn check_toml(&self, text: &str, now_ms: u64) -> Result<PolicySet, Rejected> {
        let value: toml::Value = toml::from_str(text).map_err(|e| one(Stage::Schema, "", e.message().to_owned()))?;
        let value = serde_json::to_value(value).map_err(|e| one(Stage::Schema, "", e.to_string()))?;
        self.check_value(&value, now_ms)
    }

    /// A policy set as JSON text, through the whole pipeline, at `now_ms`.
    pub fn check_json(&self, text: &str, now_ms: u64) -> Result<PolicySet, Rejected> {
        let value: Value = serde_json::from_str(text).map_err(|e| one(Stage::Schema, "", e.to_string()))?;
        self.check_value(&value, now_ms)
    }

    /// A policy set as a JSON value, through the whole pipeline, at `now_ms`.
    pub fn check_value(&self, value: &Value, now_ms: u64) -> Result<PolicySet, Rejected> {
        let mut issues = Vec::new();
        let set = schema(value, &self.limits, &mut issues);
        if issues.is_empty() {
            self.semantic_and_resource(&set, "", &mut issues);
            // A change may not add a ban that is over already (a stored ban expires later).
            for (i, b) in set.bans.iter().enumerate() {
                if b.until_ms <= now_ms {
                    issues.push(past(&format!("bans[{i}].until_ms"), b.until_ms, now_ms));
                }
            }
        }
        if issues.is_empty() { Ok(set) } else { Err(Rejected { issues }) }
    }

    /// A desired document as a whole (both layers, and the patterns of the policies in
    /// force, checked together for ambiguity).
    pub fn check_desired(&self, desired: &Desired) -> Result<(), Rejected> {
        let mut issues = Vec::new();
        self.semantic_and_resource(&desired.api, "api.", &mut issues);
        self.semantic_and_resource(&desired.file, "file.", &mut issues);
        let effective: Vec<&Policy> = desired.effective().into_iter().map(|(_, p)| p).collect();
        ambiguous(&effective, "", &mut issues);
        if issues.is_empty() { Ok(()) } else { Err(Rejected { issues }) }
    }

    /// The physics a policy's routes run: the base with the policy's overrides and lanes
    /// merged in; `None` when it sets neither.
    pub fn physics(&self, policy: &Policy) -> Result<Option<PhysicsConfig>, Vec<Issue>> {
        if policy.physics.is_none() && !policy.lanes.as_ref().is_some_and(has_thresholds) {
            return Ok(None);
        }
        let mut merged = Value::Object(self.base_json.clone());
        if let Some(patch) = &policy.physics {
            merge_json(&mut merged, Value::Object(patch.clone()));
        }
        if let Some(l) = &policy.lanes {
            let lane = Map::from_iter(
                [("high", l.high), ("normal", l.normal), ("low", l.low), ("bulk", l.bulk)]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_owned(), Value::from(v?)))),
            );
            merge_json(&mut merged, Value::Object(Map::from_iter([("priority".to_owned(), Value::Object(lane))])));
        }
        let de = merged;
        let cfg: PhysicsConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            vec![Issue { stage: Stage::Schema, path: format!("physics.{path}"), message: e.into_inner().to_string() }]
        })?;
        if cfg.model != self.base.model {
            return Err(vec![Issue {
                stage: Stage::Semantic,
                path: "physics.model".into(),
                message: format!("must be the node's model ({:?}), got {:?}", self.base.model, cfg.model),
            }]);
        }
        cfg.validate().map_err(|e| vec![config_issue(&e)])?;
        Ok(Some(cfg))
    }

    fn semantic_and_resource(&self, set: &PolicySet, prefix: &str, issues: &mut Vec<Issue>) {
        let l = &self.limits;
        let mut add = |stage, path: String, message: String| issues.push(Issue { stage, path, message });
        let mut seen = std::collections::HashSet::with_capacity(set.policies.len());
        for (i, p) in set.policies.iter().enumerate() {
            let at = format!("{prefix}policies[{i}]");
            if let Err(e) = RoutePattern::parse(&p.route) {
                add(Stage::Semantic, format!("{at}.route"), e.to_string());
            }
            if !seen.insert(p.route.as_str()) {
                add(Stage::Semantic, format!("{at}.route"), format!("`{}` has a policy already", p.route));
            }
            match self.physics(p) {
                Ok(_) => {}
                Err(found) => {
                    for f in found {
                        add(f.stage, format!("{at}.{}", lanes_path(p, &f.path)), f.message);
                    }
                }
            }
            if let Some(lanes) = &p.lanes {
                for (j, c) in lanes.vip.iter().enumerate() {
                    if let Err(m) = client_ok(c, l) {
                        add(Stage::Semantic, format!("{at}.lanes.vip[{j}]"), m);
                    }
                }
                if lanes.vip.len() > l.max_vip {
                    add(
                        Stage::Resource,
                        format!("{at}.lanes.vip"),
                        format!("at most {} keys, got {}", l.max_vip, lanes.vip.len()),
                    );
                }
            }
            if p.route.len() > l.max_pattern_len {
                add(
                    Stage::Resource,
                    format!("{at}.route"),
                    format!("at most {} bytes, got {}", l.max_pattern_len, p.route.len()),
                );
            }
            if p.note.as_ref().is_some_and(|n| n.len() > l.max_note_len) {
                add(Stage::Resource, format!("{at}.note"), format!("at most {} bytes", l.max_note_len));
            }
        }
        let policies: Vec<&Policy> = set.policies.iter().collect();
        ambiguous(&policies, prefix, issues);
        for (i, b) in set.bans.iter().enumerate() {
            let at = format!("{prefix}bans[{i}]");
            ban_issues(b, &at, l, issues);
        }
        if set.policies.len() > l.max_policies {
            issues.push(Issue {
                stage: Stage::Resource,
                path: format!("{prefix}policies"),
                message: format!("at most {} policies, got {}", l.max_policies, set.policies.len()),
            });
        }
        if set.bans.len() > l.max_bans {
            issues.push(Issue {
                stage: Stage::Resource,
                path: format!("{prefix}bans"),
                message: format!("at most {} bans, got {}", l.max_bans, set.bans.len()),
            });
        }
        issues.sort_by_key(|i| i.stage as u8);
    }

    /// Checks a ban on its own (the API's `POST /v1/policies/bans`): a deadline in the
    /// future (`now_ms`), a valid pattern and client key.
    pub fn check_ban(&self, ban: &Ban, now_ms: u64) -> Result<(), Rejected> {
        let mut issues = Vec::new();
        ban_issues(ban, "ban", &self.limits, &mut issues);
        if ban.until_ms <= now_ms {
            issues.push(past("ban.until_ms", ban.until_ms, now_ms));
        }
        if issues.is_empty() { Ok(()) } else { Err(Rejected { issues }) }
    }
}

fn past(path: &str, until_ms: u64, now_ms: u64) -> Issue {
    Issue {
        stage: Stage::Semantic,
        path: path.to_owned(),
        message: format!("a ban's deadline must be in the future (now {now_ms}), got {until_ms}"),
    }
}

fn has_thresholds(l: &Lanes) -> bool {
    l.high.or(l.normal).or(l.low).or(l.bulk).is_some()
}

/// Lanes are merged into `physics.priority`; an issue there is reported at the lane.
fn lanes_path(p: &Policy, path: &str) -> String {
    match path.strip_prefix("physics.priority.") {
        Some(lane) if p.lanes.is_some() && !p.physics.as_ref().is_some_and(|m| m.contains_key("priority")) => {
            format!("lanes.{lane}")
        }
        _ => path.to_owned(),
    }
}

fn ban_issues(b: &Ban, at: &str, l: &Limits, issues: &mut Vec<Issue>) {
    let mut add = |stage, path: String, message: String| issues.push(Issue { stage, path, message });
    if b.route.is_none() && b.client.is_none() {
        add(Stage::Semantic, at.to_owned(), "a ban needs a `route`, a `client`, or both".into());
    }
    if let Some(r) = &b.route {
        if let Err(e) = RoutePattern::parse(r) {
            add(Stage::Semantic, format!("{at}.route"), e.to_string());
        }
        if r.len() > l.max_pattern_len {
            add(
                Stage::Resource,
                format!("{at}.route"),
                format!("at most {} bytes, got {}", l.max_pattern_len, r.len()),
            );
        }
    }
    if let Some(c) = &b.client
        && let Err(m) = client_ok(c, l)
    {
        add(Stage::Semantic, format!("{at}.client"), m);
    }
    if b.reason.as_ref().is_some_and(|n| n.len() > l.max_note_len) {
        add(Stage::Resource, format!("{at}.reason"), format!("at most {} bytes", l.max_note_len));
    }
}

fn client_ok(c: &str, l: &Limits) -> Result<(), String> {
    if c.is_empty() || c.len() > l.max_client_len || c.chars().any(char::is_control) {
        return Err(format!("a client key is 1 to {} bytes without control characters", l.max_client_len));
    }
    Ok(())
}

/// The most pairs of globs [`ambiguous`] compares in full (each a search over pairs of
/// positions): past it, the set is refused at the resource stage.
const MAX_GLOB_COMPARISONS: usize = 200_000;

/// Patterns of equal specificity that can match the same route: neither would win.
///
/// Only globs can be ambiguous (exact ids rank above every glob), and only globs of equal
/// specificity whose literal prefixes (the text before the first wildcard) are one a prefix
/// of the other can match a common route: sorted by prefix, each glob is compared with the
/// run of globs that extend its prefix, not with every other one. A set whose globs share
/// one prefix still costs a comparison per pair; the resource stage bounds the set.
fn ambiguous(policies: &[&Policy], prefix: &str, issues: &mut Vec<Issue>) {
    let mut globs: Vec<(usize, RoutePattern)> = policies
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, RoutePattern::parse(&p.route).ok()?)))
        .filter(|(_, p)| p.is_glob())
        .collect();
    let literal = |p: &RoutePattern| -> usize { p.as_str().find(['*', '?']).unwrap_or(p.as_str().len()) };
    globs.sort_by(|(_, a), (_, b)| {
        a.specificity().cmp(&b.specificity()).then_with(|| a.as_str()[..literal(a)].cmp(&b.as_str()[..literal(b)]))
    });
    let tail = |p: &RoutePattern| -> usize { p.as_str().rfind(['*', '?']).map_or(0, |i| i + 1) };
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut budget = MAX_GLOB_COMPARISONS;
    for (n, (i, a)) in globs.iter().enumerate() {
        let (head, a_tail) = (&a.as_str()[..literal(a)], &a.as_str()[tail(a)..]);
        for (j, b) in &globs[n + 1..] {
            if b.specificity() != a.specificity() || !b.as_str().starts_with(head) {
                break;
            }
            // The literal suffixes must agree too.
            let b_tail = &b.as_str()[tail(b)..];
            if !(a_tail.ends_with(b_tail) || b_tail.ends_with(a_tail)) || a == b {
                continue;
            }
            if budget == 0 {
                issues.push(Issue {
                    stage: Stage::Resource,
                    path: format!("{prefix}policies"),
                    message: format!(
                        "more than {MAX_GLOB_COMPARISONS} pairs of equally specific globs that may overlap: give the patterns distinct literal prefixes"
                    ),
                });
                return;
            }
            budget -= 1;
            if a.overlaps(b) {
                found.push(((*i).max(*j), (*i).min(*j)));
            }
        }
    }
    // In document order: reported at the later policy, naming the earlier.
    found.sort_unstable();
    for (i, j) in found {
        let (a, b) = (&policies[i].route, &policies[j].route);
        issues.push(Issue {
            stage: Stage::Semantic,
            path: format!("{prefix}policies[{i}].route"),
            message: format!(
                "`{a}` and `{b}` (policies[{j}]) are equally specific and can match the same route: make one more specific"
            ),
        });
    }
}

fn config_issue(e: &ConfigError) -> Issue {
    let (field, message) = match e {
        ConfigError::NotFinite { field, value } => (*field, format!("must be finite, got {value}")),
        ConfigError::OutOfRange { field, value, expected } => (*field, format!("must be {expected}, got {value}")),
        ConfigError::Order { field, value, other, other_value } => {
            (*field, format!("must not exceed `{other}` ({other_value}), got {value}"))
        }
        ConfigError::UnknownName { field, expected } => (*field, format!("unknown, expected {expected}")),
        other => ("", other.to_string()),
    };
    Issue { stage: Stage::Semantic, path: format!("physics.{field}"), message }
}

fn one(stage: Stage, path: &str, message: String) -> Rejected {
    Rejected { issues: vec![Issue { stage, path: path.to_owned(), message }] }
}

/// The schema stage: the document's shape, each policy and ban on its own, so that every
/// malformed item is reported, not just the first.
fn schema(value: &Value, limits: &Limits, issues: &mut Vec<Issue>) -> PolicySet {
    let mut set = PolicySet::default();
    let Some(top) = value.as_object() else {
        issues.push(Issue {
            stage: Stage::Schema,
            path: String::new(),
            message: "expected a table of `policies` and `bans`".into(),
        });
        return set;
    };
    for k in top.keys().filter(|k| !matches!(k.as_str(), "policies" | "bans")) {
        issues.push(Issue {
            stage: Stage::Schema,
            path: k.clone(),
            message: "unknown field, expected `policies` or `bans`".into(),
        });
    }
    fn items<T: serde::de::DeserializeOwned>(
        top: &Map<String, Value>,
        name: &str,
        max: usize,
        issues: &mut Vec<Issue>,
    ) -> Vec<T> {
        let Some(v) = top.get(name) else { return Vec::new() };
        let Some(list) = v.as_array() else {
            issues.push(Issue { stage: Stage::Schema, path: name.to_owned(), message: "expected a list".into() });
            return Vec::new();
        };
        // Too many: refused before any item is read.
        if list.len() > max {
            let message = format!("at most {max} {name}, got {}", list.len());
            issues.push(Issue { stage: Stage::Resource, path: name.to_owned(), message });
            return Vec::new();
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            match serde_path_to_error::deserialize::<_, T>(item) {
                Ok(t) => out.push(t),
                Err(e) => {
                    let path = e.path().to_string();
                    let path = if path == "." { format!("{name}[{i}]") } else { format!("{name}[{i}].{path}") };
                    issues.push(Issue { stage: Stage::Schema, path, message: e.into_inner().to_string() });
                }
            }
        }
        out
    }
    set.policies = items(top, "policies", limits.max_policies, issues);
    set.bans = items(top, "bans", limits.max_bans, issues);
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall time the tests validate at (ms).
    const NOW: u64 = 1_000_000;

    fn v() -> Validator {
        Validator::new(PhysicsConfig::default(), Limits::default())
    }

    fn paths(r: Rejected) -> Vec<(Stage, String)> {
        r.issues.into_iter().map(|i| (i.stage, i.path)).collect()
    }

    #[test]
    fn a_good_file_passes_and_keeps_what_it_says() {
        let set = v()
            .check_toml(
                r#"
                [[policies]]
                route = "GET /pay"
                physics = { tuner = { k = 4.0 }, normal = { slo_ms = 250.0 } }
                lanes = { bulk = 0.2, vip = ["acme"] }
                [[policies]]
                route = "GET /admin/*"
                state = "shadow"
                [[bans]]
                client = "scraper"
                until_ms = 99999999999999
                "#,
                NOW,
            )
            .unwrap();
        assert_eq!(set.policies.len(), 2);
        let cfg = v().physics(&set.policies[0]).unwrap().unwrap();
        assert_eq!((cfg.tuner.k, cfg.priority.bulk), (4.0, 0.2));
        assert_eq!(v().physics(&set.policies[1]).unwrap(), None);
    }

    #[test]
    fn every_issue_is_reported_with_its_path_and_stage() {
        let err = v()
            .check_json(
                r#"{"policies": [
                    {"route": "a", "physics": {"tuner": {"k": -1}}},
                    {"route": "b", "stat": "open"},
                    {"route": "c", "state": "sideways"},
                    {"route": "d", "physics": {"tuner": {"kk": 1}}}
                ], "extra": 1}"#,
                NOW,
            )
            .unwrap_err();
        assert_eq!(
            paths(err),
            [
                (Stage::Schema, "extra".into()),
                (Stage::Schema, "policies[1].stat".into()),
                (Stage::Schema, "policies[2].state".into()),
            ]
        );
        let err = v().check_json(r#"{"policies": [{"route": "a", "physics": {"tuner": {"k": -1}}}, {"route": "d", "physics": {"tuner": {"kk": 1}}}]}"#, NOW).unwrap_err();
        let text: Vec<String> = err.issues.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"policies[0].physics.tuner.k: must be > 0, got -1".to_owned()), "{text:?}");
        assert_eq!(paths(err)[0], (Stage::Schema, "policies[1].physics.tuner.kk".into()), "schema first");
    }

    #[test]
    fn semantic_and_resource_rules() {
        let err = v()
            .check_json(
                r#"{"policies": [
                    {"route": "GET /*"}, {"route": "*ET /a"},
                    {"route": "p", "physics": {"tuner": {"floor": 500, "ceiling": 100}}},
                    {"route": "q", "lanes": {"bulk": 2}},
                    {"route": "q"},
                    {"route": ""}
                ], "bans": [{"until_ms": 5}, {"client": "x", "route": "GET /x", "until_ms": 5}]}"#,
                NOW,
            )
            .unwrap_err();
        let p = paths(err.clone());
        assert!(p.contains(&(Stage::Semantic, "policies[1].route".into())), "ambiguous: {err}");
        assert!(p.contains(&(Stage::Semantic, "policies[2].physics.tuner.floor".into())), "{err}");
        assert!(p.contains(&(Stage::Semantic, "policies[3].lanes.bulk".into())), "{err}");
        assert!(p.contains(&(Stage::Semantic, "policies[4].route".into())), "duplicate: {err}");
        assert!(p.contains(&(Stage::Semantic, "policies[5].route".into())), "empty: {err}");
        assert!(p.contains(&(Stage::Semantic, "bans[0]".into())), "{err}");
        assert!(p.contains(&(Stage::Semantic, "bans[1].until_ms".into())), "a deadline in the past: {err}");
        let long = "x".repeat(300);
        let err = v().check_json(&format!(r#"{{"policies": [{{"route": "{long}"}}]}}"#), NOW).unwrap_err();
        assert_eq!(paths(err), [(Stage::Resource, "policies[0].route".into())]);
        let few = Limits { max_policies: 1, ..Limits::default() };
        let err = Validator::new(PhysicsConfig::default(), few)
            .check_json(r#"{"policies": [{"route": "a"}, {"route": "b"}]}"#, NOW)
            .unwrap_err();
        assert_eq!(paths(err), [(Stage::Resource, "policies".into())]);
        let ban = Ban { route: None, client: Some("c".into()), until_ms: 10, reason: None };
        assert!(v().check_ban(&ban, 20).is_err());
        assert!(v().check_ban(&ban, 5).is_ok());
    }

    #[test]
    fn the_api_layer_wins_over_the_file_and_ambiguity_is_checked_across_layers() {
        let mut d = Desired::default();
        d.file.policies.push(Policy {
            route: "a".into(),
            physics: None,
            lanes: None,
            state: Some(crate::ManualState::Open),
            note: None,
        });
        d.api.policies.push(Policy { route: "a".into(), physics: None, lanes: None, state: None, note: None });
        let eff = d.effective();
        assert_eq!(eff.len(), 1);
        assert_eq!(eff[0].0, crate::Source::Api);
        d.api.policies.push(Policy { route: "x*".into(), physics: None, lanes: None, state: None, note: None });
        d.file.policies.push(Policy { route: "*y".into(), physics: None, lanes: None, state: None, note: None });
        assert!(v().check_desired(&d).is_err());
    }
}
