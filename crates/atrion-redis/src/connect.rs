//! Connecting: to one server or a Redis Cluster (detected or configured), over TLS when
//! asked, within the connect timeout; the cluster's nodes as `CLUSTER NODES` lists them.

use super::*;

impl RedisStore {
    /// Connects (within `connect_timeout`) to the server or the cluster and checks that it
    /// answers.
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, StoreError> {
        cfg.validate()?;
        let open = |e: redis::RedisError| err(Op::Open, None, e);
        let timed_out = || StoreError::new(BACKEND, Op::Open, None, ErrorKind::Timeout);
        let certs = certificates(cfg)?;
        let client = client(&cfg.url, certs.clone())?;
        let cluster = match cfg.mode {
            RedisMode::Single => false,
            RedisMode::Cluster => true,
            RedisMode::Auto if !cfg.nodes.is_empty() => true,
            RedisMode::Auto => {
                let ask = async {
                    let mut c = client.get_multiplexed_async_connection().await?;
                    redis::cmd("INFO").arg("cluster").query_async::<String>(&mut c).await
                };
                let info =
                    tokio::time::timeout(cfg.connect_timeout, ask).await.map_err(|_| timed_out())?.map_err(open)?;
                info.lines().any(|l| l.trim() == "cluster_enabled:1")
            }
        };
        let mut subscribe_via = vec![client.clone()];
        let mut conn = if cluster {
            let seeds: Vec<&str> =
                std::iter::once(cfg.url.as_str()).chain(cfg.nodes.iter().map(String::as_str)).collect();
            let mut builder = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.command_timeout)
                .retries(3);
            if cfg.url.starts_with("rediss://") {
                builder = builder.certs(certs.clone());
            }
            let cluster = builder.build().map_err(|e| config_error(format!("invalid cluster: {e}"), e))?;
            let c = tokio::time::timeout(cfg.connect_timeout, cluster.get_async_connection())
                .await
                .map_err(|_| timed_out())?
                .map_err(open)?;
            for node in &cfg.nodes {
                subscribe_via.push(self::client(node, certs.clone())?);
            }
            Conn::Cluster(c)
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.connect_timeout))
                .set_response_timeout(Some(cfg.command_timeout))
                .set_number_of_retries(2);
            let connect = client.get_connection_manager_with_config(config);
            Conn::Single(
                tokio::time::timeout(cfg.connect_timeout, connect).await.map_err(|_| timed_out())?.map_err(open)?,
            )
        };
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(open)?;
        let store = RedisStore {
            conn,
            subscribe_via,
            cfg: cfg.clone(),
            put: Script::new(&format!("{REPAIRS}{PUT}")),
            cas: Script::new(&format!("{REPAIRS}{CAS}")),
            group: Script::new(&format!("{REPAIRS}{GROUP}")),
            delete: Script::new(DELETE),
            share_put: Script::new(&format!("{SHARES_COMMON}{SHARE_PUT}")),
            shares_read: Script::new(&format!("{SHARES_COMMON}{SHARES_READ}")),
            repairs: Default::default(),
        };
        if cluster {
            // Every node can carry the feed: a lost node's subscription moves to another.
            let mut via = store.subscribe_via.clone();
            for (host, port) in store.nodes(false).await.unwrap_or_default() {
                via.push(self::client(&node_url(&cfg.url, &host, port), certs.clone())?);
            }
            return Ok(RedisStore { subscribe_via: via, ..store });
        }
        Ok(store)
    }
}

fn config_error(why: String, e: redis::RedisError) -> StoreError {
    StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(why)).with_source(e)
}

/// The TLS roots of `cfg` (a private CA, or none: the system's).
fn certificates(cfg: &RedisConfig) -> Result<redis::TlsCertificates, StoreError> {
    let root_cert = match &cfg.ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            let why = format!("cannot read `ca_cert` {}", path.display());
            StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(why)).with_source(e)
        })?),
        None => None,
    };
    Ok(redis::TlsCertificates { client_tls: None, root_cert })
}

/// A client of the server at `url`.
fn client(url: &str, certs: redis::TlsCertificates) -> Result<redis::Client, StoreError> {
    let invalid = |e: redis::RedisError| config_error(format!("invalid url: {e}"), e);
    if url.starts_with("rediss://") {
        // One crypto provider is compiled in (ring); make it the process default if
        // nothing else has been chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        redis::Client::build_with_tls(url, certs).map_err(invalid)
    } else {
        redis::Client::open(url).map_err(invalid)
    }
}

/// `url` with its host and port replaced (scheme, credentials and database kept).
pub(crate) fn node_url(url: &str, host: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (auth, rest) = match rest.rfind('@') {
        Some(i) if !rest[..i].contains('/') => (&rest[..=i], &rest[i + 1..]),
        _ => ("", rest),
    };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    format!("{scheme}://{auth}{host}:{port}{path}")
}

/// The nodes of a `CLUSTER NODES` reply as `(host, port)`: primaries only, or all; nodes
/// flagged as failed, or without an address, left out.
pub(crate) fn parse_cluster_nodes(text: &str, primaries: bool) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, flags) = (fields.get(1)?, fields.get(2)?);
            if flags.split(',').any(|f| f == "fail" || f == "noaddr" || f == "handshake") {
                return None;
            }
            if primaries && !flags.split(',').any(|f| f == "master") {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().ok()?;
            (!host.is_empty()).then(|| (host.to_owned(), port))
        })
        .collect()
}
