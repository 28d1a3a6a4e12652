//! `atrion serve`: the sidecar. The HTTP API of `atrion-server` over an `Atrion` whose state
//! lives in a store (by default an embedded, crash-safe file in `./atrion-data`).
//!
//! Every setting comes from, in this order of precedence: a flag, an `ATRION_*` environment
//! variable, the TOML file given by `--config` (keys named as the flags, without the dashes
//! in front: `node-id = "a"`), the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use atrion::state::SyncConfig;
use atrion_server::{AdminToken, ServerConfig};
use clap::ValueEnum;
use serde::Deserialize;

/// The port `atrion serve` listens on by default, on loopback.
pub const DEFAULT_PORT: u16 = 7878;

/// The store `atrion serve` uses by default.
pub const DEFAULT_STORE: &str = "file:./atrion-data/state.redb";

/// Arguments of `atrion serve`. Each may also come from the environment or the file.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file holding any of the settings below (keys as the flags: `node-id = "a"`).
    #[arg(long, env = "ATRION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to listen [default: 127.0.0.1:7878]. An address that is not loopback needs an
    /// admin token, or `--i-know-this-exposes-the-api`.
    #[arg(long, env = "ATRION_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The store: `memory`, `file:PATH`, `redis://…`, `rediss://…`, `postgres://…`
    /// [default: file:./atrion-data/state.redb].
    #[arg(long, env = "ATRION_STORE")]
    pub store: Option<String>,
    /// This node's id in the cluster, 1 to 64 of `[A-Za-z0-9._-]` [default: node-1].
    #[arg(long, env = "ATRION_NODE_ID")]
    pub node_id: Option<String>,
    /// The cluster's namespace [default: atrion].
    #[arg(long, env = "ATRION_NAMESPACE")]
    pub namespace: Option<String>,
    /// A file of admin tokens, one `name:secret` per line (`#` starts a comment).
    #[arg(long, env = "ATRION_ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<PathBuf>,
    /// Listen on a non-loopback address without an admin token.
    #[arg(long, env = "ATRION_I_KNOW_THIS_EXPOSES_THE_API")]
    pub i_know_this_exposes_the_api: bool,
    /// Routes that get their own `route` label in `/metrics`; the rest are `other`
    /// [default: 100].
    #[arg(long, env = "ATRION_METRICS_ROUTES")]
    pub metrics_routes: Option<usize>,
    /// Log lines as JSON or as text [default: json when stderr is not a terminal].
    #[arg(long, env = "ATRION_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// The largest request body, in bytes [default: 1048576].
    #[arg(long, env = "ATRION_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// The most items in one `/v1/batch` [default: 1000].
    #[arg(long, env = "ATRION_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// The longest a request may take, in milliseconds [default: 10000].
    #[arg(long, env = "ATRION_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Proxy mode: also forward requests to this service (`http://host:port`), deciding on
    /// each and shedding with 503 + Retry-After.
    #[arg(long, env = "ATRION_UPSTREAM")]
    pub upstream: Option<String>,
    /// Where proxy mode listens [default: 127.0.0.1:7879].
    #[arg(long, env = "ATRION_PROXY_LISTEN")]
    pub proxy_listen: Option<SocketAddr>,
    /// Path templates of proxy mode, such as `/users/{id}`, comma-separated or the flag
    /// repeated (in the file, a list): matching paths share one route.
    #[arg(long, env = "ATRION_PATH_TEMPLATES", value_delimiter = ',')]
    pub path_templates: Vec<String>,
    /// Export traces and metrics over OTLP/HTTP to this collector (`http://host:4318`).
    #[arg(long, env = "ATRION_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// A policy file (TOML: `[[policies]]` and `[[bans]]`), watched: each valid edit
    /// replaces the file's layer of the cluster's desired state; an invalid one is logged
    /// and the previous policies stay.
    #[arg(long, env = "ATRION_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    /// Pulses a node may stay behind desired state before a divergence alert [default: 5].
    #[arg(long, env = "ATRION_DIVERGENCE_PULSES")]
    pub divergence_pulses: Option<u32>,
    /// Serve no dashboard at `/` (and no `/v1/dashboard` feed): the API alone.
    #[arg(long, env = "ATRION_NO_DASHBOARD")]
    pub no_dashboard: bool,
    /// The most routes the dashboard follows; the rest are counted, not shown
    /// [default: 2000].
    #[arg(long, env = "ATRION_DASHBOARD_ROUTES")]
    pub dashboard_routes: Option<usize>,
    /// The longest a request head may take to arrive, in milliseconds; then the connection
    /// is closed [default: 10000].
    #[arg(long, env = "ATRION_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// The longest a connection may stay idle between requests, in milliseconds
    /// [default: 75000].
    #[arg(long, env = "ATRION_KEEP_ALIVE_TIMEOUT_MS")]
    pub keep_alive_timeout_ms: Option<u64>,
    /// Open connections served in full, per listener [default: 4096, lowered to what the
    /// file-descriptor limit allows].
    #[arg(long, env = "ATRION_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections past the cap that still serve /healthz, /readyz and /v1/admin/*
    /// [default: 64].
    #[arg(long, env = "ATRION_RESERVED_CONNECTIONS")]
    pub reserved_connections: Option<usize>,
    /// Open connections one peer address may hold [default: 1024].
    #[arg(long, env = "ATRION_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<usize>,
    /// A host name the API answers for besides the listen address: `name` or `name:port`,
    /// repeated or comma-separated; other hosts get 421 (DNS rebinding).
    #[arg(long = "allowed-host", env = "ATRION_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// An origin (`https://app.example`) whose pages may call the API cross-origin (CORS),
    /// repeated or comma-separated; other browser cross-origin requests get 403.
    #[arg(long = "cors-origin", env = "ATRION_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// A file of client tokens (`name:secret` per line, as admin tokens) that decide,
    /// report and batch then require.
    #[arg(long, env = "ATRION_CLIENT_TOKENS_FILE")]
    pub client_tokens_file: Option<PathBuf>,
}

