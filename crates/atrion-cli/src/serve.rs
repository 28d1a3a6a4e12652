//! `atrion serve`: the sidecar. The HTTP API of `atrion-server` over an `Atrion` whose state
//! lives in a store (by default an embedded, crash-safe file in `./atrion-data`).
//!
//! Every setting comes from, in this order of precedence: a flag, an `ATRION_*` environment
//! variable, the TOML file given by `--config` (keys named as the flags, without the dashes
//! in front: `node-id = "a"`), the default.
//!
//! With `--demo` it also drives its own API with the pretend service of `atrion
//! demo-traffic` ([`crate::demo`]), in the same process, so that the dashboard shows a route
//! trip and recover from the first command.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use atrion::state::SyncConfig;
use atrion_server::{AdminToken, ServerConfig};
use serde::Deserialize;

mod limits;
mod metrics;
use limits::{connection_limits, fit_fd_limit, release_memory};
pub use metrics::ROUTE_SERIES_IDLE;
use metrics::install_metrics;

/// The port `atrion serve` listens on by default, on loopback.
pub const DEFAULT_PORT: u16 = 7878;

/// The store `atrion serve` uses by default.
pub const DEFAULT_STORE: &str = "file:./atrion-data/state.redb";

mod args;
pub use args::{DEFAULT_PROXY_PORT, DashboardAuthArg, LogFormat, ServeArgs};

/// The settings a `--config` file may hold: the flags' names, every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    listen: Option<SocketAddr>,
    store: Option<String>,
    node_id: Option<String>,
    namespace: Option<String>,
    admin_tokens_file: Option<PathBuf>,
    i_know_this_exposes_the_api: Option<bool>,
    metrics_routes: Option<usize>,
    log_format: Option<LogFormat>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    request_timeout_ms: Option<u64>,
    upstream: Option<String>,
    proxy_listen: Option<SocketAddr>,
    path_templates: Option<Vec<String>>,
    otlp_endpoint: Option<String>,
    policy_file: Option<PathBuf>,
    encryption_key_file: Option<PathBuf>,
    divergence_pulses: Option<u32>,
    no_dashboard: Option<bool>,
    dashboard_routes: Option<usize>,
    auth_failures: Option<u32>,
    auth_backoff_ms: Option<u64>,
    auth_max_backoff_ms: Option<u64>,
    auth_max_sources: Option<usize>,
    audit_max_entries: Option<usize>,
    audit_max_bytes: Option<u64>,
    audit_max_age_days: Option<u64>,
    max_policies: Option<usize>,
    header_timeout_ms: Option<u64>,
    keep_alive_timeout_ms: Option<u64>,
    send_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    reserved_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
    allowed_hosts: Option<Vec<String>>,
    cors_origins: Option<Vec<String>>,
    client_tokens_file: Option<PathBuf>,
    max_routes: Option<usize>,
    route_creation_rate: Option<u32>,
    route_creation_burst: Option<u32>,
    max_tasks_per_client: Option<u32>,
    ticket_ttl_ms: Option<u64>,
    dashboard_clients: Option<usize>,
    dashboard_auth: Option<DashboardAuthArg>,
    dashboard_tokens_file: Option<PathBuf>,
    demo: Option<bool>,
    demo_healthy_secs: Option<f64>,
    demo_failing_secs: Option<f64>,
}

/// Everything `atrion serve` runs with, resolved and checked.
#[derive(Debug)]
pub struct Settings {
    listen: SocketAddr,
    store: String,
    node_id: String,
    namespace: String,
    admin_tokens: Vec<AdminToken>,
    exposed_anyway: bool,
    metrics_routes: usize,
    /// How log lines are written.
    pub log_format: LogFormat,
    max_body_bytes: usize,
    max_batch: usize,
    request_timeout: Duration,
    proxy: Option<(SocketAddr, atrion_server::ProxyConfig)>,
    /// Where traces and metrics go over OTLP/HTTP, if anywhere.
    pub otlp_endpoint: Option<String>,
    policy_file: Option<PathBuf>,
    /// Encryption at rest of the store, if asked for.
    encryption: Option<atrion::EncryptionConfig>,
    divergence_pulses: u32,
    dashboard: bool,
    dashboard_routes: usize,
    auth: atrion_server::AuthLimits,
    audit: atrion_policy::Retention,
    max_policies: usize,
    connections: atrion_server::ConnLimits,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    client_tokens: Vec<AdminToken>,
    limits: atrion::EngineLimits,
    route_creation_rate: u32,
    route_creation_burst: u32,
    max_tasks_per_client: u32,
    ticket_ttl: Duration,
    dashboard_clients: usize,
    dashboard_auth: atrion_server::DashboardAuth,
    /// The pretend service `--demo` drives, if asked for.
    demo: Option<crate::demo::DemoArgs>,
}

