//! The change feed of the Redis store: notifications over pub/sub, turned into
//! [`Change`]s; a [`Change::Resync`] after every reconnect, since pub/sub loses what is sent
//! while a client is away.

use std::time::Duration;

use atrion_state::shares::next_token;
use atrion_state::{Change, ChangeRef, Notice};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// A notification's payload, owned as redis-rs received it (no copy).
struct Payload(redis::Msg);

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.0.get_payload_bytes()
    }
}

/// Forwards the notifications of `channel` to `tx`, whole (the reader reads their records in
/// place: [`record_ref`]), until the feed is dropped, subscribing again whenever the
/// subscription breaks: through `clients[at]`, or the next client that answers (another node
/// of a cluster).
pub(crate) async fn forward(
    clients: Vec<redis::Client>,
    mut at: usize,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    tx: mpsc::Sender<Notice>,
) {
    loop {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let notice = Notice::Raw { payload: Bytes::from_owner(Payload(msg)), parse: record_ref };
            if tx.send(notice).await.is_err() {
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
            let attempt = async {
                let mut p = clients[at].get_async_pubsub().await?;
                p.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(p)
            };
            if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                pubsub = p;
                break;
            }
            at = (at + 1) % clients.len();
        }
        if tx.send(Notice::Change(Change::Resync)).await.is_err() {
            return;
        }
    }
}

/// The changes of a notification: records of tokens (`scripts.rs`), `set <version> <key>
/// <value>`, `ref <version> <key>`, `del 0 <key>`. Parsing stops at the first record that
/// does not read.
pub(crate) fn parse(mut rest: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some(change) = record_ref(&mut rest) else { break };
        out.push(change.to_change());
    }
    out
}

/// The next record of a notification, read in place ([`atrion_state::NoticeParser`]).
pub(crate) fn record_ref<'a>(rest: &mut &'a [u8]) -> Option<ChangeRef<'a>> {
    let kind = next_token(rest)?;
    let version = std::str::from_utf8(next_token(rest)?).ok()?.parse().ok()?;
    let key = std::str::from_utf8(next_token(rest)?).ok()?;
    Some(match kind {
        b"set" => ChangeRef::Set { key, version, value: Some(next_token(rest)?) },
        b"ref" => ChangeRef::Set { key, version, value: None },
        b"del" => ChangeRef::Deleted { key },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_parse_keys_with_spaces_and_binary_values() {
        let changes = parse(b"3:set1:79:GET /a b/3:\x00:\xff3:ref1:81:x3:del1:01:y");
        assert_eq!(
            changes,
            vec![
                Change::Set { key: "GET /a b/".into(), version: 7, value: Some(Bytes::from_static(b"\x00:\xff")) },
                Change::Set { key: "x".into(), version: 8, value: None },
                Change::Deleted { key: "y".into() },
            ]
        );
        assert!(parse(b"garbage").is_empty());
        assert_eq!(parse(b"3:del1:01:y3:zzz").len(), 1, "stops at the first record that does not read");
    }
}
