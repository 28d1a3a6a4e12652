//! The arguments of `atrion serve`: its flags, each of which may also come from the
//! environment (`ATRION_*`) or the `--config` file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Deserialize;

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
    /// [default: file:./atrion-data/state.redb]. A `file:` store's folder is created at
    /// start (the operator chose it); `POST /v1/admin/store` creates none.
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
    /// Encrypt the store at rest with the keys of this file (lines `id:base64key`, newest
    /// last; see `atrion::crypt`). Without it, the keys of the variable
    /// `ATRION_ENCRYPTION_KEYS` (same lines, `;`-separated) when it is set. A wrong or
    /// missing key refuses to start, naming the key id the store needs.
    #[arg(long, env = "ATRION_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
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
    /// Failed admin authentications a source may make before it must wait (429 with
    /// Retry-After) [default: 20].
    #[arg(long, env = "ATRION_AUTH_FAILURES")]
    pub auth_failures: Option<u32>,
    /// The first wait of a source past its failures, in ms; it doubles with each further
    /// failure [default: 1000].
    #[arg(long, env = "ATRION_AUTH_BACKOFF_MS")]
    pub auth_backoff_ms: Option<u64>,
    /// The longest wait of a failing source, in ms; a source without failures this long
    /// starts afresh [default: 60000].
    #[arg(long, env = "ATRION_AUTH_MAX_BACKOFF_MS")]
    pub auth_max_backoff_ms: Option<u64>,
    /// Sources of failed authentications tracked at once; past it, new ones share one
    /// [default: 10000].
    #[arg(long, env = "ATRION_AUTH_MAX_SOURCES")]
    pub auth_max_sources: Option<usize>,
    /// The most audit entries kept (the oldest go first) [default: 10000].
    #[arg(long, env = "ATRION_AUDIT_MAX_ENTRIES")]
    pub audit_max_entries: Option<usize>,
    /// The most bytes of audit entries kept; one entry takes at most an eighth
    /// [default: 67108864].
    #[arg(long, env = "ATRION_AUDIT_MAX_BYTES")]
    pub audit_max_bytes: Option<u64>,
    /// The oldest audit entry kept, in days [default: 90].
    #[arg(long, env = "ATRION_AUDIT_MAX_AGE_DAYS")]
    pub audit_max_age_days: Option<u64>,
    /// The most policies in one layer of desired state (a larger set is refused with 422)
    /// [default: 5000].
    #[arg(long, env = "ATRION_MAX_POLICIES")]
    pub max_policies: Option<usize>,
    /// The longest a request head may take to arrive, in milliseconds; then the connection
    /// is closed [default: 10000].
    #[arg(long, env = "ATRION_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// The longest a connection may stay idle between requests, in milliseconds
    /// [default: 75000].
    #[arg(long, env = "ATRION_KEEP_ALIVE_TIMEOUT_MS")]
    pub keep_alive_timeout_ms: Option<u64>,
    /// The longest an answer may wait for a client that takes none of its bytes, in
    /// milliseconds; then the connection is closed [default: 60000].
    #[arg(long, env = "ATRION_SEND_TIMEOUT_MS")]
    pub send_timeout_ms: Option<u64>,
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
    /// The most routes tracked one by one; past it, idle routes are evicted and new ones
    /// are decided on no state (`untracked`) [default: 65536].
    #[arg(long, env = "ATRION_MAX_ROUTES")]
    pub max_routes: Option<usize>,
    /// New routes one client (its `X-Atrion-Client`, else its address) may create per
    /// second; past its budget, `429` with `Retry-After`; 0: no limit [default: 100].
    #[arg(long, env = "ATRION_ROUTE_CREATION_RATE")]
    pub route_creation_rate: Option<u32>,
    /// The most new routes one client may create at once [default: 1000].
    #[arg(long, env = "ATRION_ROUTE_CREATION_BURST")]
    pub route_creation_burst: Option<u32>,
    /// The most live task leases (`POST /v1/tasks`) one client may hold at once; past it,
    /// `429`; 0: only the node's bound of 65536 [default: 1024].
    #[arg(long, env = "ATRION_MAX_TASKS_PER_CLIENT")]
    pub max_tasks_per_client: Option<u32>,
    /// How long a decision's ticket may be reported by, in milliseconds [default: 300000].
    #[arg(long, env = "ATRION_TICKET_TTL_MS")]
    pub ticket_ttl_ms: Option<u64>,
    /// The most dashboard feeds open at once; past it `503` with `Retry-After`
    /// [default: 64].
    #[arg(long, env = "ATRION_DASHBOARD_CLIENTS")]
    pub dashboard_clients: Option<usize>,
    /// Who may read the dashboard's data (feed, route pages, charts): `none`, `admin` (an
    /// admin token), or `tokens` (a token of --dashboard-tokens-file, or an admin token)
    /// [default: none on loopback, admin beyond it when admin tokens are set].
    #[arg(long, env = "ATRION_DASHBOARD_AUTH", value_enum)]
    pub dashboard_auth: Option<DashboardAuthArg>,
    /// A file of read-only dashboard tokens, one `name:secret` per line; implies
    /// `--dashboard-auth tokens`.
    #[arg(long, env = "ATRION_DASHBOARD_TOKENS_FILE")]
    pub dashboard_tokens_file: Option<PathBuf>,
    /// Drive this sidecar with a pretend service, in this process, as `atrion demo-traffic`
    /// does: six routes at 200 requests/s through the API, `GET /search` failing now and
    /// then, so that the dashboard shows a route trip open and recover. A demo: not for a
    /// sidecar that guards a real service (its routes share the node's state).
    #[arg(long, env = "ATRION_DEMO")]
    pub demo: bool,
    /// With --demo: the seconds `GET /search` is healthy between failures [default: 30].
    #[arg(long, env = "ATRION_DEMO_HEALTHY_SECS")]
    pub demo_healthy_secs: Option<f64>,
    /// With --demo: the seconds each failure of `GET /search` lasts [default: 20].
    #[arg(long, env = "ATRION_DEMO_FAILING_SECS")]
    pub demo_failing_secs: Option<f64>,
}

/// `--dashboard-auth`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DashboardAuthArg {
    /// Anyone who reaches the server.
    None,
    /// An admin token.
    Admin,
    /// A read-only token of `--dashboard-tokens-file`, or an admin token.
    Tokens,
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
