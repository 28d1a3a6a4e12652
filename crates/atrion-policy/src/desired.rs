//! The desired state in the shared store: read it, and change it by compare-and-swap.

use std::sync::Arc;

use atrion_state::{CasOutcome, ErrorKind, Group, GroupWrite, StateStore};

use crate::keys::PolicyKeys;
use bytes::Bytes;

use crate::PolicyError;
use crate::model::{Ban, Desired, Policy, PolicySet, Source};
use crate::validate::Validator;

/// How often a change is retried when another writer got there first (without an expected
/// version, every writer's change lands, one after the other).
const MAX_ATTEMPTS: u32 = 64;

/// What goes with a change in its group ([`DesiredStore::change_with`]): the writes for the
/// new desired state, and a token the caller gets back when they were made.
pub(crate) type WithChange<'a, W> = dyn Fn(&Changed) -> Result<(Vec<GroupWrite>, W), PolicyError> + Send + Sync + 'a;

/// A change to one layer of the desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Replace the layer's policies and bans.
    Replace(PolicySet),
    /// Add a policy, or replace the one on its pattern.
    Upsert(Policy),
    /// Remove the policy on this pattern.
    Remove(String),
    /// Add a ban, or move the deadline of the one on its target.
    Ban(Ban),
    /// Lift the ban on this target (route, client).
    Unban(Option<String>, Option<String>),
}

/// What a change did.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// The desired state before.
    pub before: Desired,
    /// The desired state after (equal to `before` when the change changed nothing: no new
    /// version is written then).
    pub after: Desired,
}

/// The desired state's document in a store.
#[derive(Debug, Clone)]
pub struct DesiredStore {
    store: Arc<dyn StateStore>,
    key: String,
    validator: Validator,
}

impl DesiredStore {
    /// The desired state of the cluster whose keys are `keys`.
    pub fn new(store: Arc<dyn StateStore>, keys: &PolicyKeys, validator: Validator) -> Self {
        DesiredStore { store, key: keys.policy_desired(), validator }
    }

    /// The validator changes go through.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The desired state (the empty one, version 0, when none was ever written), and the
    /// store's version of its key.
    pub async fn read(&self) -> Result<(Desired, Option<u64>), PolicyError> {
        match self.store.get(&self.key).await? {
            None => Ok((Desired::default(), None)),
            Some(e) => Ok((decode(&self.key, &e.value)?, Some(e.version))),
        }
    }

    /// Applies `change` to `source`'s layer as `who` at `now_ms`. With `expected`, only if
    /// the desired version is still that one ([`PolicyError::Conflict`] otherwise); without,
    /// a writer that lost the race re-reads and applies its change again, so that no
    /// change is lost. The result is validated as a whole first: a rejected change leaves
    /// the store untouched.
    pub async fn change(
        &self,
        source: Source,
        change: &Change,
        who: &str,
        expected: Option<u64>,
        now_ms: u64,
    ) -> Result<Changed, PolicyError> {
        self.change_until(source, change, who, expected, now_ms, None).await
    }