/// A setting that is not valid: the key, where it came from, and why.
fn bad(key: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("setting `{key}`: {why}")
}

impl Settings {
    /// Flags and environment (already merged by clap) over the file over the defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let connections = connection_limits(args, &file, &ServerConfig::default().connections);
        let tokens_file = args.admin_tokens_file.clone().or(file.admin_tokens_file);
        let mut admin_tokens = match &tokens_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad("admin-tokens-file", format!("{}: {e}", path.display())))?;
                AdminToken::parse_list(&text)
                    .map_err(|e| bad("admin-tokens-file", format!("{}: {e}", path.display())))?
            }
            None => Vec::new(),
        };
        if let Ok(text) = std::env::var("ATRION_ADMIN_TOKENS") {
            for t in AdminToken::parse_list(&text).map_err(|e| bad("ATRION_ADMIN_TOKENS", e))? {
                if admin_tokens.iter().any(|o| o.name() == t.name()) {
                    return Err(bad("ATRION_ADMIN_TOKENS", format!("token name `{}` is also in the file", t.name())));
                }
                admin_tokens.push(t);
            }
        }
        let client_tokens = match args.client_tokens_file.clone().or_else(|| file.client_tokens_file.clone()) {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| bad("client-tokens-file", format!("{}: {e}", path.display())))?;
                AdminToken::parse_list(&text)
                    .map_err(|e| bad("client-tokens-file", format!("{}: {e}", path.display())))?
            }
            None => Vec::new(),
        };
        let demo = demo_args(
            args.demo || file.demo.unwrap_or(false),
            args.demo_healthy_secs.or(file.demo_healthy_secs),
            args.demo_failing_secs.or(file.demo_failing_secs),
        )?;
        let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        // The libraries own their defaults: the server's limits, the cluster's ids.
        let (server, sync) = (ServerConfig::default(), SyncConfig::default());
        let mut s = Settings {
            listen: args.listen.or(file.listen).unwrap_or(SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))),
            store: args.store.clone().or(file.store).unwrap_or_else(|| DEFAULT_STORE.to_owned()),
            node_id: args.node_id.clone().or(file.node_id).unwrap_or(sync.node_id),
            namespace: args.namespace.clone().or(file.namespace).unwrap_or(sync.namespace),
            admin_tokens,
            exposed_anyway: args.i_know_this_exposes_the_api || file.i_know_this_exposes_the_api.unwrap_or(false),
            dashboard: !(args.no_dashboard || file.no_dashboard.unwrap_or(false)),
            dashboard_routes: args
                .dashboard_routes
                .or(file.dashboard_routes)
                .unwrap_or(atrion_server::DashboardConfig::default().max_routes),
            dashboard_clients: args
                .dashboard_clients
                .or(file.dashboard_clients)
                .unwrap_or(atrion_server::DashboardConfig::default().max_clients),
            dashboard_auth: atrion_server::DashboardAuth::Open,
            metrics_routes: args.metrics_routes.or(file.metrics_routes).unwrap_or(100),
            log_format: args.log_format.or(file.log_format).unwrap_or(if on_terminal {
                LogFormat::Text
            } else {
                LogFormat::Json
            }),
            max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(server.max_body_bytes),
            max_batch: args.max_batch.or(file.max_batch).unwrap_or(server.max_batch),
            request_timeout: args
                .request_timeout_ms
                .or(file.request_timeout_ms)
                .map_or(server.request_timeout, Duration::from_millis),
            proxy: None,
            connections,
            allowed_hosts: if args.allowed_hosts.is_empty() {
                file.allowed_hosts.clone().unwrap_or_default()
            } else {
                args.allowed_hosts.clone()
            },
            cors_origins: if args.cors_origins.is_empty() {
                file.cors_origins.clone().unwrap_or_default()
            } else {
                args.cors_origins.clone()
            },
            client_tokens,
            otlp_endpoint: args.otlp_endpoint.clone().or(file.otlp_endpoint),
            policy_file: args.policy_file.clone().or(file.policy_file),
            encryption: match args.encryption_key_file.clone().or(file.encryption_key_file) {
                Some(path) => Some(atrion::EncryptionConfig::key_file(path)),
                None if std::env::var_os(atrion::crypt::KEYS_ENV).is_some() => Some(atrion::EncryptionConfig {
                    key_file: None,
                    key_env: Some(atrion::crypt::KEYS_ENV.to_owned()),
                    compress_above: None,
                    no_compression: false,
                }),
                None => None,
            },
            divergence_pulses: args
                .divergence_pulses
                .or(file.divergence_pulses)
                .unwrap_or(atrion_policy::PolicyConfig::default().divergence_after),
            auth: atrion_server::AuthLimits::default(),
            audit: atrion_policy::Retention::default(),
            max_policies: args
                .max_policies
                .or(file.max_policies)
                .unwrap_or(atrion_policy::Limits::default().max_policies),
            limits: args
                .max_routes
                .or(file.max_routes)
                .map_or_else(atrion::EngineLimits::default, atrion::EngineLimits::with_max_routes),
            route_creation_rate: args
                .route_creation_rate
                .or(file.route_creation_rate)
                .unwrap_or(server.route_creation_rate),
            route_creation_burst: args
                .route_creation_burst
                .or(file.route_creation_burst)
                .unwrap_or(server.route_creation_burst),
            max_tasks_per_client: args
                .max_tasks_per_client
                .or(file.max_tasks_per_client)
                .unwrap_or(server.max_tasks_per_client),
            ticket_ttl: args.ticket_ttl_ms.or(file.ticket_ttl_ms).map_or(server.ticket_ttl, Duration::from_millis),
            demo,
        };
        s.dashboard_auth = dashboard_auth(
            args.dashboard_auth.or(file.dashboard_auth),
            args.dashboard_tokens_file.as_deref().or(file.dashboard_tokens_file.as_deref()),
            s.listen.ip().is_loopback() || s.admin_tokens.is_empty(),
        )?;
        let (auth, audit) = (server.auth.clone(), atrion_policy::Retention::default());
        s.auth.failures = args.auth_failures.or(file.auth_failures).unwrap_or(auth.failures);
        s.auth.backoff = args.auth_backoff_ms.or(file.auth_backoff_ms).map_or(auth.backoff, Duration::from_millis);
        s.auth.max_backoff =
            args.auth_max_backoff_ms.or(file.auth_max_backoff_ms).map_or(auth.max_backoff, Duration::from_millis);
        s.auth.max_sources = args.auth_max_sources.or(file.auth_max_sources).unwrap_or(auth.max_sources);
        s.audit.max_entries = args.audit_max_entries.or(file.audit_max_entries).unwrap_or(audit.max_entries);
        s.audit.max_bytes = args.audit_max_bytes.or(file.audit_max_bytes).unwrap_or(audit.max_bytes);
        s.audit.max_age = args
            .audit_max_age_days
            .or(file.audit_max_age_days)
            .map_or(audit.max_age, |d| Duration::from_secs(d.saturating_mul(86_400)));
        let templates = if args.path_templates.is_empty() {
            file.path_templates.unwrap_or_default()
        } else {
            args.path_templates.clone()
        };
        match args.upstream.clone().or(file.upstream) {
            Some(upstream) => {
                let config = atrion_server::ProxyConfig::new(&upstream, &templates).map_err(|e| match e {
                    atrion_server::ProxyError::Template { .. } => bad("path-templates", e),
                    _ => bad("upstream", e),
                })?;
                let at = args
                    .proxy_listen
                    .or(file.proxy_listen)
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], DEFAULT_PROXY_PORT)));
                s.proxy = Some((at, config));
            }
            None if !templates.is_empty() => return Err(bad("path-templates", "they need an upstream")),
            None => {}
        }
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<()> {
        if !self.listen.ip().is_loopback() && self.admin_tokens.is_empty() && !self.exposed_anyway {
            return Err(bad(
                "listen",
                format!(
                    "{} is not a loopback address and no admin token is set; give tokens \
                     (admin-tokens-file or ATRION_ADMIN_TOKENS) or pass --i-know-this-exposes-the-api",
                    self.listen
                ),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(bad("max-body-bytes", format!("{} is under the least useful body, 1024", self.max_body_bytes)));
        }
        if self.max_batch == 0 {
            return Err(bad("max-batch", "must be at least 1"));
        }
        if self.request_timeout.is_zero() || self.request_timeout > Duration::from_secs(3_600) {
            return Err(bad("request-timeout-ms", "must be 1 ms to one hour"));
        }
        if let Some((at, _)) = &self.proxy
            && !at.ip().is_loopback()
            && !self.exposed_anyway
        {
            return Err(bad(
                "proxy-listen",
                format!("{at} is not a loopback address; pass --i-know-this-exposes-the-api to proxy there"),
            ));
        }
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(bad("otlp-endpoint", format!("`{e}` is not an http:// or https:// URL")));
        }
        if !(1..=1_000_000).contains(&self.dashboard_routes) {
            return Err(bad("dashboard-routes", format!("{}: expected 1 to 1000000", self.dashboard_routes)));
        }
        if !(1..=100_000).contains(&self.dashboard_clients) {
            return Err(bad("dashboard-clients", format!("{}: expected 1 to 100000", self.dashboard_clients)));
        }
        if matches!(self.dashboard_auth, atrion_server::DashboardAuth::Admin) && self.admin_tokens.is_empty() {
            return Err(bad("dashboard-auth", "`admin` needs admin tokens (admin-tokens-file or ATRION_ADMIN_TOKENS)"));
        }
        if self.divergence_pulses == 0 {
            return Err(bad("divergence-pulses", "must be at least 1"));
        }
        if self.auth.failures == 0 {
            return Err(bad("auth-failures", "must be at least 1"));
        }
        if self.auth.backoff.is_zero() || self.auth.backoff > self.auth.max_backoff {
            return Err(bad("auth-backoff-ms", "must be at least 1 ms and at most auth-max-backoff-ms"));
        }
        if self.auth.max_backoff > Duration::from_secs(86_400) {
            return Err(bad("auth-max-backoff-ms", "at most one day"));
        }
        if !(1..=10_000_000).contains(&self.auth.max_sources) {
            return Err(bad("auth-max-sources", "expected 1 to 10000000"));
        }
        if !(1..=10_000_000).contains(&self.audit.max_entries) {
            return Err(bad("audit-max-entries", "expected 1 to 10000000"));
        }
        if self.audit.max_bytes < 64 * 1024 {
            return Err(bad("audit-max-bytes", "at least 65536"));
        }
        if self.audit.max_age.is_zero() {
            return Err(bad("audit-max-age-days", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.max_policies) {
            return Err(bad("max-policies", "expected 1 to 100000"));
        }
        let c = &self.connections;
        for (key, d) in [
            ("header-timeout-ms", c.header_timeout),
            ("keep-alive-timeout-ms", c.keep_alive_timeout),
            ("send-timeout-ms", c.send_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(3_600) {
                return Err(bad(key, "must be 1 ms to one hour"));
            }
        }
        if c.max_connections == 0 || c.max_per_peer == 0 {
            return Err(bad("max-connections / max-connections-per-peer", "must be at least 1"));
        }
        if c.hard_cap() > 1_000_000 {
            return Err(bad("max-connections / reserved-connections", "at most 1000000 connections in all"));
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)) {
                return Err(bad("allowed-host", format!("`{h}` is not a host name, or name:port")));
            }
        }
        for o in &self.cors_origins {
            let rest = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
                return Err(bad("cors-origin", format!("`{o}` is not an origin (scheme://host[:port])")));
            }
        }
        if self.metrics_routes > 100_000 {
            return Err(bad("metrics-routes", "at most 100000 route labels"));
        }
        if !(1..=16_777_216).contains(&self.limits.max_routes) {
            return Err(bad("max-routes", format!("{}: expected 1 to 16777216", self.limits.max_routes)));
        }
        if self.route_creation_rate > 0 && self.route_creation_burst == 0 {
            return Err(bad("route-creation-burst", "must be at least 1 while route-creation-rate is set"));
        }
        if self.ticket_ttl < Duration::from_millis(1) || self.ticket_ttl > Duration::from_secs(86_400) {
            return Err(bad("ticket-ttl-ms", "must be 1 ms to one day"));
        }
        if self.demo.is_some() && !self.client_tokens.is_empty() {
            return Err(bad(
                "demo",
                "the pretend service calls the API without a client token: drop client-tokens-file",
            ));
        }
        Ok(())
    }

    fn server_config(&self, metrics: atrion_server::MetricsRender) -> ServerConfig {
        let mut c = ServerConfig::default();
        c.max_body_bytes = self.max_body_bytes;
        c.max_batch = self.max_batch;
        c.request_timeout = self.request_timeout;
        c.metrics = Some(metrics);
        c.admin_tokens = self.admin_tokens.clone();
        c.auth = self.auth.clone();
        c.connections = self.connections.clone();
        c.allowed_hosts = self.allowed_hosts.clone();
        c.cors_origins = self.cors_origins.clone();
        c.client_tokens = self.client_tokens.clone();
        c.route_creation_rate = self.route_creation_rate;
        c.route_creation_burst = self.route_creation_burst;
        c.max_tasks_per_client = self.max_tasks_per_client;
        c.ticket_ttl = self.ticket_ttl;
        c.dashboard = self.dashboard.then(|| {
            let mut d = atrion_server::DashboardConfig::default();
            d.max_routes = self.dashboard_routes;
            d.max_clients = self.dashboard_clients;
            d.auth = self.dashboard_auth.clone();
            d
        });
        c
    }
}

