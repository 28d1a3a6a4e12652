//! # atrion-postgres
//!
//! A [`StateStore`] over PostgreSQL (`sqlx`, pooled), so that the pods of a cluster share
//! scar tissue through the database they already run.
//!
//! - One table, `atrion_entries (namespace, key, value, version, expires_at)`; versions come
//!   from one sequence, so they never repeat. The schema is created on connect
//!   (idempotently, under an advisory lock) and its version recorded in `atrion_schema`.
//! - Compare-and-swap is one statement (`UPDATE ... WHERE version = $expected`, or an
//!   insert that only replaces an expired row).
//! - A group of writes ([`StateStore::transact`]) is one transaction at READ COMMITTED:
//!   an advisory lock per key (groups on overlapping keys take turns), the keys' rows locked
//!   `FOR UPDATE` (writers outside the groups wait), the preconditions checked on the latest
//!   committed versions, then the writes; a key found absent is inserted only if still
//!   absent, else the group starts again.
//! - Shares ([`atrion_state::shares`]) in `atrion_shares (namespace, key, member, rank,
//!   value)`, written in one statement per batch.
//! - The change feed: statement-level triggers send one `NOTIFY atrion_changes` per
//!   statement (split to stay within PostgreSQL's 8,000-byte payloads), carrying values up to
//!   1 KiB and, for shares, each changed key's two leaders and member count; a listener
//!   forwards them and asks for a [`atrion_state::Change::Resync`] after every reconnect
//!   (notifications sent meanwhile are lost).
//! - Expired rows are invisible at once and deleted by [`StateStore::cleanup`].
//!
//! ## Features
//! - `testing`: `testing::PgServer`, a private PostgreSQL (`initdb` + `pg_ctl`) for tests.
//!
//! ## Example
//!
//! The port's contract on a private PostgreSQL (feature `testing`, which this crate's own
//! tests enable). Without PostgreSQL's binaries installed, `start` fails loudly, or is
//! `None` when `ATRION_SKIP_SERVICES=1` asks to skip:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use atrion_postgres::{PostgresConfig, PostgresStore};
//! use atrion_state::{CasOutcome, StateStore};
//!
//! let Some(server) = atrion_postgres::testing::PgServer::start() else { return Ok(()) };
//! // In production: `PostgresConfig::new("postgres://user:password@host/db")`.
//! let store = PostgresStore::connect(&PostgresConfig::new(server.url())).await?;
//! assert!(store.capabilities().atomic && store.capabilities().persistent);
//!
//! // Compare-and-swap from "absent": exactly one creator wins.
//! let first = store.compare_and_swap("atrion/example", None, "one".into(), None).await?;
//! assert!(matches!(first, CasOutcome::Swapped { .. }));
//! let second = store.compare_and_swap("atrion/example", None, "two".into(), None).await?;
//! assert!(matches!(second, CasOutcome::Conflict { current: Some(_) }));
//! // An entry with a time to live says how much is left.
//! store.put("atrion/session", "s".into(), Some(Duration::from_secs(60))).await?;
//! assert!(store.get("atrion/session").await?.unwrap().ttl.is_some());
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use atrion_state::shares::{Share, ShareWrite, Shares};
use atrion_state::{
    Capabilities, CasOutcome, ChangeFeed, CleanupStats, Entry, ErrorKind, Group, GroupWrite, Op, StateStore,
    StoreError, StoreStats, check_key, check_share, check_value,
};
use bytes::Bytes;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::mpsc;

mod config;
mod feed;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::PostgresConfig;
use sql::{LIVE, PUT_SHARES, SCHEMA, TTL_MS, expiry};

const BACKEND: &str = "postgres";
const SCHEMA_VERSION: i32 = 2;
const CHANNEL: &str = "atrion_changes";

/// The PostgreSQL store. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    namespace: String,
}

/// The changes of `namespace` one notification on the `atrion_changes` channel carries
/// (records of length-prefixed tokens: `set <version> <ns> <key> <hex value>`, `ref <version>
/// <ns> <key>`, `del 0 <ns> <key>`); parsing stops at the first record that does not read, so
/// garbage yields nothing. Public for tools that listen on the channel themselves, and for the
/// fuzz targets.
pub fn parse_notice(payload: &str, namespace: &str) -> Vec<atrion_state::Change> {
    feed::parse(payload, namespace)
}

