//! Admin tokens: named bearer secrets, compared in constant time, never shown.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use atrion_policy::AuditEntry;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::Shared;
use crate::problem::{Problem, ProblemKind};
use tokio::time::Instant;

/// The shortest secret a token may have, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// A named admin token. Its `Debug` shows the name only; the secret is never printed,
/// logged or put in an error.
#[derive(Clone)]
pub struct AdminToken {
    name: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken").field("name", &self.name).field("secret", &"<redacted>").finish()
    }
}

/// Why a token was refused (never quoting the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("token name `{name}`: 1 to 64 of [A-Za-z0-9._-]")]
    BadName {
        /// The name.
        name: String,
    },
    /// The secret is too short or has whitespace or control characters.
    #[error("token `{name}`: the secret must be at least {MIN_SECRET_LEN} printable bytes without spaces")]
    WeakSecret {
        /// The token's name.
        name: String,
    },
    /// Two tokens share a name.
    #[error("token name `{name}` is given twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// A line is not `name:secret`.
    #[error("line {line}: expected `name:secret`")]
    Malformed {
        /// The line (1-based).
        line: usize,
    },
}

impl AdminToken {
    /// A token named `name` (what logs and the audit trail record) with `secret`.
    pub fn new(name: &str, secret: &str) -> Result<Self, TokenError> {
        let name_ok = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(TokenError::BadName { name: name.to_owned() });
        }
        if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::WeakSecret { name: name.to_owned() });
        }
        Ok(AdminToken { name: name.to_owned(), secret: secret.as_bytes().to_vec() })
    }

    /// The token's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `presented` is this token's secret (compared in constant time).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.secret.as_slice().ct_eq(presented))
    }

    /// Tokens from text: one `name:secret` per line (or per comma-separated item); blank
    /// lines and lines starting with `#` are skipped. Names must be unique.
    pub fn parse_list(text: &str) -> Result<Vec<AdminToken>, TokenError> {
        let mut tokens: Vec<AdminToken> = Vec::new();
        let items = text.lines().enumerate().flat_map(|(i, line)| line.split(',').map(move |item| (i + 1, item)));
        for (line, item) in items {
            let item = item.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            let (name, secret) = item.split_once(':').ok_or(TokenError::Malformed { line })?;
            let token = AdminToken::new(name.trim(), secret.trim())?;
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(TokenError::Duplicate { name: token.name });
            }
            tokens.push(token);
        }
        Ok(tokens)
    }
}

/// The name of the token a request presented: which token, never what it was.
pub(crate) fn who(tokens: &[AdminToken], presented: &[u8]) -> Option<String> {
    // Every token is compared (no early exit), each in constant time.
    let mut found = None;
    for t in tokens {
        if bool::from(t.secret.as_slice().ct_eq(presented)) {
            found = Some(t.name.clone());
        }
    }
    found
}

/// An admin request, authenticated: the token's name, for the audit trail.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub String);

/// The bearer token of an `Authorization` value; the scheme is case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<Arc<Shared>> for Admin {
    /// A refused admin request: `401` (with its `WWW-Authenticate` challenge), `403` when
    /// the server has no tokens at all, `429` with `Retry-After` when its source failed too
    /// often.
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        if s.config.admin_tokens.is_empty() {
            return Err(Problem::new(ProblemKind::AdminDisabled, "this server has no admin tokens"));
        }
        let presented = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        // A valid token always passes, from any source: secrets of 16 bytes and more are not
        // guessed at any rate, so the limit below sheds the cost of refusals, not guesses.
        if let Some(name) = presented.and_then(|p| who(&s.config.admin_tokens, p.as_bytes())) {
            return Ok(Admin(name));
        }
        let source = source(parts);
        let reason = if presented.is_some() { Reason::Invalid } else { Reason::Missing };
        let path = parts.uri.path();
        let (verdict, first) = s.refusals.refused(source, path, reason);
        if let Some(key) = first {
            // The first refusal of a source in a minute is on record at once; its count
            // is written when the minute is over.
            let s = s.clone();
            tokio::spawn(async move { s.refusals.record_first(&s, key).await });
        }
        match verdict {
            Verdict::Refuse => Err(match reason {
                Reason::Missing => Problem::new(ProblemKind::MissingToken, "send `Authorization: Bearer <token>`"),
                _ => Problem::new(ProblemKind::InvalidToken, "the bearer token matches none of this server's tokens"),
            }),
            Verdict::Wait(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(Problem::new(
                    ProblemKind::AuthRateLimited,
                    format!("this source failed to authenticate too often: retry in {secs} s with a valid token"),
                )
                .retry_after(std::time::Duration::from_secs(secs.max(1))))
            }
        }
    }
}