/// Who may read the dashboard: as asked, or by default anyone when `open_by_default`
/// (on loopback, or with no admin token to ask for), else an admin.
fn dashboard_auth(
    asked: Option<DashboardAuthArg>,
    tokens_file: Option<&Path>,
    open_by_default: bool,
) -> Result<atrion_server::DashboardAuth> {
    use atrion_server::DashboardAuth;
    match (asked, tokens_file) {
        (Some(DashboardAuthArg::None | DashboardAuthArg::Admin), Some(_)) => {
            Err(bad("dashboard-tokens-file", "it goes with --dashboard-auth tokens"))
        }
        (Some(DashboardAuthArg::Tokens), None) => Err(bad("dashboard-auth", "`tokens` needs --dashboard-tokens-file")),
        (Some(DashboardAuthArg::Tokens) | None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad("dashboard-tokens-file", format!("{}: {e}", path.display())))?;
            let tokens = AdminToken::parse_list(&text)
                .map_err(|e| bad("dashboard-tokens-file", format!("{}: {e}", path.display())))?;
            if tokens.is_empty() {
                return Err(bad("dashboard-tokens-file", format!("{}: no token", path.display())));
            }
            Ok(DashboardAuth::Tokens(tokens))
        }
        (Some(DashboardAuthArg::None), None) => Ok(DashboardAuth::Open),
        (Some(DashboardAuthArg::Admin), None) => Ok(DashboardAuth::Admin),
        (None, None) if open_by_default => Ok(DashboardAuth::Open),
        (None, None) => Ok(DashboardAuth::Admin),
    }
}