fn err(op: Op, key: Option<&str>, e: sqlx::Error) -> StoreError {
    let kind = match &e {
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => ErrorKind::Unavailable,
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => ErrorKind::Corrupt,
        sqlx::Error::Configuration(_) => ErrorKind::Config(e.to_string()),
        _ => ErrorKind::Backend,
    };
    StoreError::new(BACKEND, op, key, kind).with_source(e)
}

fn ttl_ms(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| (t.as_millis() as i64).max(1))
}

fn entry(op: Op, key: &str, row: &sqlx::postgres::PgRow) -> Result<Entry, StoreError> {
    let value: Vec<u8> = row.try_get("value").map_err(|e| err(op, Some(key), e))?;
    let version: i64 = row.try_get("version").map_err(|e| err(op, Some(key), e))?;
    let ttl: Option<f64> = row.try_get("ttl_ms").map_err(|e| err(op, Some(key), e))?;
    Ok(Entry {
        value: Bytes::from(value),
        version: u64::try_from(version).map_err(|_| StoreError::new(BACKEND, op, Some(key), ErrorKind::Corrupt))?,
        ttl: ttl.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3)),
    })
}

impl PostgresStore {
    /// Connects the pool, creates the schema if needed and checks its version.
    pub async fn connect(cfg: &PostgresConfig) -> Result<Self, StoreError> {
        cfg.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.connect_timeout)
            .connect(&cfg.url)
            .await
            .map_err(|e| err(Op::Open, None, e))?;
        let mut tx = pool.begin().await.map_err(|e| err(Op::Open, None, e))?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await.map_err(|e| err(Op::Open, None, e))?;
        let version: i32 = sqlx::query_scalar("SELECT version FROM atrion_schema WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| err(Op::Open, None, e))?;
        tx.commit().await.map_err(|e| err(Op::Open, None, e))?;
        if version != SCHEMA_VERSION {
            let why = format!("database schema version {version}, this build knows {SCHEMA_VERSION}");
            return Err(StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(why)));
        }
        Ok(PostgresStore { pool, namespace: cfg.namespace.clone() })
    }

    async fn write_many(
        &self,
        op: Op,
        items: &[(String, Bytes, Option<Duration>)],
    ) -> Result<HashMap<String, u64>, StoreError> {
        // One statement for the whole batch; a key given twice keeps its last value.
        let mut last: HashMap<&str, (&Bytes, Option<i64>)> = HashMap::new();
        for (k, v, t) in items {
            last.insert(k, (v, ttl_ms(*t)));
        }
        let keys: Vec<&str> = last.keys().copied().collect();
        let values: Vec<&[u8]> = keys.iter().map(|k| last[k].0.as_ref()).collect();
        let ttls: Vec<Option<i64>> = keys.iter().map(|k| last[k].1).collect();
        let sql = format!(
            "INSERT INTO atrion_entries (namespace, key, value, version, expires_at)
             SELECT $1, k, v, nextval('atrion_version_seq'), {}
             FROM unnest($2::text[], $3::bytea[], $4::bigint[]) AS t(k, v, ttl)
             ON CONFLICT (namespace, key) DO UPDATE
                SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at
             RETURNING key, version",
            "CASE WHEN ttl IS NULL THEN NULL ELSE clock_timestamp() + ttl * interval '1 millisecond' END"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .bind(&keys)
            .bind(&values)
            .bind(&ttls)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| err(op, None, e))?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get("key").map_err(|e| err(op, None, e))?;
            let version: i64 = row.try_get("version").map_err(|e| err(op, None, e))?;
            out.insert(key, version as u64);
        }
        Ok(out)
    }

    /// The shares of `keys`: the top `limit` of each by rank (all for `None`), and `member`'s.
    async fn read_shares(
        &self,
        keys: &[String],
        member: &str,
        limit: Option<i64>,
    ) -> Result<Vec<Option<Shares>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for k in keys {
            check_key(BACKEND, Op::GetShares, k)?;
        }
        let rows = sqlx::query(
            "SELECT key, member, rank, value, n FROM (
                SELECT key, member, rank, value, count(*) OVER (PARTITION BY key) AS n,
                       row_number() OVER (PARTITION BY key ORDER BY rank DESC, member COLLATE \"C\" DESC) AS pos
                FROM atrion_shares WHERE namespace = $1 AND key = ANY($2::text[])) t
             WHERE $3::bigint IS NULL OR pos <= $3 OR member = $4
             ORDER BY key, pos",
        )
        .bind(&self.namespace)
        .bind(keys)
        .bind(limit)
        .bind(member)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| err(Op::GetShares, None, e))?;
        let mut found: HashMap<String, Shares> = HashMap::new();
        for row in rows {
            let get = |e| err(Op::GetShares, None, e);
            let key: String = row.try_get("key").map_err(get)?;
            let n: i64 = row.try_get("n").map_err(get)?;
            let share = Share {
                member: row.try_get("member").map_err(get)?,
                rank: row.try_get("rank").map_err(get)?,
                value: Bytes::from(row.try_get::<Vec<u8>, _>("value").map_err(get)?),
            };
            let shares = found.entry(key).or_default();
            shares.members = u32::try_from(n).unwrap_or(u32::MAX);
            shares.top.push(share);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }
}