/// The port proxy mode listens on by default, on loopback.
pub const DEFAULT_PROXY_PORT: u16 = 7879;

/// `--log-format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

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
    divergence_pulses: Option<u32>,
    no_dashboard: Option<bool>,
    dashboard_routes: Option<usize>,
    header_timeout_ms: Option<u64>,
    keep_alive_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    reserved_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
    allowed_hosts: Option<Vec<String>>,
    cors_origins: Option<Vec<String>>,
    client_tokens_file: Option<PathBuf>,
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
    divergence_pulses: u32,
    dashboard: bool,
    dashboard_routes: usize,
    connections: atrion_server::ConnLimits,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    client_tokens: Vec<AdminToken>,
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
            divergence_pulses: args
                .divergence_pulses
                .or(file.divergence_pulses)
                .unwrap_or(atrion_policy::PolicyConfig::default().divergence_after),
        };
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
        if self.divergence_pulses == 0 {
            return Err(bad("divergence-pulses", "must be at least 1"));
        }
        let c = &self.connections;
        for (key, d) in [("header-timeout-ms", c.header_timeout), ("keep-alive-timeout-ms", c.keep_alive_timeout)] {
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
        Ok(())
    }

    fn server_config(&self, metrics: atrion_server::MetricsRender) -> ServerConfig {
        let mut c = ServerConfig::default();
        c.max_body_bytes = self.max_body_bytes;
        c.max_batch = self.max_batch;
        c.request_timeout = self.request_timeout;
        c.metrics = Some(metrics);
        c.admin_tokens = self.admin_tokens.clone();
        c.connections = self.connections.clone();
        c.allowed_hosts = self.allowed_hosts.clone();
        c.cors_origins = self.cors_origins.clone();
        c.client_tokens = self.client_tokens.clone();
        c.dashboard = self.dashboard.then(|| {
            let mut d = atrion_server::DashboardConfig::default();
            d.max_routes = self.dashboard_routes;
            d
        });
        c
    }
}

