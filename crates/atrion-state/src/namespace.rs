//! The namespace of a cluster and the one format of its keys: the one owner of the default
//! namespace, of the rule a namespace obeys, and of how a layer's keys are laid out in it.
//!
//! ```text
//! {namespace}/{family}/{rest}     e.g. atrion/route/GET /checkout, atrion/policy/desired
//! ```
//!
//! Each layer owns its families and builds its keys with [`family_prefix`]: the cluster
//! sync (`route`, `node`, `local`: `atrion_sync::ClusterKeys`), the policy layer (`policy`,
//! `audit`: `atrion_policy::PolicyKeys`). A store adds nothing to the key it is given: the
//! Redis and PostgreSQL stores keep their own partition of the server (a key prefix, a
//! column), named after the same namespace and checked by the same rule
//! ([`check_namespace`]), so that data written by earlier versions stays where it is.

/// The namespace of a cluster when none is configured.
pub const DEFAULT_NAMESPACE: &str = "atrion";

/// The longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// The one rule a namespace obeys, wherever it is configured (the sync, the policy layer,
/// the Redis and PostgreSQL stores): 1 to [`MAX_NAMESPACE_LEN`] of `[A-Za-z0-9._-]`. It
/// keeps every use safe: no `/` (the key separator), no `:`, `{` or `}` (Redis' separator
/// and hash tags), nothing a SQL literal or a log line would have to escape.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if namespace.is_empty() || namespace.len() > MAX_NAMESPACE_LEN || !namespace.chars().all(ok) {
        return Err(format!("`namespace` must be 1 to {MAX_NAMESPACE_LEN} of [A-Za-z0-9._-], got {namespace:?}"));
    }
    Ok(())
}

/// The prefix of every key of `namespace`: `{namespace}/`.
pub fn namespace_prefix(namespace: &str) -> String {
    format!("{namespace}/")
}

/// The prefix of one family of keys of `namespace`: `{namespace}/{family}/`.
pub fn family_prefix(namespace: &str, family: &str) -> String {
    format!("{namespace}/{family}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_namespace() {
        for good in [DEFAULT_NAMESPACE, "a", "prod-eu.1_x", &"n".repeat(MAX_NAMESPACE_LEN)] {
            assert_eq!(check_namespace(good), Ok(()), "{good}");
        }
        for bad in ["", "a/b", "a:b", "{a}", "has space", "é", &"n".repeat(MAX_NAMESPACE_LEN + 1)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
        assert_eq!((namespace_prefix("ns"), family_prefix("ns", "route")), ("ns/".into(), "ns/route/".into()));
    }
}