/// The pretend service of `--demo`: `atrion demo-traffic`'s defaults, with the phases asked
/// for, quiet (the sidecar logs the mode transitions).
fn demo_args(on: bool, healthy_secs: Option<f64>, failing_secs: Option<f64>) -> Result<Option<crate::demo::DemoArgs>> {
    if !on {
        return match (healthy_secs, failing_secs) {
            (None, None) => Ok(None),
            (Some(_), _) => Err(bad("demo-healthy-secs", "it goes with --demo")),
            (None, Some(_)) => Err(bad("demo-failing-secs", "it goes with --demo")),
        };
    }
    let mut demo = crate::demo::DemoArgs::defaults()?;
    demo.print_every = 0.0;
    for (key, asked, phase) in [
        ("demo-healthy-secs", healthy_secs, &mut demo.healthy_secs),
        ("demo-failing-secs", failing_secs, &mut demo.failing_secs),
    ] {
        if let Some(secs) = asked {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(bad(key, format!("{secs}: expected a positive number of seconds")));
            }
            *phase = secs;
        }
    }
    crate::demo::check(&demo).map_err(|e| bad("demo", e))?;
    Ok(Some(demo))
}

fn read_file(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --config {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
}

/// A store's config from its URL, in the cluster's namespace: the store at start, and the
/// one an admin switches to.
fn store_config(url: &str, namespace: &str) -> Result<atrion::StoreConfig, atrion::AtrionError> {
    let mut config: atrion::StoreConfig = url.parse()?;
    config.set_namespace(namespace);
    Ok(config)
}

/// Runs the sidecar with resolved settings until SIGTERM or ctrl-c.
pub fn run(s: &Settings) -> Result<ExitCode> {
    let store = store_config(&s.store, &s.namespace)
        .map_err(|e| bad("store", format!("{}: {e}", atrion::redacted_url(&s.store))))?;
    let mut sync = SyncConfig::for_node(&s.node_id);
    sync.namespace = s.namespace.clone();
    sync.validate().map_err(|e| bad("node-id / namespace", e))?;
    let pulse = sync.pulse;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let shown = atrion::redacted_url(&s.store);
        let built = store.build().await.with_context(|| format!("opening the store {shown}"))?;
        // Encryption at rest: the keys are checked against the store here (a wrong or
        // missing key stops the start, naming the key id).
        let built = match &s.encryption {
            Some(e) => e.wrap(built).await.with_context(|| format!("opening the store {shown} encrypted"))?,
            None => built,
        };
        let encryption = s.encryption.clone();
        // The state goes through a service, so that an admin can switch stores at run time.
        let service = atrion::state::StateService::builder().backend_arc(shown.clone(), built).build()?;
        let namespace = s.namespace.clone();
        let open: atrion_server::OpenStore = Arc::new(move |url: String| {
            let namespace = namespace.clone();
            let encryption = encryption.clone();
            Box::pin(async move {
                let config = store_config(&url, &namespace).map_err(|e| e.to_string())?;
                let built = config.build().await.map_err(|e| e.to_string())?;
                // A store switched to is sealed with the same keys.
                match &encryption {
                    Some(e) => e.wrap(built).await.map_err(|e| e.to_string()),
                    None => Ok(built),
                }
            })
        });
        let switch = atrion_server::StoreSwitch { service: service.clone(), open };
        let metrics = install_metrics()?;
        let observer = atrion_server::SidecarObserver::new().with_metrics_observer(
            atrion::metrics::MetricsObserver::new(s.metrics_routes).with_idle_timeout(ROUTE_SERIES_IDLE),
        );
        let atrion = Arc::new(
            atrion::Atrion::builder()
                .observer(observer)
                .limits(s.limits.clone())
                .store_arc(Arc::new(service.clone()))
                .sync(sync)
                .build()?,
        );
        atrion.connect().await.context("loading what the store knows")?;
        let mut pcfg = atrion_policy::PolicyConfig::default();
        pcfg.every = pulse;
        pcfg.divergence_after = s.divergence_pulses;
        pcfg.audit = s.audit.clone();
        pcfg.limits.max_policies = s.max_policies;
        let policy = atrion_policy::PolicyNode::start(
            atrion.engine().clone(),
            Arc::new(service.clone()),
            atrion_policy::PolicyKeys::new(&s.namespace, &s.node_id),
            atrion.clock().clone(),
            pcfg,
        )
        .await;
        if let Some(path) = &s.policy_file {
            tokio::spawn(crate::policy::watch_file(policy.clone(), path.clone()));
        }
        #[cfg(feature = "otlp")]
        let meter = match &s.otlp_endpoint {
            Some(endpoint) => Some(crate::otlp::meter(endpoint, atrion.clone(), s.metrics_routes)?),
            None => None,
        };
        // A long accept queue: a burst of connections must not make the kernel drop handshakes.
        let listener = atrion_server::bind(s.listen).with_context(|| format!("listening on {}", s.listen))?;
        let addr = listener.local_addr()?;
        let proxy_listener = match &s.proxy {
            Some((at, _)) => Some(atrion_server::bind(*at).with_context(|| format!("listening on {at} (proxy)"))?),
            None => None,
        };
        // Before the announcement: a SIGTERM sent as soon as it is read must not be lost.
        let shutdown = atrion_server::shutdown_signal();
        let tokens: Vec<&str> = s.admin_tokens.iter().map(AdminToken::name).collect();
        println!("atrion serve: listening on http://{addr} (node {}, store {shown})", s.node_id);
        if s.dashboard {
            println!("atrion serve: the dashboard is at http://{addr}/");
        }
        tracing::info!(%addr, node = %s.node_id, store = %shown, admin_tokens = ?tokens, "atrion serve started");
        if tokens.is_empty() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the API is exposed beyond loopback without admin tokens");
        }
        if s.client_tokens.is_empty() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "decisions are open to anyone who reaches the API; --client-tokens-file closes them");
        }
        let mut connections = s.connections.clone();
        fit_fd_limit(&mut connections, if s.proxy.is_some() { 2 } else { 1 });
        connections.release_memory = release_memory();
        // One signal stops both the API and the proxy.
        let stop = tokio_util::sync::CancellationToken::new();
        let proxy = match (proxy_listener, &s.proxy) {
            (Some(proxy_listener), Some((_, config))) => {
                let proxy_addr = proxy_listener.local_addr()?;
                println!("atrion serve: proxying http://{proxy_addr} to {}", config.upstream);
                tracing::info!(%proxy_addr, upstream = %config.upstream, "proxy mode");
                let mut config = config.clone();
                config.policy = Some(policy.clone());
                let app = atrion_server::proxy_router(atrion.clone(), &config);
                let stopped = stop.clone().cancelled_owned();
                let limits = connections.clone();
                Some(tokio::spawn(
                    async move { atrion_server::serve_router(proxy_listener, app, &limits, stopped).await },
                ))
            }
            _ => None,
        };
        let signalled = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            signalled.cancel();
        });
        if let Some(demo) = s.demo.clone() {
            // Through the API, as a client on this machine would call it.
            let ip = match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            let base = format!("http://{}", SocketAddr::new(ip, addr.port()));
            let http = crate::demo::client()?;
            // It stops first, so that the drain is not fed new requests.
            let stopped = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = crate::demo::drive(&demo, &base, &http, "atrion serve --demo") => {}
                    () = stopped.cancelled() => {}
                }
            });
        }
        let proxy_stopped = async move {
            if let Some(task) = proxy {
                let _ = task.await;
            }
        };
        let mut config = s.server_config(metrics);
        config.connections = connections;
        config.store_switch = Some(switch);
        config.policy = Some(policy.clone());
        #[cfg(feature = "otlp")]
        let flush = meter.clone();
        atrion_server::serve(listener, atrion, &config, async move {
            stop.cancelled().await;
            // The proxy drains first: its requests still report to the engine.
            proxy_stopped.await;
            // One export while the cluster sync is still there to read (it leaves next).
            #[cfg(feature = "otlp")]
            if let Some(meter) = flush {
                let _ = tokio::task::spawn_blocking(move || meter.force_flush()).await;
            }
        })
        .await?;
        policy.shutdown().await;
        #[cfg(feature = "otlp")]
        if let Some(meter) = meter {
            let _ = meter.shutdown();
        }
        println!("atrion serve: stopped");
        tracing::info!("atrion serve stopped");
        Ok(ExitCode::SUCCESS)
    })
}
