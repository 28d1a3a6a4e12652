//! `atrion policy`, `atrion state` and `atrion audit`: steer a running cluster through a
//! sidecar's API, or straight through its store; and the policy file watcher of
//! `atrion serve`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use atrion_policy::{AuditEntry, Ban, Change, Cluster, Limits, PolicyKeys, PolicyNode, Source, Validator};
use serde_json::Value;

/// Where the command goes: a sidecar, or a store.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// A sidecar's URL (`http://127.0.0.1:7878`).
    #[arg(long, env = "ATRION_SERVER", conflicts_with = "store")]
    server: Option<String>,
    /// The admin token's secret, for a sidecar's admin endpoints.
    #[arg(long, env = "ATRION_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A store, read and written directly: `redis://…`, `postgres://…`, `file:PATH`.
    #[arg(long, env = "ATRION_STORE")]
    store: Option<String>,
    /// The cluster's namespace in the store.
    #[arg(long, env = "ATRION_NAMESPACE", default_value = atrion::state::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The store's encryption key file (lines `id:base64key`, newest last), for a store
    /// written by `atrion serve --encryption-key-file`.
    #[arg(long, env = "ATRION_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Who the audit trail names for a change written to a store directly.
    #[arg(long = "as", default_value = "cli")]
    who: String,
    /// The physics the nodes run (`atrion config` prints one), to validate against
    /// [default: the default model's].
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `atrion policy`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCmd {
    /// Runs a policy file through the validation pipeline, offline: every issue with its
    /// path; exit status 1 when any. For CI pipelines.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// The physics the nodes run (TOML), to validate against.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replaces the API's policies and bans with a file's (TOML or JSON).
    Apply {
        /// The file.
        file: PathBuf,
        /// Only if desired state is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Prints the desired state.
    Get {
        #[command(flatten)]
        target: Target,
    },
    /// Removes the API's policy on a pattern.
    Delete {
        /// The pattern.
        route: String,
        /// Only if desired state is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Bans a route pattern, a client key, or both, on every node for a while.
    Ban {
        /// The routes (a pattern).
        #[arg(long)]
        route: Option<String>,
        /// The client key.
        #[arg(long)]
        client: Option<String>,
        /// For how many seconds.
        #[arg(long = "for")]
        for_s: f64,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Lifts a ban.
    Unban {
        /// The ban's route pattern.
        #[arg(long)]
        route: Option<String>,
        /// The ban's client key.
        #[arg(long)]
        client: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// `atrion state`
#[derive(Debug, clap::Subcommand)]
pub enum StateCmd {
    /// Desired, applicable and current state per node (and a sidecar's alerts).
    Dump {
        #[command(flatten)]
        target: Target,
    },
    /// What each node runs that differs from desired.
    Diff {
        #[command(flatten)]
        target: Target,
    },
    /// The history of applied changes, newest first.
    History {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Moves every value of an encrypted store sealed under an older key to the newest key
    /// of the key file (key rotation), with progress; run it again to resume (values already
    /// under the newest key are only read).
    Reencrypt {
        /// The store: `redis://…`, `postgres://…`, `file:PATH`.
        #[arg(long, env = "ATRION_STORE")]
        store: String,
        /// The cluster's namespace in the store.
        #[arg(long, env = "ATRION_NAMESPACE", default_value = atrion::state::DEFAULT_NAMESPACE)]
        namespace: String,
        /// The key file: lines `id:base64key`, newest last (the newest seals).
        #[arg(long, env = "ATRION_ENCRYPTION_KEY_FILE")]
        encryption_key_file: PathBuf,
        /// Values per round trip.
        #[arg(long, default_value_t = 256)]
        chunk: usize,
    },
}

/// `atrion state reencrypt`
async fn reencrypt(store: &str, namespace: &str, key_file: &Path, chunk: usize) -> Result<ExitCode> {
    use atrion::crypt::{CryptOptions, EncryptedStore, Keyring};
    let mut config: atrion::StoreConfig = store.parse()?;
    config.set_namespace(namespace);
    let shown = atrion::redacted_url(store);
    let inner = config.build().await.with_context(|| format!("opening {shown}"))?;
    let ring = Arc::new(Keyring::from_file(key_file)?);
    let newest = ring.newest_id().to_owned();
    let store = EncryptedStore::open(inner, ring, CryptOptions::default())
        .await
        .with_context(|| format!("opening {shown} encrypted"))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} re-encrypting [{bar:40}] {pos}/{len} values")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = atrion::crypt::reencrypt(&store, chunk, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await
    .context("re-encrypting (run it again to resume)")?;
    bar.finish_and_clear();
    print(&serde_json::json!({
        "newest_key": newest,
        "scanned": report.scanned,
        "resealed": report.resealed,
        "already_newest": report.current,
        "raced": report.raced,
    }))
}

/// Paging of history and audit.
#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// At most this many entries.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Entries older than this id (the `next` of the page before).
    #[arg(long)]
    before: Option<String>,
}

/// `atrion audit`
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    page: PageArgs,
    /// The whole trail as JSON lines, oldest first.
    #[arg(long)]
    export: bool,
    #[command(flatten)]
    target: Target,
}

enum Backend {
    Http { client: reqwest::Client, base: String, token: Option<String> },
    Store { cluster: Box<Cluster>, who: String },
}

fn validator(config: Option<&Path>) -> Result<Validator> {
    let base = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let cfg: atrion::PhysicsConfig =
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            cfg.validated().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => atrion::PhysicsConfig::default(),
    };
    Ok(Validator::new(base, Limits::default()))
}

impl Target {
    async fn open(&self) -> Result<Backend> {
        match (&self.server, &self.store) {
            (Some(url), _) => Ok(Backend::Http {
                client: reqwest::Client::new(),
                base: url.trim_end_matches('/').to_owned(),
                token: self.token.clone(),
            }),
            (None, Some(url)) => {
                let mut config: atrion::StoreConfig = url.parse()?;
                config.set_namespace(&self.namespace);
                let store = config.build().await.with_context(|| format!("opening {}", atrion::redacted_url(url)))?;
                let store = match &self.encryption_key_file {
                    Some(path) => atrion::EncryptionConfig::key_file(path).wrap(store).await?,
                    None => store,
                };
                let keys = PolicyKeys::new(&self.namespace, &format!("cli-{}", std::process::id()));
                let cluster = Cluster::new(
                    store,
                    keys,
                    validator(self.config.as_deref())?,
                    Default::default(),
                    Default::default(),
                );
                Ok(Backend::Store { cluster: Box::new(cluster), who: self.who.clone() })
            }
            (None, None) => bail!("give --server URL (a sidecar) or --store URL (the cluster's store)"),
        }
    }
}

impl Backend {
    async fn http(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let Backend::Http { client, base, token } = self else { bail!("not a sidecar") };
        let mut req = client.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("{base}{path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text).ok();
            let mut msg = format!("{status}");
            if let Some(d) = &detail {
                msg.push_str(&format!(": {}", d["detail"].as_str().unwrap_or("")));
                for i in d["issues"].as_array().into_iter().flatten() {
                    msg.push_str(&format!(
                        "\n  {}: {}",
                        i["path"].as_str().unwrap_or(""),
                        i["message"].as_str().unwrap_or("")
                    ));
                }
            }
            bail!(msg);
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn change(&self, change: Change, expected: Option<u64>) -> Result<Value> {
        let Backend::Store { cluster, who } = self else { bail!("not a store") };
        let done = cluster.change(Source::Api, &change, who, expected, wall_ms()).await?;
        Ok(
            serde_json::json!({"version": done.after.version, "changed": done.after != done.before, "api": done.after.api}),
        )
    }
}

fn print(v: &Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v)))).collect();
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

/// `s` percent-encoded: every byte but the unreserved ones.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads a policy file: TOML, or JSON when it ends in `.json`; through the pipeline.
fn read_policies(v: &Validator, file: &Path) -> Result<atrion_policy::PolicySet, atrion_policy::Rejected> {
    let text = std::fs::read_to_string(file).map_err(|e| atrion_policy::Rejected {
        issues: vec![atrion_policy::Issue {
            stage: atrion_policy::Stage::Schema,
            path: String::new(),
            message: format!("{}: {e}", file.display()),
        }],
    })?;
    let now = wall_ms();
    if file.extension().is_some_and(|e| e == "json") { v.check_json(&text, now) } else { v.check_toml(&text, now) }
}

/// Now, in ms since the Unix epoch: the CLI's side of ban deadlines.
fn wall_ms() -> u64 {
    atrion::state::system_wall_ms()
}

/// `atrion policy …`
pub fn policy(cmd: PolicyCmd) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match cmd {
            PolicyCmd::Check { file, config } => {
                let v = validator(config.as_deref())?;
                match read_policies(&v, &file) {
                    Ok(set) => {
                        println!("{}: {} policies, {} bans: valid", file.display(), set.policies.len(), set.bans.len());
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(r) => {
                        for i in &r.issues {
                            println!("{}: {:?}: {i}", file.display(), i.stage);
                        }
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
            PolicyCmd::Apply { file, expected_version, target } => {
                let set = match read_policies(&validator(target.config.as_deref())?, &file) {
                    Ok(set) => set,
                    Err(r) => bail!("{}: {r}", file.display()),
                };
                let b = target.open().await?;
                match &b {
                    Backend::Http { .. } => {
                        let q = query(&[("expected_version", expected_version.map(|v| v.to_string()))]);
                        print(
                            &b.http(
                                reqwest::Method::PUT,
                                &format!("/v1/policies{q}"),
                                Some(serde_json::to_value(&set)?),
                            )
                            .await?,
                        )
                    }
                    Backend::Store { .. } => print(&b.change(Change::Replace(set), expected_version).await?),
                }
            }
            PolicyCmd::Get { target } => {
                let b = target.open().await?;
                match &b {
                    Backend::Http { .. } => print(&b.http(reqwest::Method::GET, "/v1/policies", None).await?),
                    Backend::Store { cluster, .. } => print(&serde_json::to_value(cluster.desired().read().await?.0)?),
                }
            }
            PolicyCmd::Delete { route, expected_version, target } => {
                let b = target.open().await?;
                match &b {
                    Backend::Http { .. } => {
                        let q = query(&[
                            ("route", Some(route)),
                            ("expected_version", expected_version.map(|v| v.to_string())),
                        ]);
                        print(&b.http(reqwest::Method::DELETE, &format!("/v1/policies{q}"), None).await?)
                    }
                    Backend::Store { .. } => print(&b.change(Change::Remove(route), expected_version).await?),
                }
            }
            PolicyCmd::Ban { route, client, for_s, reason, target } => {
                if !(for_s.is_finite() && for_s > 0.0) {
                    bail!("--for: a positive number of seconds");
                }
                let b = target.open().await?;
                let for_ms = (for_s * 1_000.0) as u64;
                match &b {
                    Backend::Http { .. } => {
                        let body =
                            serde_json::json!({"route": route, "client": client, "for_ms": for_ms, "reason": reason});
                        print(&b.http(reqwest::Method::POST, "/v1/bans", Some(body)).await?)
                    }
                    Backend::Store { .. } => {
                        let until_ms = wall_ms() + for_ms;
                        print(&b.change(Change::Ban(Ban { route, client, until_ms, reason }), None).await?)
                    }
                }
            }
            PolicyCmd::Unban { route, client, target } => {
                let b = target.open().await?;
                match &b {
                    Backend::Http { .. } => {
                        let q = query(&[("route", route), ("client", client)]);
                        print(&b.http(reqwest::Method::DELETE, &format!("/v1/bans{q}"), None).await?)
                    }
                    Backend::Store { .. } => print(&b.change(Change::Unban(route, client), None).await?),
                }
            }
        }
    })
}

/// `atrion state …`
pub fn state(cmd: StateCmd) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match cmd {
            StateCmd::Reencrypt { store, namespace, encryption_key_file, chunk } => {
                reencrypt(&store, &namespace, &encryption_key_file, chunk).await
            }
            StateCmd::Dump { target } => {
                let b = target.open().await?;
                match &b {
                    Backend::Http { .. } => print(&b.http(reqwest::Method::GET, "/v1/state", None).await?),
                    Backend::Store { cluster, .. } => print(&serde_json::to_value(cluster.dump().await?)?),
                }
            }
            StateCmd::Diff { target } => {
                let b = target.open().await?;
                match &b {
                    Backend::Http { .. } => print(&b.http(reqwest::Method::GET, "/v1/state/diff", None).await?),
                    Backend::Store { cluster, .. } => {
                        let dump = cluster.dump().await?;
                        print(&serde_json::to_value(cluster.diff(&dump).await?)?)
                    }
                }
            }
            StateCmd::History { page, target } => {
                let b = target.open().await?;
                match &b {
                    Backend::Http { .. } => {
                        let q = query(&[("limit", Some(page.limit.to_string())), ("before", page.before)]);
                        print(&b.http(reqwest::Method::GET, &format!("/v1/state/history{q}"), None).await?)
                    }
                    Backend::Store { cluster, .. } => {
                        print(&serde_json::to_value(cluster.history(page.before.as_deref(), page.limit).await?)?)
                    }
                }
            }
        }
    })
}

