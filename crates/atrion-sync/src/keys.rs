//! The cluster sync's keys and their limits: the one place that builds and parses the keys
//! a [`crate::StateManager`] reads and writes, on the namespace's key format
//! ([`atrion_state::family_prefix`]).
//!
//! ```text
//! {namespace}/route/{route}   the route's shares: one per node, its contribution (atrion_state::shares)
//! {namespace}/node/{node}     a node's heartbeat
//! {namespace}/members         the membership digest: the live nodes, as the watchers last
//!                             found them (crate::wire::Digest)
//! {namespace}/local/{node}/{route}   what a node keeps of a route for its own restart: the
//!                             operator's hold and the open interval (crate::RouteRecord);
//!                             read back only by that node
//! ```
//!
//! A key is at most [`MAX_KEY_LEN`] bytes, so the longest route that can be shared is
//! [`ClusterKeys::max_route_len`]; a longer one stays local to its node (and a route too long
//! for its record key is not kept across a restart).

use atrion_state::{MAX_KEY_LEN, family_prefix, namespace_prefix};

/// Builds and parses the keys of one node of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    namespace: String,
    node_id: String,
    /// `{namespace}/`
    all: String,
    /// `{namespace}/route/`
    routes: String,
    /// `{namespace}/node/`
    nodes: String,
    /// `{namespace}/local/`
    locals: String,
    /// `{namespace}/local/{node}/`
    local: String,
}

impl ClusterKeys {
    /// The keys of node `node_id` in cluster `namespace` (both validated by
    /// [`crate::SyncConfig::validate`]).
    pub fn new(namespace: &str, node_id: &str) -> Self {
        let locals = family_prefix(namespace, "local");
        ClusterKeys {
            namespace: namespace.to_owned(),
            node_id: node_id.to_owned(),
            all: namespace_prefix(namespace),
            routes: family_prefix(namespace, "route"),
            nodes: family_prefix(namespace, "node"),
            local: format!("{locals}{node_id}/"),
            locals,
        }
    }

    /// The cluster's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The prefix of every key of the cluster.
    pub fn cluster_prefix(&self) -> &str {
        &self.all
    }

    /// The prefix of every route's key.
    pub fn routes_prefix(&self) -> &str {
        &self.routes
    }

    /// The prefix of every heartbeat key.
    pub fn nodes_prefix(&self) -> &str {
        &self.nodes
    }

    /// This node's id: its member name in every route's shares.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The longest route id (bytes) whose key fits in [`MAX_KEY_LEN`].
    pub fn max_route_len(&self) -> usize {
        MAX_KEY_LEN.saturating_sub(self.routes.len())
    }

    /// The key of `route`'s shares, or `None` when it would be longer than [`MAX_KEY_LEN`]
    /// (or the route is empty): such a route is kept local.
    pub fn route(&self, route: &str) -> Option<String> {
        if route.is_empty() || route.len() > self.max_route_len() {
            return None;
        }
        // By hand: once per pushed share of every pulse.
        let mut key = String::with_capacity(self.routes.len() + route.len());
        key.push_str(&self.routes);
        key.push_str(route);
        Some(key)
    }

    /// The prefix of every node's route records.
    pub fn locals_prefix(&self) -> &str {
        &self.locals
    }

    /// The prefix of this node's route records.
    pub fn local_prefix(&self) -> &str {
        &self.local
    }

    /// The key of this node's record of `route`, or `None` when it would be longer than
    /// [`MAX_KEY_LEN`] (or the route is empty): such a route is not kept across a restart.
    pub fn local(&self, route: &str) -> Option<String> {
        self.local_fits(route).then(|| format!("{}{route}", self.local))
    }

    /// Whether `route` has a record key (without building it).
    pub fn local_fits(&self, route: &str) -> bool {
        !route.is_empty() && self.local.len() + route.len() <= MAX_KEY_LEN
    }

