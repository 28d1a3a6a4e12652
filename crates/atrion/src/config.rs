//! Stores from configuration: each backend from its own typed, validated config.

use std::sync::Arc;

use atrion_state::{Clock, InMemoryStore, StateService, StateStore};
use serde::Deserialize;

use crate::AtrionError;

/// A state store, as written in a config file:
///
/// ```toml
/// [store]
/// backend = "file"
/// path = "/var/lib/atrion/state.redb"
/// ```
///
/// or as a URL ([`StoreConfig::from_url`], also `str::parse`): `memory`, `file:PATH`,
/// `redis://…`, `rediss://…`, `postgres://…` (`postgresql://…`). A backend whose feature is
/// not compiled in is a clear error, not a surprise at connect time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreConfig {
    /// [`InMemoryStore`]: this process only, nothing to configure.
    Memory,
    /// The embedded file store (feature `file`).
    #[cfg(feature = "file")]
    File(atrion_file::FileConfig),
    /// Redis, shared by a cluster (feature `redis`).
    #[cfg(feature = "redis")]
    Redis(atrion_redis::RedisConfig),
    /// PostgreSQL, shared by a cluster (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(atrion_postgres::PostgresConfig),
}

/// The URL forms [`StoreConfig::from_url`] reads.
const URL_FORMS: &str = "`memory`, `file:PATH`, `redis://…`, `rediss://…`, `postgres://…` or `postgresql://…`";

impl std::str::FromStr for StoreConfig {
    type Err = AtrionError;
    fn from_str(url: &str) -> Result<Self, AtrionError> {
        StoreConfig::from_url(url)
    }
}

/// A store URL fit for logs and answers: the password, if any, replaced by `***`
/// (`redis://:s3cret@host` becomes `redis://:***@host`).
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_owned() };
            format!("{scheme}://{shown}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl StoreConfig {
    /// The store a URL names, with that backend's defaults otherwise; validated when built.
    pub fn from_url(url: &str) -> Result<StoreConfig, AtrionError> {
        let missing = |feature: &str| {
            AtrionError::Service(format!(
                "store `{}`: this build has no `{feature}` feature (a cargo feature of atrion)",
                redacted_url(url)
            ))
        };
        if url == "memory" {
            return Ok(StoreConfig::Memory);
        }
        if let Some(path) = url.strip_prefix("file:") {
            if path.is_empty() {
                return Err(AtrionError::Service("store `file:`: a path is needed, as in `file:./atrion.redb`".into()));
            }
            #[cfg(feature = "file")]
            return Ok(StoreConfig::File(atrion_file::FileConfig::new(path)));
            #[cfg(not(feature = "file"))]
            return Err(missing("file"));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            #[cfg(feature = "redis")]
            return Ok(StoreConfig::Redis(atrion_redis::RedisConfig::new(url)));
            #[cfg(not(feature = "redis"))]
            return Err(missing("redis"));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            return Ok(StoreConfig::Postgres(atrion_postgres::PostgresConfig::new(url)));
            #[cfg(not(feature = "postgres"))]
            return Err(missing("postgres"));
        }
        let _ = missing;
        Err(AtrionError::Service(format!("store `{}`: expected {URL_FORMS}", redacted_url(url))))
    }

    /// Sets the key namespace of a shared store (Redis, PostgreSQL); the others have none.
    pub fn set_namespace(&mut self, namespace: &str) {
        match self {
            #[cfg(feature = "redis")]
            StoreConfig::Redis(c) => c.namespace = namespace.to_owned(),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(c) => c.namespace = namespace.to_owned(),
            _ => {
                let _ = namespace;
            }
        }
    }

    /// Builds (and for the file store, opens; for the shared stores, connects) the store;
    /// the config is validated first. TTLs run on each store's default clock.
    pub async fn build(&self) -> Result<Arc<dyn StateStore>, AtrionError> {
        self.build_on(None).await
    }

    /// [`StoreConfig::build`], the memory and file stores keeping their TTLs on `clock` (the
    /// process's one clock: [`crate::Atrion::clock`]); a shared store's TTLs run on its
    /// server.
    pub async fn build_with_clock(&self, clock: Arc<dyn Clock>) -> Result<Arc<dyn StateStore>, AtrionError> {
        self.build_on(Some(clock)).await
    }

    async fn build_on(&self, clock: Option<Arc<dyn Clock>>) -> Result<Arc<dyn StateStore>, AtrionError> {
        Ok(match self {
            StoreConfig::Memory => Arc::new(clock.map_or_else(InMemoryStore::new, InMemoryStore::with_clock)),
            #[cfg(feature = "file")]
            StoreConfig::File(c) => match clock {
                Some(clock) => Arc::new(atrion_file::FileStore::open_with_clock(c, clock).await?),
                None => Arc::new(atrion_file::FileStore::open(c).await?),
            },
            #[cfg(feature = "redis")]
            StoreConfig::Redis(c) => Arc::new(atrion_redis::RedisStore::connect(c).await?),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(c) => Arc::new(atrion_postgres::PostgresStore::connect(c).await?),
        })
    }
}