/// How often a group starts again after a key it found absent was created meanwhile (or a
/// deadlock with a writer outside the groups).
const GROUP_ATTEMPTS: u32 = 64;

/// Why one attempt at a group did not commit.
enum GroupStop {
    /// The answer: a failed precondition, or the database's error.
    Done(StoreError),
    /// A key the group found absent was created meanwhile, or the database broke a
    /// deadlock by rolling the group back: start again.
    Again,
}

impl From<StoreError> for GroupStop {
    fn from(e: StoreError) -> Self {
        GroupStop::Done(e)
    }
}

impl PostgresStore {
    /// One attempt at `group` in one transaction, at READ COMMITTED:
    /// 1. a transaction-scoped advisory lock per key of the group, in key order: groups on
    ///    overlapping keys take turns, whether the keys exist or not;
    /// 2. `SELECT ... FOR UPDATE` of the keys' rows, in key order: the latest committed
    ///    versions, locked against every other writer (plain puts and compare-and-swaps wait);
    /// 3. the preconditions, checked on those versions;
    /// 4. the writes: a row that existed is locked and replaced; a key that had no row is
    ///    inserted only if still absent (a writer outside the groups created it meanwhile:
    ///    [`GroupStop::Again`]); a delete of a key that had no row is nothing to do.
    ///
    /// Commit makes every write visible at once, with its notices.
    async fn try_group(&self, group: &Group, keys: &[&str]) -> Result<Vec<Option<u64>>, GroupStop> {
        let fail = |e: sqlx::Error| {
            // A deadlock with a writer outside the groups (a batch locks its rows in its own
            // order), or a serialization failure: the database rolled back, start again.
            let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
            match code.as_deref() {
                Some("40P01" | "40001") => GroupStop::Again,
                _ => GroupStop::Done(err(Op::Transact, None, e)),
            }
        };
        let mut tx = self.pool.begin().await.map_err(fail)?;
        for k in keys {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7274662))")
                .bind(&self.namespace)
                .bind(k)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        let sql = format!(
            "SELECT key, version, {LIVE} AS live FROM atrion_entries
             WHERE namespace = $1 AND key = ANY($2::text[]) ORDER BY key COLLATE \"C\" FOR UPDATE"
        );
        let rows =
            sqlx::query(AssertSqlSafe(sql)).bind(&self.namespace).bind(keys).fetch_all(&mut *tx).await.map_err(fail)?;
        // Every row (locked), and the live ones' versions.
        let mut rows_found: HashMap<String, Option<u64>> = HashMap::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get("key").map_err(fail)?;
            let version: i64 = row.try_get("version").map_err(fail)?;
            let live: bool = row.try_get("live").map_err(fail)?;
            rows_found.insert(key, live.then_some(version as u64));
        }
        for check in &group.checks {
            let found = rows_found.get(&check.key).copied().flatten();
            if found != check.version {
                return Err(GroupStop::Done(Group::failed(BACKEND, check, found)));
            }
        }
        let mut versions = Vec::with_capacity(group.writes.len());
        for w in &group.writes {
            match w {
                GroupWrite::Put { key, value, ttl } => {
                    let had_row = rows_found.contains_key(key);
                    let conflict = if had_row {
                        "DO UPDATE SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at"
                    } else {
                        "DO NOTHING"
                    };
                    let sql = format!(
                        "INSERT INTO atrion_entries (namespace, key, value, version, expires_at)
                         VALUES ($1, $2, $3, nextval('atrion_version_seq'), {})
                         ON CONFLICT (namespace, key) {conflict}
                         RETURNING version",
                        expiry(4)
                    );
                    let version: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
                        .bind(&self.namespace)
                        .bind(key)
                        .bind(value.as_ref())
                        .bind(ttl_ms(*ttl))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(fail)?;
                    let Some(version) = version else { return Err(GroupStop::Again) };
                    // Written by this group now: a later write of the key replaces it.
                    rows_found.insert(key.clone(), Some(version as u64));
                    versions.push(Some(version as u64));
                }
                GroupWrite::Delete { key } => {
                    if rows_found.remove(key).is_some() {
                        sqlx::query("DELETE FROM atrion_entries WHERE namespace = $1 AND key = $2")
                            .bind(&self.namespace)
                            .bind(key)
                            .execute(&mut *tx)
                            .await
                            .map_err(fail)?;
                    }
                    versions.push(None);
                }
            }
        }
        tx.commit().await.map_err(fail)?;
        Ok(versions)
    }
}