    /// [`DesiredStore::change`], written only if the write can start before `deadline`
    /// ([`PolicyError::Late`] otherwise, and nothing is written): a caller that must answer
    /// by then never answers a failure for a change that lands.
    pub async fn change_until(
        &self,
        source: Source,
        change: &Change,
        who: &str,
        expected: Option<u64>,
        now_ms: u64,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Changed, PolicyError> {
        let none = |_: &Changed| Ok((Vec::new(), ()));
        Ok(self.change_with(source, change, who, expected, now_ms, deadline, &none).await?.0)
    }

    /// [`DesiredStore::change_until`], and with the new desired state the writes `with`
    /// returns for the change (its audit entry), all in one group
    /// ([`StateStore::transact`]): the desired state is written with them or not at all. The
    /// second half of the result is `with`'s token when its writes were made with the
    /// change; `None` when they were not: no change to write, or a store without groups
    /// (or whose slot rule the keys do not meet: a Redis Cluster), where the desired state
    /// is written alone by compare-and-swap, as before, and the caller writes the rest
    /// after it.
    #[allow(clippy::too_many_arguments)] // `change_until`'s, and the writes that go with it
    pub(crate) async fn change_with<W>(
        &self,
        source: Source,
        change: &Change,
        who: &str,
        expected: Option<u64>,
        now_ms: u64,
        deadline: Option<tokio::time::Instant>,
        with: &WithChange<'_, W>,
    ) -> Result<(Changed, Option<W>), PolicyError> {
        let caps = self.store.capabilities();
        if let Change::Ban(b) = change {
            self.validator.check_ban(b, now_ms)?;
        }
        for _ in 0..MAX_ATTEMPTS {
            let (before, stored) = self.read().await?;
            if let Some(e) = expected
                && e != before.version
            {
                return Err(PolicyError::Conflict { expected: e, found: before.version });
            }
            let mut after = before.clone();
            // Bans past their deadline leave the layer with the next change to it.
            after.layer_mut(source).bans.retain(|b| b.until_ms > now_ms);
            apply(after.layer_mut(source), change)?;
            if after.layer(source) == before.layer(source) {
                return Ok((Changed { after: before.clone(), before }, None));
            }
            self.validator.check_desired(&after)?;
            after.version = before.version + 1;
            after.updated_ms = now_ms;
            after.updated_by = who.to_owned();
            let bytes = Bytes::from(serde_json::to_vec(&after).map_err(|e| PolicyError::Encode(e.to_string()))?);
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(PolicyError::Late);
            }
            if caps.transactions {
                let changed = Changed { before: before.clone(), after: after.clone() };
                let (writes, token) = with(&changed)?;
                let mut group = Group::new().check(&self.key, stored).put(&self.key, bytes.clone(), None);
                group.writes.extend(writes);
                if !caps.one_slot_groups || group.check_one_slot(self.store.backend()).is_ok() {
                    match self.store.transact(group).await {
                        Ok(_) => return Ok((changed, Some(token))),
                        Err(e) if is_own_conflict(&e, &self.key) && expected.is_some() => {
                            let (now, _) = self.read().await?;
                            return Err(PolicyError::Conflict { expected: before.version, found: now.version });
                        }
                        Err(e) if is_own_conflict(&e, &self.key) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            match self.store.compare_and_swap(&self.key, stored, bytes, None).await? {
                CasOutcome::Swapped { .. } => return Ok((Changed { before, after }, None)),
                CasOutcome::Conflict { .. } if expected.is_some() => {
                    let (now, _) = self.read().await?;
                    return Err(PolicyError::Conflict { expected: before.version, found: now.version });
                }
                CasOutcome::Conflict { .. } => continue,
            }
        }
        Err(PolicyError::Contended { attempts: MAX_ATTEMPTS })
    }
}

/// Whether a group failed on the desired state's own precondition (another writer changed
/// it first).
fn is_own_conflict(e: &atrion_state::StoreError, key: &str) -> bool {
    matches!(e.kind, ErrorKind::PreconditionFailed { .. }) && e.key.as_deref() == Some(key)
}

fn apply(layer: &mut PolicySet, change: &Change) -> Result<(), PolicyError> {
    match change {
        Change::Replace(set) => *layer = set.clone(),
        Change::Upsert(p) => match layer.policies.iter_mut().find(|q| q.route == p.route) {
            Some(q) => *q = p.clone(),
            None => layer.policies.push(p.clone()),
        },
        Change::Remove(route) => {
            let n = layer.policies.len();
            layer.policies.retain(|p| &p.route != route);
            if layer.policies.len() == n {
                return Err(PolicyError::NotFound { what: format!("a policy on `{route}`") });
            }
        }
        Change::Ban(b) => match layer.bans.iter_mut().find(|o| o.same_target(b)) {
            Some(o) => *o = b.clone(),
            None => layer.bans.push(b.clone()),
        },
        Change::Unban(route, client) => {
            let n = layer.bans.len();
            layer.bans.retain(|b| !(&b.route == route && &b.client == client));
            if layer.bans.len() == n {
                return Err(PolicyError::NotFound { what: "a ban on that target".into() });
            }
        }
    }
    Ok(())
}

/// The desired document from its bytes.
pub fn decode(key: &str, bytes: &[u8]) -> Result<Desired, PolicyError> {
    serde_json::from_slice(bytes).map_err(|e| PolicyError::Corrupt { key: key.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use atrion_core::PhysicsConfig;
    use atrion_state::InMemoryStore;
    use serde_json::json;

    use super::*;
    use crate::validate::Limits;

    fn desired() -> (Arc<dyn StateStore>, DesiredStore) {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let v = Validator::new(PhysicsConfig::default(), Limits::default());
        (store.clone(), DesiredStore::new(store, &PolicyKeys::new("t", "a"), v))
    }

    fn policy(route: &str, v: serde_json::Value) -> Policy {
        let mut p: Policy = serde_json::from_value(v).unwrap();
        p.route = route.into();
        p
    }

    fn ban(client: &str, until_ms: u64) -> Ban {
        Ban { route: None, client: Some(client.into()), until_ms, reason: None }
    }

    #[tokio::test]
    async fn nothing_written_reads_as_version_zero() {
        let (_, d) = desired();
        assert_eq!(d.read().await.unwrap(), (Desired::default(), None));
    }

    #[tokio::test]
    async fn each_change_is_one_version_in_one_layer_and_an_upsert_replaces_by_pattern() {
        let (_, d) = desired();
        let c =
            d.change(Source::Api, &Change::Upsert(policy("x", json!({"route": ""}))), "alice", None, 7).await.unwrap();
        assert_eq!(
            (c.before.version, c.after.version, c.after.updated_ms, c.after.updated_by.as_str()),
            (0, 1, 7, "alice")
        );
        let open = policy("x", json!({"route": "", "state": "open"}));
        let c = d.change(Source::Api, &Change::Upsert(open.clone()), "bob", None, 8).await.unwrap();
        assert_eq!((c.after.version, c.after.api.policies.clone()), (2, vec![open]), "replaced, not added");
        let c =
            d.change(Source::File, &Change::Upsert(policy("y", json!({"route": ""}))), "file", None, 9).await.unwrap();
        assert_eq!((c.after.version, c.after.api.policies.len(), c.after.file.policies.len()), (3, 1, 1));
        let c = d.change(Source::Api, &Change::Remove("x".into()), "bob", None, 10).await.unwrap();
        assert_eq!((c.after.version, c.after.api.policies.len()), (4, 0));
        assert_eq!(d.read().await.unwrap().0, c.after, "what the change returns is what is stored");
    }

    #[tokio::test]
    async fn a_change_that_changes_nothing_writes_no_version() {
        let (store, d) = desired();
        let p = Change::Upsert(policy("x", json!({"route": ""})));
        d.change(Source::Api, &p, "alice", None, 1).await.unwrap();
        let key = PolicyKeys::new("t", "a").policy_desired();
        let stored = store.get(&key).await.unwrap().unwrap().version;
        let c = d.change(Source::Api, &p, "alice", None, 2).await.unwrap();
        assert_eq!((c.before.version, c.after.version), (1, 1));
        assert_eq!(store.get(&key).await.unwrap().unwrap().version, stored, "not written");
    }

    #[tokio::test]
    async fn removing_what_is_not_there_is_not_found() {
        let (_, d) = desired();
        let err = d.change(Source::Api, &Change::Remove("x".into()), "a", None, 1).await.unwrap_err();
        assert!(matches!(err, PolicyError::NotFound { .. }), "{err}");
        let err = d.change(Source::Api, &Change::Unban(None, Some("bot".into())), "a", None, 1).await.unwrap_err();
        assert!(matches!(err, PolicyError::NotFound { .. }), "{err}");
        assert_eq!(d.read().await.unwrap().0.version, 0);
    }

    #[tokio::test]
    async fn a_ban_moves_its_deadline_and_leaves_the_layer_once_past_it() {
        let (_, d) = desired();
        d.change(Source::Api, &Change::Ban(ban("bot", 100)), "a", None, 1).await.unwrap();
        let c = d.change(Source::Api, &Change::Ban(ban("bot", 200)), "a", None, 2).await.unwrap();
        assert_eq!(c.after.api.bans, [ban("bot", 200)], "one ban per target");
        // The next change to the layer after its deadline drops it.
        let c = d.change(Source::Api, &Change::Ban(ban("scraper", 900)), "a", None, 300).await.unwrap();
        assert_eq!(c.after.api.bans, [ban("scraper", 900)]);
        let c = d.change(Source::Api, &Change::Unban(None, Some("scraper".into())), "a", None, 301).await.unwrap();
        assert!(c.after.api.bans.is_empty());
        // A ban already past its deadline is refused.
        let err = d.change(Source::Api, &Change::Ban(ban("bot", 5)), "a", None, 400).await.unwrap_err();
        assert!(matches!(err, PolicyError::Rejected(_)), "{err}");
    }

    #[tokio::test]
    async fn a_rejected_change_writes_nothing() {
        let (_, d) = desired();
        let bad = policy("x", json!({"route": "", "physics": {"tuner": {"k": -1.0}}}));
        let err = d.change(Source::Api, &Change::Upsert(bad), "a", None, 1).await.unwrap_err();
        assert!(matches!(err, PolicyError::Rejected(_)), "{err}");
        assert_eq!(d.read().await.unwrap(), (Desired::default(), None));
    }

    #[tokio::test]
    async fn an_expected_version_must_be_the_stored_one() {
        let (_, d) = desired();
        let p = |r: &str| Change::Upsert(policy(r, json!({"route": ""})));
        d.change(Source::Api, &p("x"), "a", Some(0), 1).await.unwrap();
        let err = d.change(Source::Api, &p("y"), "a", Some(0), 2).await.unwrap_err();
        assert!(matches!(err, PolicyError::Conflict { expected: 0, found: 1 }), "{err}");
        d.change(Source::Api, &p("y"), "a", Some(1), 2).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_past_its_deadline_writes_nothing() {
        let (_, d) = desired();
        let deadline = tokio::time::Instant::now();
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        let p = Change::Upsert(policy("x", json!({"route": ""})));
        let err = d.change_until(Source::Api, &p, "a", None, 1, Some(deadline)).await.unwrap_err();
        assert!(matches!(err, PolicyError::Late), "{err}");
        assert_eq!(d.read().await.unwrap().0.version, 0);
    }

    #[tokio::test]
    async fn a_document_that_does_not_decode_is_corrupt() {
        let (store, d) = desired();
        let key = PolicyKeys::new("t", "a").policy_desired();
        store.put(&key, Bytes::from_static(b"[1, 2]"), None).await.unwrap();
        assert!(matches!(d.read().await, Err(PolicyError::Corrupt { .. })));
        let p = Change::Upsert(policy("x", json!({"route": ""})));
        assert!(matches!(d.change(Source::Api, &p, "a", None, 1).await, Err(PolicyError::Corrupt { .. })));
    }
}
