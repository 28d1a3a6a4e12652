//! The change feed of the Redis store: notifications over pub/sub, turned into
//! [`Change`]s; a [`Change::Resync`] after every reconnect, since pub/sub loses what is sent
//! while a client is away.

use std::time::Duration;

use atrion_state::Change;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Forwards the notifications of `channel` to `tx` until the feed is dropped, reconnecting
/// through `client` whenever the subscription breaks.
pub(crate) async fn forward(
    client: redis::Client,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    tx: mpsc::Sender<Change>,
) {
    loop {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let Ok(text) = msg.get_payload::<String>() else { continue };
            if let Some(rest) = text.strip_prefix("batch ") {
                for change in parse_batch(rest) {
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            let change = if let Some(rest) = text.strip_prefix("set ") {
                match rest.split_once(' ') {
                    Some((ver, key)) => match ver.parse() {
                        Ok(version) => Change::Set { key: key.to_owned(), version },
                        Err(_) => continue,
                    },
                    None => continue,
                }
            } else if let Some(key) = text.strip_prefix("del ") {
                Change::Deleted { key: key.to_owned() }
            } else {
                continue;
            };
            if tx.send(change).await.is_err() {
                return; // the feed was dropped
            }
        }
        // Disconnected: whatever was published meanwhile is lost. Reconnect, then
        // tell the reader to resynchronise.
        loop {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(mut p) = client.get_async_pubsub().await
                && p.subscribe(&channel).await.is_ok()
            {
                pubsub = p;
                break;
            }
        }
        if tx.send(Change::Resync).await.is_err() {
            return;
        }
    }
}

/// The changes of a batch notification: `<version> <key length> <key>`, repeated.
fn parse_batch(mut rest: &str) -> Vec<Change> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some((ver, tail)) = rest.split_once(' ') else { break };
        let Some((len, tail)) = tail.split_once(' ') else { break };
        let (Ok(version), Ok(len)) = (ver.parse::<u64>(), len.parse::<usize>()) else { break };
        let Some(key) = tail.get(..len) else { break };
        out.push(Change::Set { key: key.to_owned(), version });
        rest = tail[len..].strip_prefix(' ').unwrap_or("");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_notifications_parse_keys_with_spaces() {
        let changes = parse_batch("7 9 GET /a b/ 8 1 x");
        assert_eq!(
            changes,
            vec![Change::Set { key: "GET /a b/".into(), version: 7 }, Change::Set { key: "x".into(), version: 8 }]
        );
        assert!(parse_batch("garbage").is_empty());
    }
}