/// A batch of shares as [`PUT_SHARES`] binds it: checked, the newest of each (key, member).
struct ShareBatch<'a> {
    keys: Vec<&'a str>,
    members: Vec<&'a str>,
    ranks: Vec<f64>,
    values: Vec<&'a [u8]>,
}

impl<'a> ShareBatch<'a> {
    fn new(items: &'a [ShareWrite]) -> Result<Self, StoreError> {
        for w in items {
            check_share(BACKEND, Op::PutShares, w)?;
        }
        let mut last: HashMap<(&str, &str), &Share> = HashMap::new();
        for w in items {
            last.insert((w.key.as_str(), w.share.member.as_str()), &w.share);
        }
        let mut batch = ShareBatch {
            keys: Vec::with_capacity(last.len()),
            members: Vec::with_capacity(last.len()),
            ranks: Vec::with_capacity(last.len()),
            values: Vec::with_capacity(last.len()),
        };
        for ((k, m), s) in last {
            batch.keys.push(k);
            batch.members.push(m);
            batch.ranks.push(s.rank);
            batch.values.push(s.value.as_ref());
        }
        Ok(batch)
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        namespace: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query.bind(namespace).bind(&self.keys).bind(&self.members).bind(&self.ranks).bind(&self.values)
    }
}

/// Where a batch of shares spends its time on the server, as `EXPLAIN ANALYZE` reports it
/// (feature `testing`: for the benches that split the pulse's cost between the server and
/// the client).
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTime {
    /// The statement's execution, its triggers included.
    pub execution: Duration,
    /// Of which the statement-level triggers (the change notices).
    pub triggers: Duration,
}

