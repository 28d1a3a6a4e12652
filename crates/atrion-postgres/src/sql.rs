//! The SQL of the PostgreSQL store: its schema (a table, a version sequence, a
//! notification trigger) and the fragments its statements are assembled from.

pub(crate) const SCHEMA: &str = r"
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
INSERT INTO atrion_schema (id, version) VALUES (1, 1) ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE FUNCTION atrion_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('atrion_changes', 'del ' || OLD.namespace || ' ' || OLD.key);
    ELSE
        PERFORM pg_notify('atrion_changes', 'set ' || NEW.version || ' ' || NEW.namespace || ' ' || NEW.key);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER atrion_notify AFTER INSERT OR UPDATE OR DELETE ON atrion_entries
    FOR EACH ROW EXECUTE FUNCTION atrion_notify();
";

// Every dynamic statement below is assembled from the constants in this file only (never
// from input): hence `AssertSqlSafe`. Values always travel as bind parameters.

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
