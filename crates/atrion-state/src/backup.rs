//! The backup format, in one place: one JSON object per line, `{"key", "value" (base64),
//! "ttl_ms"}`. [`crate::StateService::backup`] writes it to a file and the sidecar streams it
//! over HTTP; both read it back through [`BackupLine::decode`].

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::{Op, StateStore, StoreError};

/// How many keys one read of a backup fetches at a time.
pub const BACKUP_CHUNK: usize = 256;

/// One entry of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLine {
    /// The key.
    pub key: String,
    /// The value's bytes.
    pub value: Bytes,
    /// The time the entry had left to live, if it expires.
    pub ttl: Option<Duration>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    value: String,
    ttl_ms: Option<u64>,
}

impl BackupLine {
    /// The line's JSON, without the newline.
    pub fn encode(&self) -> String {
        let line = Line {
            key: self.key.clone(),
            value: BASE64.encode(&self.value),
            ttl_ms: self.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Reads one line; the error says what is wrong with it. The key is checked as a store
    /// would check it.
    pub fn decode(line: &str) -> Result<BackupLine, String> {
        let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let value = BASE64.decode(&l.value).map_err(|e| format!("value is not base64: {e}"))?;
        crate::check_key("backup", Op::BatchSet, &l.key).map_err(|e| e.to_string())?;
        Ok(BackupLine { key: l.key, value: Bytes::from(value), ttl: l.ttl_ms.map(Duration::from_millis) })
    }

    /// A whole backup, one line each (blank lines skipped); the error is the first bad
    /// line's number (from 1) and what is wrong with it. Nothing is written by reading.
    pub fn decode_all(text: &str) -> Result<Vec<BackupLine>, (u64, String)> {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| BackupLine::decode(line).map_err(|reason| (i as u64 + 1, reason)))
            .collect()
    }

    /// Writes `lines` into `store`, [`BACKUP_CHUNK`] at a time (existing keys are
    /// overwritten); returns how many.
    pub async fn write_all(store: &dyn StateStore, lines: Vec<BackupLine>) -> Result<u64, StoreError> {
        let n = lines.len() as u64;
        let items: Vec<(String, Bytes, Option<Duration>)> =
            lines.into_iter().map(|l| (l.key, l.value, l.ttl)).collect();
        for chunk in items.chunks(BACKUP_CHUNK) {
            store.batch_set(chunk.to_vec()).await?;
        }
        Ok(n)
    }

    /// The live entries of `keys` in `store`, as lines (a key gone meanwhile is skipped).
    pub async fn read(store: &dyn StateStore, keys: &[String]) -> Result<Vec<BackupLine>, StoreError> {
        let entries = store.batch_get(keys).await?;
        Ok(keys
            .iter()
            .zip(entries)
            .filter_map(|(k, e)| e.map(|e| BackupLine { key: k.clone(), value: e.value, ttl: e.ttl }))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_roundtrip_and_garbage_is_named() {
        let l = BackupLine {
            key: "ns/route/a".into(),
            value: Bytes::from_static(b"\x00\xff"),
            ttl: Some(Duration::from_millis(1500)),
        };
        assert_eq!(BackupLine::decode(&l.encode()), Ok(l));
        assert!(BackupLine::decode(r#"{"key":"k","value":"!!","ttl_ms":null}"#).unwrap_err().contains("base64"));
        assert!(BackupLine::decode(r#"{"key":"k","value":"","extra":1}"#).unwrap_err().contains("extra"));
        assert!(BackupLine::decode(r#"{"key":"","value":"","ttl_ms":null}"#).is_err());
        let two = format!("{}\n\n{}\n", l2().encode(), l2().encode());
        assert_eq!(BackupLine::decode_all(&two).map(|v| v.len()), Ok(2));
        let bad = format!("{}\n\nnot json\n", l2().encode());
        assert_eq!(BackupLine::decode_all(&bad).map_err(|(line, _)| line), Err(3));
    }

    fn l2() -> BackupLine {
        BackupLine { key: "ns/k".into(), value: Bytes::from_static(b"v"), ttl: None }
    }
}
