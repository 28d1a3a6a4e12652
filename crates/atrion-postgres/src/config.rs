//! The PostgreSQL store's configuration.

use std::time::Duration;

use atrion_state::{DEFAULT_NAMESPACE, ErrorKind, Op, StoreError, check_namespace};
use serde::Deserialize;

use crate::BACKEND;

/// Configuration of a [`crate::PostgresStore`], readable from a config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=...]`.
    pub url: String,
    /// The cluster's namespace: the store's partition of the server (the `namespace`
    /// column). The same namespace as the sync's, and the same rule
    /// ([`atrion_state::check_namespace`]); default [`atrion_state::DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// Most pooled connections.
    pub max_connections: u32,
    /// Giving up on acquiring a connection after this long.
    #[serde(with = "atrion_state::serde_secs")]
    pub connect_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl PostgresConfig {
    /// The defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig { url: url.into(), ..PostgresConfig::default() }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |why: String| Err(StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(why)));
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return bad("`url` must start with postgres:// or postgresql://".into());
        }
        check_namespace(&self.namespace).or_else(bad)?;
        if self.max_connections == 0 || self.connect_timeout.is_zero() {
            return bad("`max_connections` and `connect_timeout` must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert!(PostgresConfig::default().validate().is_ok());
        assert!(PostgresConfig::new("mysql://x").validate().is_err());
        let c = PostgresConfig { namespace: "has space".into(), ..PostgresConfig::default() };
        assert!(c.validate().is_err());
    }
}