/// Whether a public read carries a valid admin token (it then shows token names). A missing
/// or wrong token is no failure here: the read is public.
pub(crate) struct Reader {
    /// A valid admin token came with the request.
    pub admin: bool,
}

impl FromRequestParts<Arc<Shared>> for Reader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        let presented = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        Ok(Reader { admin: presented.is_some_and(|p| who(&s.config.admin_tokens, p.as_bytes()).is_some()) })
    }
}

/// The caller's address, as `atrion_server::serve` records it (`None` when the router is
/// served without it).
fn source(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// How failed authentications are limited per source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthLimits {
    /// Failures a source may make before it must wait (default 20).
    pub failures: u32,
    /// The first wait past the budget; it doubles with each further failure (default 1 s).
    pub backoff: Duration,
    /// The longest wait; a source without a failure for this long starts afresh
    /// (default 60 s).
    pub max_backoff: Duration,
    /// Sources tracked at once, for the limit and for the audit trail's counts; past it,
    /// new sources share one entry (default 10,000).
    pub max_sources: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            failures: 20,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_sources: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Missing,
    Invalid,
}

enum Verdict {
    /// Refuse with 401.
    Refuse,
    /// Refuse with 429: the source may try again after this long.
    Wait(Duration),
}

/// A source's failures in its current streak.
#[derive(Debug)]
struct Strikes {
    count: u32,
    last: Instant,
    until: Option<Instant>,
}

/// Refused attempts of one source in one minute, as one audit entry.
#[derive(Debug, Default)]
struct Tally {
    missing: u64,
    invalid: u64,
    limited: u64,
    /// The first few paths tried.
    paths: Vec<String>,
    /// The entry written at the first refusal, and the count it says.
    written: Option<(String, u64)>,
}

/// The most distinct paths an audit entry of refusals lists.
const TALLY_PATHS: usize = 8;

/// Failed authentications: limited per source with backoff, and counted per source and
/// minute for the audit trail (one entry each, written when the minute is over), in
/// bounded memory.
#[derive(Debug)]
pub(crate) struct Guard {
    limits: AuthLimits,
    strikes: Mutex<HashMap<Option<IpAddr>, Strikes>>,
    /// (source, minute since the epoch) → tally.
    tallies: Mutex<BTreeMap<(u64, String), Tally>>,
}

/// What stands for a source past the bound, or without an address.
const OTHER: &str = "other";

impl Guard {
    pub(crate) fn new(limits: AuthLimits) -> Self {
        Guard { limits, strikes: Mutex::new(HashMap::new()), tallies: Mutex::new(BTreeMap::new()) }
    }

    /// Counts a refusal; and the tally's key when it is the first of its source and minute.
    fn refused(&self, source: Option<IpAddr>, path: &str, reason: Reason) -> (Verdict, Option<(u64, String)>) {
        let verdict = self.strike(source);
        let limited = matches!(verdict, Verdict::Wait(_));
        let first = self.tally(source, path, reason, limited);
        (verdict, first)
    }

    /// Counts a failure of `source`; whether it must wait.
    fn strike(&self, source: Option<IpAddr>) -> Verdict {
        let now = Instant::now();
        let l = &self.limits;
        let mut map = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = source;
        if !map.contains_key(&key) && map.len() >= l.max_sources {
            let stale = |s: &Strikes| now.duration_since(s.last) > l.max_backoff && s.until.is_none_or(|u| u <= now);
            map.retain(|_, s| !stale(s));
            if map.len() >= l.max_sources {
                key = None;
            }
        }
        let s = map.entry(key).or_insert(Strikes { count: 0, last: now, until: None });
        if now.duration_since(s.last) > l.max_backoff && s.until.is_none_or(|u| u <= now) {
            s.count = 0;
        }
        s.last = now;
        s.count = s.count.saturating_add(1);
        if s.count <= l.failures {
            return Verdict::Refuse;
        }
        let doublings = (s.count - l.failures - 1).min(20);
        let wait = l.backoff.saturating_mul(1 << doublings).min(l.max_backoff).max(Duration::from_millis(1));
        let until = s.until.map_or(now + wait, |u| u.max(now + wait));
        s.until = Some(until);
        Verdict::Wait(until - now)
    }

    fn tally(&self, source: Option<IpAddr>, path: &str, reason: Reason, limited: bool) -> Option<(u64, String)> {
        let minute = wall_ms() / 60_000;
        let mut map = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = (minute, source.map_or_else(|| OTHER.to_owned(), |ip| ip.to_string()));
        if !map.contains_key(&key) && map.len() >= self.limits.max_sources {
            key.1 = OTHER.to_owned();
        }
        let t = map.entry(key.clone()).or_default();
        match (limited, reason) {
            (true, _) => t.limited += 1,
            (false, Reason::Missing) => t.missing += 1,
            (false, Reason::Invalid) => t.invalid += 1,
        }
        if t.paths.len() < TALLY_PATHS && !t.paths.iter().any(|p| p == path) {
            t.paths.push(path.chars().take(256).collect());
        }
        (t.total() == 1).then_some(key)
    }