#[cfg(feature = "testing")]
impl PostgresStore {
    /// Writes `items` as [`StateStore::put_shares`] does, through `EXPLAIN (ANALYZE)`: the
    /// same statement, executed and committed, and what the server says it cost.
    pub async fn put_shares_explained(&self, items: Vec<ShareWrite>) -> Result<ServerTime, StoreError> {
        let batch = ShareBatch::new(&items)?;
        let sql = format!("EXPLAIN (ANALYZE, FORMAT JSON) {PUT_SHARES}");
        let row = batch
            .bind(sqlx::query(AssertSqlSafe(sql.as_str())), &self.namespace)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| err(Op::PutShares, None, e))?;
        // `json` travels as text; sqlx has no `json` feature here.
        let plan: String = row.try_get_unchecked(0).map_err(|e| err(Op::PutShares, None, e))?;
        let plan: serde_json::Value = serde_json::from_str(&plan)
            .map_err(|_| StoreError::new(BACKEND, Op::PutShares, None, ErrorKind::Corrupt))?;
        let ms = |v: &serde_json::Value| Duration::from_secs_f64(v.as_f64().unwrap_or(0.0) / 1e3);
        let top = &plan[0];
        let triggers = top["Triggers"].as_array().map(|t| t.iter().map(|t| ms(&t["Time"])).sum()).unwrap_or_default();
        Ok(ServerTime { execution: ms(&top["Execution Time"]), triggers })
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            atomic: true,
            transactions: true,
            one_slot_groups: false,
            change_feed: true,
            persistent: true,
            shared: true,
            native_shares: true,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(BACKEND, Op::Get, key)?;
        let sql = format!(
            "SELECT value, version, {TTL_MS} AS ttl_ms FROM atrion_entries WHERE namespace = $1 AND key = $2 AND {LIVE}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| err(Op::Get, Some(key), e))?;
        row.map(|r| entry(Op::Get, key, &r)).transpose()
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        check_key(BACKEND, Op::Set, key)?;
        check_value(BACKEND, Op::Set, key, &value)?;
        let sql = format!(
            "INSERT INTO atrion_entries (namespace, key, value, version, expires_at)
             VALUES ($1, $2, $3, nextval('atrion_version_seq'), {})
             ON CONFLICT (namespace, key) DO UPDATE
                SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at
             RETURNING version",
            expiry(4)
        );
        let version: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .bind(key)
            .bind(value.as_ref())
            .bind(ttl_ms(ttl))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| err(Op::Set, Some(key), e))?;
        Ok(version as u64)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(BACKEND, Op::Delete, key)?;
        let sql = format!("DELETE FROM atrion_entries WHERE namespace = $1 AND key = $2 RETURNING {LIVE} AS live");
        let live: Option<bool> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| err(Op::Delete, Some(key), e))?;
        Ok(live.unwrap_or(false))
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT key FROM atrion_entries WHERE namespace = $1 AND starts_with(key, $2) AND {LIVE}
             ORDER BY key COLLATE \"C\""
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .bind(prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| err(Op::ListKeys, None, e))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        check_key(BACKEND, Op::CompareAndSwap, key)?;
        check_value(BACKEND, Op::CompareAndSwap, key, &value)?;
        let op = Op::CompareAndSwap;
        let swapped: Option<i64> = match expected {
            Some(v) => {
                let sql = format!(
                    "UPDATE atrion_entries
                     SET value = $3, version = nextval('atrion_version_seq'), expires_at = {}
                     WHERE namespace = $1 AND key = $2 AND version = $5 AND {LIVE}
                     RETURNING version",
                    expiry(4)
                );
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(&self.namespace)
                    .bind(key)
                    .bind(value.as_ref())
                    .bind(ttl_ms(ttl))
                    .bind(v as i64)
                    .fetch_optional(&self.pool)
                    .await
            }
            None => {
                // Insert if absent; replace only a row that has expired.
                let sql = format!(
                    "INSERT INTO atrion_entries (namespace, key, value, version, expires_at)
                     VALUES ($1, $2, $3, nextval('atrion_version_seq'), {})
                     ON CONFLICT (namespace, key) DO UPDATE
                        SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at
                        WHERE atrion_entries.expires_at IS NOT NULL AND atrion_entries.expires_at <= clock_timestamp()
                     RETURNING version",
                    expiry(4)
                );
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(&self.namespace)
                    .bind(key)
                    .bind(value.as_ref())
                    .bind(ttl_ms(ttl))
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(|e| err(op, Some(key), e))?;
        if let Some(version) = swapped {
            return Ok(CasOutcome::Swapped { version: version as u64 });
        }
        let current = self.get(key).await?.map(|e| e.version);
        Ok(CasOutcome::Conflict { current })
    }

    /// One transaction ([`PostgresStore`]'s `try_group`), started again (up to 64 times)
    /// when a key it found absent was created meanwhile by a writer outside the groups.
    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        group.validate(BACKEND)?;
        if group.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<&str> = group.keys().collect();
        keys.sort_unstable();
        keys.dedup();
        for _ in 0..GROUP_ATTEMPTS {
            match self.try_group(&group, &keys).await {
                Ok(versions) => return Ok(versions),
                Err(GroupStop::Done(e)) => return Err(e),
                Err(GroupStop::Again) => tokio::task::yield_now().await,
            }
        }
        Err(StoreError::new(BACKEND, Op::Transact, keys.first().copied(), ErrorKind::Contended(GROUP_ATTEMPTS)))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let sql = format!(
            "SELECT count(*)::bigint AS keys, coalesce(sum(length(value)), 0)::bigint AS bytes
             FROM atrion_entries WHERE namespace = $1 AND {LIVE}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| err(Op::Stats, None, e))?;
        let keys: i64 = row.try_get("keys").map_err(|e| err(Op::Stats, None, e))?;
        let bytes: i64 = row.try_get("bytes").map_err(|e| err(Op::Stats, None, e))?;
        Ok(StoreStats { keys: keys as u64, value_bytes: bytes as u64 })
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        let n = sqlx::query(
            "DELETE FROM atrion_entries WHERE namespace = $1 AND expires_at IS NOT NULL AND expires_at <= clock_timestamp()",
        )
        .bind(&self.namespace)
        .execute(&self.pool)
        .await
        .map_err(|e| err(Op::Cleanup, None, e))?
        .rows_affected();
        Ok(CleanupStats { expired: n })
    }

    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(|e| err(Op::Subscribe, None, e))?;
        listener.listen(CHANNEL).await.map_err(|e| err(Op::Subscribe, None, e))?;
        let (tx, rx) = mpsc::channel(4096);
        let namespace = self.namespace.clone();
        let pool = self.pool.clone();
        tokio::spawn(feed::forward(listener, pool, namespace, tx));
        Ok(Some(ChangeFeed::from_channel(rx, prefix)))
    }

    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for k in keys {
            check_key(BACKEND, Op::BatchGet, k)?;
        }
        let sql = format!(
            "SELECT key, value, version, {TTL_MS} AS ttl_ms FROM atrion_entries
             WHERE namespace = $1 AND key = ANY($2::text[]) AND {LIVE}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| err(Op::BatchGet, None, e))?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get("key").map_err(|e| err(Op::BatchGet, None, e))?;
            let e = entry(Op::BatchGet, &key, &row)?;
            found.insert(key, e);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for (k, v, _) in &items {
            check_key(BACKEND, Op::BatchSet, k)?;
            check_value(BACKEND, Op::BatchSet, k, v)?;
        }
        let versions = self.write_many(Op::BatchSet, &items).await?;
        items
            .iter()
            .map(|(k, _, _)| {
                versions
                    .get(k)
                    .copied()
                    .ok_or_else(|| StoreError::new(BACKEND, Op::BatchSet, Some(k), ErrorKind::Backend))
            })
            .collect()
    }

    /// One statement for the whole batch (one notification); a member given twice for one
    /// key keeps its last share.
    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let batch = ShareBatch::new(&items)?;
        batch
            .bind(sqlx::query(PUT_SHARES), &self.namespace)
            .execute(&self.pool)
            .await
            .map_err(|e| err(Op::PutShares, None, e))?;
        Ok(())
    }

    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        self.read_shares(keys, member, Some(2)).await
    }

    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        Ok(self.read_shares(std::slice::from_ref(&key.to_owned()), "", None).await?.pop().flatten())
    }

    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT key FROM atrion_shares WHERE namespace = $1 AND starts_with(key, $2)")
                .bind(&self.namespace)
                .bind(prefix)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| err(Op::ListShares, None, e))?;
        keys.sort_unstable();
        Ok(keys)
    }

    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        for k in keys {
            check_key(BACKEND, Op::BatchDelete, k)?;
        }
        let sql = format!(
            "WITH gone AS (DELETE FROM atrion_entries WHERE namespace = $1 AND key = ANY($2::text[]) RETURNING {LIVE} AS live)
             SELECT count(*) FILTER (WHERE live)::bigint FROM gone"
        );
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(&self.namespace)
            .bind(keys)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| err(Op::BatchDelete, None, e))?;
        Ok(n as u64)
    }
}