/// `atrion audit`
pub fn audit(args: AuditArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let b = args.target.open().await?;
        match (&b, args.export) {
            (Backend::Http { .. }, true) => {
                let v = b.http(reqwest::Method::GET, "/v1/audit/export", None).await?;
                match v {
                    Value::String(text) => print!("{text}"),
                    other => println!("{other}"),
                }
                Ok(ExitCode::SUCCESS)
            }
            (Backend::Http { .. }, false) => {
                let q = query(&[("limit", Some(args.page.limit.to_string())), ("before", args.page.before)]);
                print(&b.http(reqwest::Method::GET, &format!("/v1/audit{q}"), None).await?)
            }
            (Backend::Store { cluster, .. }, true) => {
                for e in cluster.audit_all().await? {
                    println!("{}", serde_json::to_string(&e)?);
                }
                Ok(ExitCode::SUCCESS)
            }
            (Backend::Store { cluster, .. }, false) => {
                print(&serde_json::to_value(cluster.audit_page(args.page.before.as_deref(), args.page.limit).await?)?)
            }
        }
    })
}

/// How often the policy file is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Watches the policy file of `atrion serve`: each edit that passes the pipeline replaces
/// the file's layer of desired state; an edit that does not is logged with every issue and
/// recorded in the audit trail, and the previous policies stay.
pub async fn watch_file<O: atrion::PhysicsObserver + 'static>(node: Arc<PolicyNode<O>>, path: PathBuf) {
    let who = format!("file:{}", path.display());
    // The content last handled; `retry` when it was valid but the store was away.
    let (mut seen, mut retry, mut unreadable) = (None::<Vec<u8>>, false, false);
    loop {
        match std::fs::read(&path) {
            Ok(bytes) => {
                unreadable = false;
                let new = seen.as_ref() != Some(&bytes);
                if new || retry {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    seen = Some(bytes);
                    retry = false;
                    match node.desired().validator().check_toml(&text, node.wall_ms()) {
                        Ok(set) => match node.change(Source::File, &Change::Replace(set), &who, None).await {
                            Ok(done) => {
                                tracing::info!(path = %path.display(), version = done.after.version, "policy file applied");
                            }
                            Err(e) => {
                                tracing::warn!(path = %path.display(), error = %e, "the policy file could not be applied yet");
                                retry = true;
                            }
                        },
                        Err(r) if new => {
                            for i in &r.issues {
                                tracing::error!(path = %path.display(), stage = ?i.stage, at = %i.path, "policy file rejected, the previous policies stay: {}", i.message);
                            }
                            let entry = AuditEntry {
                                at_ms: node.wall_ms(),
                                who: who.clone(),
                                action: "policy.file".into(),
                                target: Some(path.display().to_string()),
                                before: None,
                                after: None,
                                ok: false,
                                error: Some(r.to_string()),
                                node: node.node_id().to_owned(),
                                count: None,
                            };
                            let _ = node.audit(entry).await;
                        }
                        Err(_) => {}
                    }
                }
            }
            Err(e) if !unreadable => {
                tracing::error!(path = %path.display(), error = %e, "the policy file cannot be read: the previous policies stay");
                unreadable = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}