    /// Writes the first refusal of a source-minute, and keeps the entry's key for its count.
    async fn record_first(&self, s: &Shared, key: (u64, String)) {
        let Some(p) = &s.config.policy else { return };
        let entry = {
            let map = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(t) = map.get(&key) else { return };
            t.entry(key.0, &key.1, p.node_id())
        };
        let written = entry.count.unwrap_or(0);
        match p.audit(entry).await {
            Ok(id) => {
                let mut map = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(t) = map.get_mut(&key) {
                    t.written = Some((id, written));
                }
            }
            Err(e) => tracing::warn!(target: "atrion::audit", error = %e, "the audit entry could not be written"),
        }
    }

    /// Writes the tallies of the minutes that are over (all of them when `all`): one audit
    /// entry per source and minute.
    pub(crate) async fn flush(&self, s: &Shared, all: bool) {
        let minute = wall_ms() / 60_000;
        let done: Vec<((u64, String), Tally)> = {
            let mut map = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
            let keep = if all { BTreeMap::new() } else { map.split_off(&(minute, String::new())) };
            std::mem::replace(&mut *map, keep).into_iter().collect()
        };
        for ((minute, source), t) in done {
            let n = t.total();
            tracing::warn!(target: "atrion::audit", %source, refused = n, missing = t.missing, invalid = t.invalid,
                rate_limited = t.limited, paths = ?t.paths, "refused admin requests in one minute");
            let Some(p) = &s.config.policy else { continue };
            let entry = t.entry(minute, &source, p.node_id());
            let written = match &t.written {
                Some((_, count)) if *count == n => continue,
                Some((id, _)) => p.audit_rewrite(id, entry).await.map(|()| String::new()),
                None => p.audit(entry).await,
            };
            if let Err(e) = written {
                tracing::warn!(target: "atrion::audit", error = %e, "the audit entry could not be written");
            }
        }
    }
}

impl Tally {
    fn total(&self) -> u64 {
        self.missing + self.invalid + self.limited
    }

    /// The audit entry of this tally: who `-`, action `auth`, the source as target, and the
    /// counts.
    fn entry(&self, minute: u64, source: &str, node: &str) -> AuditEntry {
        let n = self.total();
        AuditEntry {
            at_ms: minute * 60_000,
            who: "-".into(),
            action: "auth".into(),
            target: Some(source.to_owned()),
            before: None,
            after: Some(serde_json::json!({
                "missing_token": self.missing, "invalid_token": self.invalid, "rate_limited": self.limited, "paths": self.paths,
            })),
            ok: false,
            error: Some(format!("{n} refused in the minute")),
            node: node.to_owned(),
            count: Some(n),
        }
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Writes the audit trail's counts of refused attempts as each minute ends, while the
/// server lives.
pub(crate) fn spawn_flusher(s: &Arc<Shared>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let weak = Arc::downgrade(s);
    rt.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(s) = weak.upgrade() else { return };
            s.refusals.flush(&s, false).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_never_show_their_secret() {
        let list =
            AdminToken::parse_list("# ops\nalice:aaaaaaaaaaaaaaaa1\n\nbob : bbbbbbbbbbbbbbbb2, ci:cccccccccccccccc3")
                .unwrap();
        let names: Vec<&str> = list.iter().map(AdminToken::name).collect();
        assert_eq!(names, ["alice", "bob", "ci"]);
        assert!(!format!("{list:?}").contains("aaaa"));
        assert_eq!(who(&list, b"bbbbbbbbbbbbbbbb2").as_deref(), Some("bob"));
        assert_eq!(who(&list, b"bbbbbbbbbbbbbbbb"), None);
        for (text, err) in [
            ("x:short", TokenError::WeakSecret { name: "x".into() }),
            ("bad name:aaaaaaaaaaaaaaaa1", TokenError::BadName { name: "bad name".into() }),
            ("a:aaaaaaaaaaaaaaaa1\na:bbbbbbbbbbbbbbbb1", TokenError::Duplicate { name: "a".into() }),
            ("no-colon", TokenError::Malformed { line: 1 }),
        ] {
            let e = AdminToken::parse_list(text).unwrap_err();
            assert_eq!(e, err);
            assert!(!e.to_string().contains("aaaaaaaa") && !e.to_string().contains("short"), "{e}");
        }
    }
}
