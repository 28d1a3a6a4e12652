//! The cluster's key format and its limits: the one place that builds and parses the keys
//! a [`crate::StateManager`] reads and writes.
//!
//! ```text
//! {namespace}/route/{route}/node/{node}   one node's contribution to a route
//! {namespace}/node/{node}                 a node's heartbeat
//! ```
//!
//! Node ids have no `/`, so the last `/node/` of a contribution key separates the route
//! (which may contain `/`) from the node. A key is at most [`MAX_KEY_LEN`] bytes, so the
//! longest route that can be shared is [`ClusterKeys::max_route_len`]; a longer one stays
//! local to its node.

use crate::store::MAX_KEY_LEN;

const ROUTE: &str = "/route/";
const NODE: &str = "/node/";

/// Builds and parses the keys of one node of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    node_id: String,
    /// `{namespace}/`
    all: String,
    /// `{namespace}/route/`
    routes: String,
    /// `{namespace}/node/`
    nodes: String,
    /// `/node/{node}`
    suffix: String,
}

impl ClusterKeys {
    /// The keys of node `node_id` in cluster `namespace` (both validated by
    /// [`crate::SyncConfig::validate`]: no `/` in either).
    pub fn new(namespace: &str, node_id: &str) -> Self {
        ClusterKeys {
            node_id: node_id.to_owned(),
            all: format!("{namespace}/"),
            routes: format!("{namespace}{ROUTE}"),
            nodes: format!("{namespace}{NODE}"),
            suffix: format!("{NODE}{node_id}"),
        }
    }

    /// The prefix of every key of the cluster.
    pub fn cluster_prefix(&self) -> &str {
        &self.all
    }

    /// The longest route id (bytes) whose contribution key fits in [`MAX_KEY_LEN`].
    pub fn max_route_len(&self) -> usize {
        MAX_KEY_LEN.saturating_sub(self.routes.len() + self.suffix.len())
    }

    /// This node's contribution key for `route`, or `None` when it would be longer than
    /// [`MAX_KEY_LEN`] (or the route is empty): such a route is kept local.
    pub fn contribution(&self, route: &str) -> Option<String> {
        if route.is_empty() || route.len() > self.max_route_len() {
            return None;
        }
        Some(format!("{}{route}{}", self.routes, self.suffix))
    }

    /// This node's heartbeat key.
    pub fn heartbeat(&self) -> String {
        format!("{}{}", self.nodes, self.node_id)
    }

    /// `(route, node)` of a contribution key of this cluster, any node.
    pub fn parse_contribution<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(self.routes.as_str())?;
        let (route, node) = rest.rsplit_once(NODE)?;
        (!route.is_empty() && !node.is_empty() && !node.contains('/')).then_some((route, node))
    }

    /// The node of a heartbeat key of this cluster, any node.
    pub fn parse_heartbeat<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.nodes.as_str()).filter(|n| !n.is_empty() && !n.contains('/'))
    }

    /// Whether `node` is this node.
    pub fn is_own(&self, node: &str) -> bool {
        node == self.node_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roundtrip_even_with_slashes_in_routes() {
        let k = ClusterKeys::new("ns", "n1");
        let key = k.contribution("GET /a/node/b").unwrap();
        assert_eq!(key, "ns/route/GET /a/node/b/node/n1");
        assert_eq!(k.parse_contribution(&key), Some(("GET /a/node/b", "n1")));
        assert_eq!(k.parse_contribution("ns/route/x/node/"), None);
        assert_eq!(k.parse_contribution("ns/node/n1"), None);
        assert_eq!(k.parse_contribution("other/route/x/node/n1"), None);
        assert_eq!(k.parse_heartbeat(&k.heartbeat()), Some("n1"));
        assert_eq!(k.parse_heartbeat("ns/node/"), None);
        assert!(k.is_own("n1") && !k.is_own("n2"));
    }

    #[test]
    fn the_longest_route_fits_and_one_byte_more_does_not() {
        let k = ClusterKeys::new("atrion", "node-with-a-long-name");
        let max = k.max_route_len();
        let fits = "r".repeat(max);
        assert_eq!(k.contribution(&fits).unwrap().len(), MAX_KEY_LEN);
        assert_eq!(
            k.parse_contribution(&k.contribution(&fits).unwrap()),
            Some((fits.as_str(), "node-with-a-long-name"))
        );
        assert_eq!(k.contribution(&"r".repeat(max + 1)), None);
        assert_eq!(k.contribution(""), None);
        // Multi-byte characters count in bytes.
        let wide = "é".repeat(max / 2 + 1);
        assert!(wide.len() > max);
        assert_eq!(k.contribution(&wide), None);
    }
}
