//! The change feed of the PostgreSQL store: `LISTEN` on the trigger's channel, turned into
//! [`Change`]s; a [`Change::Resync`] after every reconnect, since notifications sent while a
//! listener is away are lost.

use std::time::Duration;

use atrion_state::Change;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;

use crate::CHANNEL;

/// Forwards the notifications of this namespace to `tx` until the feed is dropped,
/// listening again on a fresh connection of `pool` whenever the listener's breaks.
pub(crate) async fn forward(mut listener: PgListener, pool: PgPool, namespace: String, tx: mpsc::Sender<Change>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                let Some(change) = parse(n.payload(), &namespace) else { continue };
                if tx.send(change).await.is_err() {
                    return; // the feed was dropped
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

/// `set <version> <namespace> <key>` or `del <namespace> <key>`, for our namespace only.
fn parse(payload: &str, namespace: &str) -> Option<Change> {
    if let Some(rest) = payload.strip_prefix("set ") {
        let (ver, rest) = rest.split_once(' ')?;
        let (ns, key) = rest.split_once(' ')?;
        let version = ver.parse().ok()?;
        (ns == namespace).then(|| Change::Set { key: key.to_owned(), version })
    } else {
        let rest = payload.strip_prefix("del ")?;
        let (ns, key) = rest.split_once(' ')?;
        (ns == namespace).then(|| Change::Deleted { key: key.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_parse_for_our_namespace_only() {
        assert_eq!(parse("set 7 atrion GET /a b", "atrion"), Some(Change::Set { key: "GET /a b".into(), version: 7 }));
        assert_eq!(parse("del atrion k", "atrion"), Some(Change::Deleted { key: "k".into() }));
        assert_eq!(parse("set 7 other k", "atrion"), None);
        assert_eq!(parse("set x atrion k", "atrion"), None);
        assert_eq!(parse("garbage", "atrion"), None);
    }
}
