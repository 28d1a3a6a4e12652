//! The Redis store's configuration.

use std::time::Duration;

use atrion_state::{DEFAULT_NAMESPACE, ErrorKind, Op, StoreError, check_namespace};
use serde::Deserialize;

use crate::BACKEND;

/// Configuration of a [`crate::RedisStore`], readable from a config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]` or `rediss://...` for TLS.
    pub url: String,
    /// The cluster's namespace: the store's partition of the server (`{namespace}:…` keys).
    /// The same namespace as the sync's, and the same rule
    /// ([`atrion_state::check_namespace`]); default [`atrion_state::DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// Giving up on a connection attempt after this long.
    #[serde(with = "atrion_state::serde_secs")]
    pub connect_timeout: Duration,
    /// Giving up on a command after this long.
    #[serde(with = "atrion_state::serde_secs")]
    pub command_timeout: Duration,
    /// For `rediss://`: a PEM file of the certificate authority to trust (default: the
    /// system's roots).
    pub ca_cert: Option<std::path::PathBuf>,
    /// A single server or a Redis Cluster (default: asked of the server at `url`).
    pub mode: RedisMode,
    /// More nodes of a Redis Cluster to start from, beside `url` (same scheme and
    /// credentials), so that the store connects while `url`'s node is down.
    pub nodes: Vec<String>,
}

/// Whether the store talks to one server or to a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// Ask the server at `url` (`INFO cluster`).
    #[default]
    Auto,
    /// One server (or a primary with replicas behind one address).
    Single,
    /// A Redis Cluster: commands are routed by hash slot, and follow failovers.
    Cluster,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            ca_cert: None,
            mode: RedisMode::Auto,
            nodes: Vec::new(),
        }
    }
}

impl RedisConfig {
    /// The defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig { url: url.into(), ..RedisConfig::default() }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |why: String| Err(StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(why)));
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return bad("`url` must start with redis:// or rediss://".into());
        }
        check_namespace(&self.namespace).or_else(bad)?;
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return bad("timeouts must be > 0".into());
        }
        if self.ca_cert.is_some() && !self.url.starts_with("rediss://") {
            return bad("`ca_cert` is for rediss:// URLs".into());
        }
        let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_owned());
        if let Some(node) = self.nodes.iter().find(|n| scheme(n) != scheme(&self.url)) {
            return bad(format!("`nodes` must use the scheme of `url`, got {node:?}"));
        }
        if !self.nodes.is_empty() && self.mode == RedisMode::Single {
            return bad("`nodes` are for a Redis Cluster (`mode` is `single`)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert!(RedisConfig::default().validate().is_ok());
        assert!(RedisConfig::new("http://x").validate().is_err());
        let c = RedisConfig { namespace: "a:b".into(), ..RedisConfig::default() };
        assert!(c.validate().is_err());
        let c = RedisConfig { command_timeout: Duration::ZERO, ..RedisConfig::default() };
        assert!(c.validate().is_err());
        let c = RedisConfig { nodes: vec!["rediss://b:1".into()], ..RedisConfig::default() };
        assert!(c.validate().is_err(), "another scheme");
        let c = RedisConfig { nodes: vec!["redis://b:1".into()], mode: RedisMode::Single, ..RedisConfig::default() };
        assert!(c.validate().is_err(), "nodes without a cluster");
        let c = RedisConfig { nodes: vec!["redis://b:1".into()], ..RedisConfig::default() };
        assert!(c.validate().is_ok());
    }
}
