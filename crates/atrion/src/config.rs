//! Stores from configuration: each backend from its own typed, validated config.

use std::sync::Arc;

use atrion_state::{InMemoryStore, StateService, StateStore};
use serde::Deserialize;

use crate::AtrionError;

/// A state store, as written in a config file:
///
/// ```toml
/// [store]
/// backend = "file"
/// path = "/var/lib/atrion/state.redb"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreConfig {
    /// [`InMemoryStore`]: this process only, nothing to configure.
    Memory,
    /// The embedded file store (feature `file`).
    #[cfg(feature = "file")]
    File(atrion_file::FileConfig),
}

impl StoreConfig {
    /// Builds (and for the file store, opens) the store; the config is validated first.
    pub async fn build(&self) -> Result<Arc<dyn StateStore>, AtrionError> {
        Ok(match self {
            StoreConfig::Memory => Arc::new(InMemoryStore::new()),
            #[cfg(feature = "file")]
            StoreConfig::File(c) => Arc::new(atrion_file::FileStore::open(c).await?),
        })
    }
}

/// A [`StateService`] with one backend per `(name, config)`, the first active.
pub async fn state_service(backends: &[(&str, StoreConfig)]) -> Result<StateService, AtrionError> {
    let mut builder = StateService::builder();
    for (name, config) in backends {
        builder = builder.backend_arc(*name, config.build().await?);
    }
    builder.build().map_err(|e| match e {
        atrion_state::ServiceError::Store(s) => AtrionError::Store(s),
        other => AtrionError::Service(other.to_string()),
    })
}
