//! The SQL of the PostgreSQL store: its schema (the entries and shares tables, a version
//! sequence, statement-level notification triggers) and the fragments its statements are
//! assembled from.

pub(crate) const SCHEMA: &str = r#"
SELECT pg_advisory_xact_lock(7274661);
CREATE TABLE IF NOT EXISTS atrion_entries (
    namespace  text        NOT NULL,
    key        text        NOT NULL,
    value      bytea       NOT NULL,
    version    bigint      NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (namespace, key)
);
CREATE SEQUENCE IF NOT EXISTS atrion_version_seq;
CREATE TABLE IF NOT EXISTS atrion_schema (
    id         int         PRIMARY KEY,
    version    int         NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS atrion_shares (
    namespace  text        NOT NULL,
    key        text        NOT NULL,
    member     text        NOT NULL,
    rank       float8      NOT NULL,
    value      bytea       NOT NULL,
    PRIMARY KEY (namespace, key, member)
);
-- Version 2: one notification per statement (not per row), carrying values, and shares.
INSERT INTO atrion_schema (id, version) VALUES (1, 2)
    ON CONFLICT (id) DO UPDATE SET version = 2, applied_at = now() WHERE atrion_schema.version < 2;
DROP TRIGGER IF EXISTS atrion_notify ON atrion_entries;
DROP FUNCTION IF EXISTS atrion_notify();
-- `<octet length>:<text>`, the token of a notification.
CREATE OR REPLACE FUNCTION atrion_tok(t text) RETURNS text
    AS $$ SELECT octet_length(t)::text || ':' || t $$ LANGUAGE sql IMMUTABLE;
-- STABLE as `convert_to` is: declared IMMUTABLE, it would not be inlined (5x slower).
CREATE OR REPLACE FUNCTION atrion_btok(b bytea) RETURNS bytea
    AS $$ SELECT convert_to(octet_length(b)::text || ':', 'UTF8') || b $$ LANGUAGE sql STABLE;
-- Sends `records` (ns, rec) as few notifications of at most 7,900 bytes (PostgreSQL's limit
-- is 8,000): one per statement, split where it must be.
CREATE OR REPLACE FUNCTION atrion_send(records text[]) RETURNS void AS $$
DECLARE
    rec text;
    msg text := '';
BEGIN
    FOREACH rec IN ARRAY records LOOP
        IF msg <> '' AND octet_length(msg) + octet_length(rec) > 7900 THEN
            PERFORM pg_notify('atrion_changes', msg);
            msg := '';
        END IF;
        msg := msg || rec;
    END LOOP;
    IF msg <> '' THEN
        PERFORM pg_notify('atrion_changes', msg);
    END IF;
END
$$ LANGUAGE plpgsql;
-- Entries: `set <version> <ns> <key> <hex value>` (values up to 1,024 bytes), `ref <version>
-- <ns> <key>` (larger), `del 0 <ns> <key>`.
CREATE OR REPLACE FUNCTION atrion_notify_entries() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM atrion_send(ARRAY(
            SELECT atrion_tok('del') || atrion_tok('0') || atrion_tok(namespace) || atrion_tok(key) FROM changed));
    ELSE
        PERFORM atrion_send(ARRAY(
            SELECT CASE WHEN octet_length(value) <= 1024
                THEN atrion_tok('set') || atrion_tok(version::text) || atrion_tok(namespace) || atrion_tok(key)
                     || atrion_tok(encode(value, 'hex'))
                ELSE atrion_tok('ref') || atrion_tok(version::text) || atrion_tok(namespace) || atrion_tok(key)
                END
            FROM changed));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER atrion_notify_insert AFTER INSERT ON atrion_entries
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION atrion_notify_entries();
CREATE OR REPLACE TRIGGER atrion_notify_update AFTER UPDATE ON atrion_entries
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION atrion_notify_entries();
CREATE OR REPLACE TRIGGER atrion_notify_delete AFTER DELETE ON atrion_entries
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION atrion_notify_entries();
-- Shares: `set 0 <ns> <key> <hex of the key's leaders>` per key the statement changed: its
-- top two by rank and its member count, encoded as `atrion_state::shares::Shares`. One pass
-- over the changed keys' shares (window functions), not two subqueries per key.
CREATE OR REPLACE FUNCTION atrion_notify_shares() RETURNS trigger AS $$
BEGIN
    PERFORM atrion_send(ARRAY(
        SELECT atrion_tok('set') || atrion_tok('0') || atrion_tok(t.namespace) || atrion_tok(t.key)
            || atrion_tok(encode(atrion_btok('s1') || atrion_btok(convert_to(t.n::text, 'UTF8'))
                || coalesce(t.top, ''::bytea), 'hex'))
        FROM (
            SELECT s.namespace, s.key, max(s.n) AS n,
                string_agg(atrion_btok(convert_to(s.member, 'UTF8')) || atrion_btok(convert_to(s.rank::text, 'UTF8'))
                    || atrion_btok(s.value), ''::bytea ORDER BY s.pos) FILTER (WHERE s.pos <= 2) AS top
            FROM (SELECT a.namespace, a.key, a.member, a.rank, a.value,
                    row_number() OVER (PARTITION BY a.namespace, a.key
                        ORDER BY a.rank DESC, a.member COLLATE "C" DESC) AS pos,
                    count(*) OVER (PARTITION BY a.namespace, a.key) AS n
                  FROM atrion_shares a JOIN (SELECT DISTINCT namespace, key FROM changed) k USING (namespace, key)) s
            GROUP BY s.namespace, s.key) t));
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER atrion_notify_shares_insert AFTER INSERT ON atrion_shares
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION atrion_notify_shares();
CREATE OR REPLACE TRIGGER atrion_notify_shares_update AFTER UPDATE ON atrion_shares
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION atrion_notify_shares();
"#;

// Every dynamic statement below is assembled from the constants in this file only (never
// from input): hence `AssertSqlSafe`. Values always travel as bind parameters.

/// A batch of shares, one statement: the newest share of each (key, member) as parallel
/// arrays (`$2` keys, `$3` members, `$4` ranks, `$5` values) in namespace `$1`. The
/// statement-level trigger sends the changed keys' leaders.
pub(crate) const PUT_SHARES: &str = "INSERT INTO atrion_shares (namespace, key, member, rank, value)
     SELECT $1, k, m, r, v FROM unnest($2::text[], $3::text[], $4::float8[], $5::bytea[]) AS t(k, m, r, v)
     ON CONFLICT (namespace, key, member) DO UPDATE SET rank = excluded.rank, value = excluded.value";

/// Rows that are live now.
pub(crate) const LIVE: &str = "(expires_at IS NULL OR expires_at > clock_timestamp())";
/// Milliseconds left, or NULL.
pub(crate) const TTL_MS: &str = "CASE WHEN expires_at IS NULL THEN NULL \
     ELSE GREATEST(0, EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000)::float8 END";
/// An expiry from a nullable millisecond parameter.
pub(crate) fn expiry(param: usize) -> String {
    format!(
        "CASE WHEN ${param}::bigint IS NULL THEN NULL ELSE clock_timestamp() + ${param}::bigint * interval '1 millisecond' END"
    )
}