    /// The route of one of this node's record keys.
    pub fn parse_local<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.local.as_str()).filter(|r| !r.is_empty())
    }

    /// The node and route of any node's record key of this cluster (a restore checks them).
    pub fn parse_local_of_any<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let (node, route) = key.strip_prefix(self.locals.as_str())?.split_once('/')?;
        (!node.is_empty() && !route.is_empty()).then_some((node, route))
    }

    /// The key of the cluster's membership digest.
    pub fn digest(&self) -> String {
        format!("{}members", self.all)
    }

    /// Whether `key` is the cluster's membership digest.
    pub fn is_digest(&self, key: &str) -> bool {
        key.strip_prefix(self.all.as_str()) == Some("members")
    }

    /// This node's heartbeat key.
    pub fn heartbeat(&self) -> String {
        format!("{}{}", self.nodes, self.node_id)
    }

    /// The route of a route key of this cluster.
    pub fn parse_route<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.routes.as_str()).filter(|r| !r.is_empty())
    }

    /// The node of a heartbeat key of this cluster, any node.
    pub fn parse_heartbeat<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.nodes.as_str()).filter(|n| !n.is_empty() && !n.contains('/'))
    }

    /// Whether `node` is this node's id.
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
        let key = k.route("GET /a/node/b").unwrap();
        assert_eq!(key, "ns/route/GET /a/node/b");
        assert_eq!(k.parse_route(&key), Some("GET /a/node/b"));
        assert_eq!(k.parse_route("ns/route/"), None);
        assert_eq!(k.parse_route("ns/node/n1"), None);
        assert_eq!(k.parse_route("other/route/x"), None);
        assert_eq!(k.parse_heartbeat(&k.heartbeat()), Some("n1"));
        assert_eq!(k.parse_heartbeat("ns/node/"), None);
        assert!(k.is_own("n1") && !k.is_own("n2"));
        assert_eq!((k.routes_prefix(), k.nodes_prefix(), k.node_id()), ("ns/route/", "ns/node/", "n1"));
        assert_eq!((k.namespace(), k.cluster_prefix()), ("ns", "ns/"));
        // Route records: this node's own, apart from shares and heartbeats.
        let key = k.local("GET /a/b").unwrap();
        assert_eq!(key, "ns/local/n1/GET /a/b");
        assert_eq!((k.parse_local(&key), k.local_prefix()), (Some("GET /a/b"), "ns/local/n1/"));
        assert_eq!(k.parse_local_of_any(&key), Some(("n1", "GET /a/b")));
        assert!(key.starts_with(k.locals_prefix()) && k.locals_prefix() == "ns/local/");
        assert_eq!(ClusterKeys::new("ns", "n2").parse_local(&key), None, "another node's record");
        assert_eq!(k.parse_local_of_any("ns/local/n2/r"), Some(("n2", "r")));
        assert_eq!((k.parse_local_of_any("ns/local/n2/"), k.parse_local_of_any("ns/local/n2")), (None, None));
        assert_eq!((k.parse_route(&key), k.parse_heartbeat(&key)), (None, None));
        assert_eq!(k.local(&"r".repeat(MAX_KEY_LEN)), None);
    }

    #[test]
    fn the_longest_route_fits_and_one_byte_more_does_not() {
        let k = ClusterKeys::new(atrion_state::DEFAULT_NAMESPACE, "node-with-a-long-name");
        let max = k.max_route_len();
        let fits = "r".repeat(max);
        assert_eq!(k.route(&fits).unwrap().len(), MAX_KEY_LEN);
        assert_eq!(k.parse_route(&k.route(&fits).unwrap()), Some(fits.as_str()));
        assert_eq!(k.route(&"r".repeat(max + 1)), None);
        assert_eq!(k.route(""), None);
        // Multi-byte characters count in bytes.
        let wide = "é".repeat(max / 2 + 1);
        assert!(wide.len() > max);
        assert_eq!(k.route(&wide), None);
    }
}