/// The connection limits: flags over the file over the server's defaults.
fn connection_limits(
    args: &ServeArgs,
    file: &FileSettings,
    default: &atrion_server::ConnLimits,
) -> atrion_server::ConnLimits {
    let mut c = default.clone();
    if let Some(ms) = args.header_timeout_ms.or(file.header_timeout_ms) {
        c.header_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.keep_alive_timeout_ms.or(file.keep_alive_timeout_ms) {
        c.keep_alive_timeout = Duration::from_millis(ms);
    }
    c.max_connections = args.max_connections.or(file.max_connections).unwrap_or(c.max_connections);
    c.reserved = args.reserved_connections.or(file.reserved_connections).unwrap_or(c.reserved);
    c.max_per_peer = args.max_connections_per_peer.or(file.max_connections_per_peer).unwrap_or(c.max_per_peer);
    c
}

/// File descriptors kept beside the connections: the store, logs, the proxy's upstream
/// pool, the cluster's clients.
const SPARE_FDS: u64 = 256;

/// Makes room for `needed` open connections: raises the soft file-descriptor limit (up to
/// the hard one) when it is lower, and otherwise lowers the connection caps to fit, saying so.
/// Connections past the limit would fail to be accepted, and `/healthz` with them.
fn fit_fd_limit(limits: &mut atrion_server::ConnLimits, listeners: u64) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let needed = (limits.hard_cap() as u64).saturating_mul(listeners).saturating_add(SPARE_FDS);
        let mut rl = getrlimit(Resource::Nofile);
        let Some(soft) = rl.current else { return };
        if soft >= needed {
            return;
        }
        let raised = rl.maximum.map_or(needed, |hard| hard.min(needed));
        if raised > soft {
            rl.current = Some(raised);
            match setrlimit(Resource::Nofile, rl) {
                Ok(()) => tracing::info!(from = soft, to = raised, "raised the file-descriptor limit"),
                Err(e) => tracing::warn!(error = %e, "the file-descriptor limit could not be raised"),
            }
        }
        let have = getrlimit(Resource::Nofile).current.unwrap_or(soft);
        if have < needed {
            let per_listener = usize::try_from(have.saturating_sub(SPARE_FDS) / listeners).unwrap_or(usize::MAX);
            limits.reserved = limits.reserved.min(per_listener / 2);
            limits.max_connections = per_listener.saturating_sub(limits.reserved).max(1);
            tracing::warn!(
                fd_limit = have,
                max_connections = limits.max_connections,
                reserved_connections = limits.reserved,
                "the file-descriptor limit is below what the connection caps need: the caps were lowered"
            );
        }
    }
}

/// glibc keeps freed memory in its arenas: after a flood of connections has left,
/// `malloc_trim` hands it back (measured: 82 MB held after 4,160 connections closed, 33 MB
/// after the trim, from 31 MB before them).
fn release_memory() -> Option<fn()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        fn trim() {
            // SAFETY: malloc_trim only walks and trims glibc's own arenas, under their locks.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        Some(trim)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

fn read_file(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --config {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
}

/// Installs the Prometheus recorder (before the engine's observer registers its handles)
/// and keeps its histograms drained.
fn install_metrics() -> Result<atrion_server::MetricsRender> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(atrion_server::HTTP_DURATION.to_owned()), &buckets)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(atrion_server::MetricsRender(Arc::new(move || handle.render())))
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
        // The state goes through a service, so that an admin can switch stores at run time.
        let service = atrion::state::StateService::builder().backend_arc(shown.clone(), built).build()?;
        let namespace = s.namespace.clone();
        let open: atrion_server::OpenStore = Arc::new(move |url: String| {
            let namespace = namespace.clone();
            Box::pin(async move {
                let config = store_config(&url, &namespace).map_err(|e| e.to_string())?;
                config.build().await.map_err(|e| e.to_string())
            })
        });
        let switch = atrion_server::StoreSwitch { service: service.clone(), open };
        let metrics = install_metrics()?;
        let observer = atrion_server::SidecarObserver::new().with_metrics(s.metrics_routes);
        let atrion = Arc::new(
            atrion::Atrion::builder().observer(observer).store_arc(Arc::new(service.clone())).sync(sync).build()?,
        );
        atrion.connect().await.context("loading what the store knows")?;
        let mut pcfg = atrion_policy::PolicyConfig::default();
        pcfg.every = pulse;
        pcfg.divergence_after = s.divergence_pulses;
        let policy = atrion_policy::PolicyNode::start(
            atrion.engine().clone(),
            Arc::new(service.clone()),
            atrion::state::ClusterKeys::new(&s.namespace, &s.node_id),
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
