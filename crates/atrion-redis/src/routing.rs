//! How commands reach the servers: one pipeline on a single server; per slot, or per
//! primary with a fallback to routing by slot, on a cluster; `SCAN` on every primary.

use atrion_state::{Op, StoreError};
use futures_util::future::try_join_all;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Script, ScriptInvocation, Value};

use crate::connect::parse_cluster_nodes;
use crate::{Conn, RedisStore, err};

impl RedisStore {
    /// Runs invocations of `script`, replies in order: one pipeline on a single server;
    /// concurrently, each to its key's slot, on a cluster (a pipeline must stay in one slot).
    pub(crate) async fn invoke_all(
        &self,
        script: &Script,
        invs: &[ScriptInvocation<'_>],
    ) -> redis::RedisResult<Vec<Value>> {
        match &self.conn {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                pipe.load_script(script).ignore();
                for inv in invs {
                    pipe.invoke_script(inv);
                }
                pipe.query_async(&mut c.clone()).await
            }
            Conn::Cluster(c) => {
                try_join_all(invs.iter().map(|inv| {
                    let mut c = c.clone();
                    async move { inv.invoke_async::<Value>(&mut c).await }
                }))
                .await
            }
        }
    }

    /// Runs groups of commands, each group on one key (one slot), replies flattened in
    /// order: one pipeline on a single server; one pipeline per group, concurrently, on a
    /// cluster.
    pub(crate) async fn run_groups(&self, groups: Vec<Vec<Cmd>>) -> redis::RedisResult<Vec<Value>> {
        match &self.conn {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in groups.into_iter().flatten() {
                    pipe.add_command(cmd);
                }
                pipe.query_async(&mut c.clone()).await
            }
            Conn::Cluster(c) => {
                let replies = try_join_all(groups.into_iter().map(|group| {
                    let mut c = c.clone();
                    async move {
                        let mut pipe = redis::pipe();
                        for cmd in group {
                            pipe.add_command(cmd);
                        }
                        pipe.query_async::<Vec<Value>>(&mut c).await
                    }
                }))
                .await?;
                Ok(replies.into_iter().flatten().collect())
            }
        }
    }

    /// The primaries of the cluster (`primaries`), or all of its nodes, as `(host, port)`,
    /// from `CLUSTER NODES`; failed nodes left out.
    pub(crate) async fn nodes(&self, primaries: bool) -> redis::RedisResult<Vec<(String, u16)>> {
        let Conn::Cluster(c) = &self.conn else { return Ok(Vec::new()) };
        let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut c.clone()).await?;
        Ok(parse_cluster_nodes(&text, primaries))
    }

    /// The keys matching `pattern`: `SCAN` on the server, or on every primary of the cluster.
    pub(crate) async fn scan_match(&self, op: Op, pattern: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.scan_by_node(op, pattern).await?.into_iter().flat_map(|(_, keys)| keys).collect())
    }

    /// As [`RedisStore::scan_match`], the keys grouped by the primary that holds them (`None`:
    /// the one server).
    pub(crate) async fn scan_by_node(
        &self,
        op: Op,
        pattern: &str,
    ) -> Result<Vec<(Option<(String, u16)>, Vec<String>)>, StoreError> {
        let scan_one = async |conn: &mut Conn, route: Option<&(String, u16)>| -> redis::RedisResult<Vec<String>> {
            let mut cursor: u64 = 0;
            let mut keys = Vec::new();
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1_000);
                let reply = match (&mut *conn, route) {
                    (Conn::Cluster(c), Some((host, port))) => {
                        let at = SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port };
                        c.route_command(cmd, RoutingInfo::SingleNode(at)).await?
                    }
                    (conn, _) => cmd.query_async::<Value>(conn).await?,
                };
                let (next, batch): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        };
        let mut conn = self.conn.clone();
        if !self.is_cluster() {
            return Ok(vec![(None, scan_one(&mut conn, None).await.map_err(|e| err(op, None, e))?)]);
        }
        let mut out = Vec::new();
        for node in self.nodes(true).await.map_err(|e| err(op, None, e))? {
            let keys = scan_one(&mut conn, Some(&node)).await.map_err(|e| err(op, None, e))?;
            out.push((Some(node), keys));
        }
        Ok(out)
    }

    /// Runs `cmds` as one pipeline on the primary `node` of the cluster, whatever their
    /// keys' slots (the commands are separate, so a node answers those of every slot it
    /// holds). A slot that moved since the scan (a `MOVED` reply) or a failed pipeline runs
    /// the commands again key by key, routed by their slots ([`RedisStore::run_groups`]).
    pub(crate) async fn run_on_node(
        &self,
        node: &(String, u16),
        groups: Vec<Vec<Cmd>>,
    ) -> redis::RedisResult<Vec<Value>> {
        let Conn::Cluster(c) = &self.conn else { return self.run_groups(groups).await };
        let mut pipe = redis::pipe();
        let mut count = 0;
        for cmd in groups.iter().flatten() {
            pipe.add_command(cmd.clone());
            count += 1;
        }
        let at = SingleNodeRoutingInfo::ByAddress { host: node.0.clone(), port: node.1 };
        match c.clone().route_pipeline(pipe, 0, count, at).await {
            Ok(replies) if replies.len() == count && !replies.iter().any(|r| matches!(r, Value::ServerError(_))) => {
                Ok(replies)
            }
            _ => self.run_groups(groups).await,
        }
    }

    /// The keys of this store's entries.
    pub(crate) async fn scan(&self, op: Op) -> Result<Vec<String>, StoreError> {
        self.scan_match(op, &format!("{}*", self.entries_prefix())).await
    }
}

#[cfg(test)]
mod tests {
    use atrion_state::StateStore;
    use bytes::Bytes;

    use crate::{RedisConfig, RedisStore};

    /// A pipeline sent to a primary that does not hold the keys' slots (a slot moved since
    /// the scan) gets `MOVED` replies and is run again key by key: the answers are right.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipeline_on_the_wrong_primary_falls_back_to_routing_by_slot() {
        let Some(cluster) = crate::testing::RedisCluster::start() else { return };
        let urls = cluster.urls();
        let mut cfg = RedisConfig::new(urls[0].clone());
        cfg.nodes = urls[1..].to_vec();
        let s = RedisStore::connect(&cfg).await.unwrap();
        let keys: Vec<String> = (0..30).map(|i| format!("moved/{i}")).collect();
        for k in &keys {
            s.set(k, Bytes::from_static(b"abc")).await.unwrap();
        }
        let primaries = s.nodes(true).await.unwrap();
        assert_eq!(primaries.len(), 3);
        let lens = |node: &(String, u16)| {
            let groups = keys
                .iter()
                .map(|k| {
                    let mut len = redis::cmd("HSTRLEN");
                    len.arg(s.redis_key(k)).arg("v");
                    vec![len]
                })
                .collect();
            let s = &s;
            let node = node.clone();
            async move { s.run_on_node(&node, groups).await.unwrap() }
        };
        for node in &primaries {
            let replies = lens(node).await;
            let got: Vec<u64> = replies.iter().map(|v| redis::from_redis_value_ref(v).unwrap()).collect();
            assert_eq!(got, vec![3; keys.len()], "through {node:?}");
        }
    }
}