/// Encryption at rest of a store (feature `encryption`): where its keys come from and how
/// values are sealed ([`atrion_crypt::EncryptedStore`]).
///
/// ```toml
/// [encryption]
/// key_file = "/etc/atrion/keys"   # lines `id:base64key`, newest last
/// # key_env = "ATRION_ENCRYPTION_KEYS"   # or the same lines in a variable
/// compress_above = 512              # bytes (omit: the default); `no_compression = true`: never
/// ```
///
/// Keys are never a value of the config itself: a file or a variable holds them.
#[cfg(feature = "encryption")]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// A key file ([`atrion_crypt::Keyring::from_file`]).
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
    /// An environment variable holding the keys ([`atrion_crypt::Keyring::from_env`]); used
    /// when there is no `key_file`.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Compress values whose body is longer than this many bytes (zstd, before sealing);
    /// `None`: [`atrion_crypt::DEFAULT_COMPRESS_ABOVE`].
    #[serde(default)]
    pub compress_above: Option<usize>,
    /// Never compress.
    #[serde(default)]
    pub no_compression: bool,
}

#[cfg(feature = "encryption")]
impl EncryptionConfig {
    /// Keys from a key file.
    pub fn key_file(path: impl Into<std::path::PathBuf>) -> Self {
        EncryptionConfig { key_file: Some(path.into()), key_env: None, compress_above: None, no_compression: false }
    }

    /// Reads the keys (the file, else the variable).
    pub fn keyring(&self) -> Result<atrion_crypt::Keyring, AtrionError> {
        let ring = match (&self.key_file, &self.key_env) {
            (Some(path), _) => atrion_crypt::Keyring::from_file(path),
            (None, Some(var)) => atrion_crypt::Keyring::from_env(var),
            (None, None) => {
                return Err(AtrionError::Service("encryption: a `key_file` or a `key_env` is needed".into()));
            }
        };
        ring.map_err(|e| AtrionError::Service(format!("encryption: {e}")))
    }

    /// The sealing options.
    pub fn options(&self) -> atrion_crypt::CryptOptions {
        let compress_above = if self.no_compression {
            None
        } else {
            Some(self.compress_above.unwrap_or(atrion_crypt::DEFAULT_COMPRESS_ABOVE))
        };
        atrion_crypt::CryptOptions { compress_above, ..atrion_crypt::CryptOptions::default() }
    }

    /// Wraps a built store: checks the keys against it (a wrong or missing key is an error
    /// naming the key id; a store of unencrypted data is refused).
    pub async fn wrap(&self, store: Arc<dyn StateStore>) -> Result<Arc<dyn StateStore>, AtrionError> {
        let ring = Arc::new(self.keyring()?);
        let store = atrion_crypt::EncryptedStore::open(store, ring, self.options())
            .await
            .map_err(|e| AtrionError::Service(format!("encryption: {e}")))?;
        Ok(Arc::new(store))
    }
}

#[cfg(feature = "encryption")]
impl StoreConfig {
    /// [`StoreConfig::build`], encrypted at rest ([`EncryptionConfig::wrap`]).
    pub async fn build_encrypted(&self, encryption: &EncryptionConfig) -> Result<Arc<dyn StateStore>, AtrionError> {
        encryption.wrap(self.build().await?).await
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

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redacted_url("redis://:s3cret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(redacted_url("postgres://me:pw@db/atrion"), "postgres://me:***@db/atrion");
        assert_eq!(redacted_url("rediss://token@h"), "rediss://***@h");
        assert_eq!(redacted_url("file:./x.redb"), "file:./x.redb");
        assert_eq!(redacted_url("redis://host:6379"), "redis://host:6379");
    }

    #[cfg(feature = "encryption")]
    #[tokio::test]
    async fn an_encrypted_store_from_config_refuses_a_wrong_key_naming_its_id() {
        use super::{EncryptionConfig, StoreConfig};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let good = write("good", "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n");
        let wrong = write("wrong", "k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n");
        let config: EncryptionConfig = toml::from_str(&format!("key_file = {:?}", good.display().to_string())).unwrap();
        assert!(toml::from_str::<EncryptionConfig>("key = \"inline\"").is_err(), "keys are never inline");
        let inner = StoreConfig::Memory.build().await.unwrap();
        let store = config.wrap(inner.clone()).await.unwrap();
        store.set("atrion/route/GET /patients/1", "v".into()).await.unwrap();
        assert!(inner.list_keys("").await.unwrap().iter().all(|k| !k.contains("patients")));
        let e = EncryptionConfig::key_file(wrong).wrap(inner).await.unwrap_err().to_string();
        assert!(e.contains("`k1`") && e.contains("wrong key"), "{e}");
        assert!(StoreConfig::Memory.build_encrypted(&config).await.is_ok());
    }
}
