//! The change feed of the PostgreSQL store: `LISTEN` on the trigger's channel, turned into
//! [`Change`]s; a [`Change::Resync`] after every reconnect, since notifications sent while a
//! listener is away are lost.

use std::time::Duration;

use atrion_state::Change;
use atrion_state::shares::next_token;
use bytes::Bytes;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;

use crate::CHANNEL;

/// Forwards the notifications of this namespace to `tx` until the feed is dropped,
/// listening again on a fresh connection of `pool` whenever the listener's breaks.
pub(crate) async fn forward(mut listener: PgListener, pool: PgPool, namespace: String, tx: mpsc::Sender<Change>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                for change in parse(n.payload(), &namespace) {
                    if tx.send(change).await.is_err() {
                        return; // the feed was dropped
                    }
                }
            }
            // The connection was lost (`None` or an error): whatever was notified
            // meanwhile is gone. Listen again on a fresh connection, and only then ask
            // the reader to resynchronise, so that nothing written after its full
            // sync can slip between the two.
            Ok(None) | Err(_) => {
                listener = loop {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(mut l) = PgListener::connect_with(&pool).await
                        && l.listen(CHANNEL).await.is_ok()
                    {
                        break l;
                    }
                };
                if tx.send(Change::Resync).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The changes of one notification of our namespace: records of tokens (`sql.rs`),
/// `set <version> <ns> <key> <hex value>`, `ref <version> <ns> <key>`, `del 0 <ns> <key>`.
/// Parsing stops at the first record that does not read.
pub(crate) fn parse(payload: &str, namespace: &str) -> Vec<Change> {
    let mut rest = payload.as_bytes();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some((ns, change)) = record(&mut rest) else { break };
        if ns == namespace.as_bytes() {
            out.push(change);
        }
    }
    out
}

fn record<'p>(rest: &mut &'p [u8]) -> Option<(&'p [u8], Change)> {
    let kind = next_token(rest)?;
    let version = std::str::from_utf8(next_token(rest)?).ok()?.parse().ok()?;
    let ns = next_token(rest)?;
    let key = std::str::from_utf8(next_token(rest)?).ok()?.to_owned();
    let change = match kind {
        b"set" => Change::Set { key, version, value: Some(unhex(next_token(rest)?)?) },
        b"ref" => Change::Set { key, version, value: None },
        b"del" => Change::Deleted { key },
        _ => return None,
    };
    Some((ns, change))
}

/// Bytes from PostgreSQL's `encode(.., 'hex')`.
fn unhex(hex: &[u8]) -> Option<Bytes> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let pairs = hex.chunks(2).map(|p| match p {
        [a, b] => Some(digit(*a)? << 4 | digit(*b)?),
        _ => None,
    });
    pairs.collect::<Option<Vec<u8>>>().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_parse_for_our_namespace_only() {
        let payload = "3:set1:76:atrion8:GET /a b6:00ff3a3:ref1:86:atrion1:x3:del1:05:other1:k3:del1:06:atrion1:y";
        assert_eq!(
            parse(payload, "atrion"),
            vec![
                Change::Set { key: "GET /a b".into(), version: 7, value: Some(Bytes::from_static(&[0, 255, b':'])) },
                Change::Set { key: "x".into(), version: 8, value: None },
                Change::Deleted { key: "y".into() },
            ]
        );
        assert!(parse("garbage", "atrion").is_empty());
        assert!(parse("3:set1:x6:atrion1:k0:", "atrion").is_empty(), "a version that is not a number");
        assert!(parse("3:set1:76:atrion1:k3:0ff", "atrion").is_empty(), "odd hex");
    }
}
