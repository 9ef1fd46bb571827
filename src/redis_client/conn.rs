//! The connection handle every caller gets from [`RedisClient::conn`](super::RedisClient::conn):
//! one server (direct or Sentinel's primary) or a Redis Cluster, behind one type that the
//! redis crate's commands, pipelines and scripts accept, so no caller needs to know which.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, ServerErrorKind, Value};

/// A multiplexed connection: to one server, to a whole cluster (each command goes to the
/// primary of its key's slot), or to one node of a cluster (every command goes there).
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster, routed by key slot.
    Cluster(ClusterConnection),
    /// One node of a Redis Cluster (`host`, `port` as the cluster names it), for the
    /// commands that are about a node rather than a key: SCAN, INFO, CONFIG GET.
    Node(ClusterConnection, String, u16),
    /// The primary of one slot of a Redis Cluster, for keyless commands about that slot's
    /// writes (`WAIT` after an activity's purchases).
    Slot(ClusterConnection, Route),
}

impl RedisConn {
    /// Commands on this connection go to the primary serving `key`'s slot (in a cluster;
    /// one server is the primary of every key).
    pub fn for_key(self, key: &str) -> RedisConn {
        match self {
            RedisConn::Cluster(c) | RedisConn::Node(c, ..) | RedisConn::Slot(c, _) => {
                RedisConn::Slot(c, Route::with_key(key, SlotAddr::Master))
            }
            single => single,
        }
    }

    fn at_node(host: &str, port: u16) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port,
        }
    }
}

/// The redis crate refuses a pipeline whose commands hash to different slots before sending
/// anything; a plain (non-MULTI) pipeline promises no atomicity, so sending its commands one
/// by one, each to its own slot's primary, keeps its meaning. Cross-activity reads (every
/// activity's hash, every activity's blacklist) are such pipelines.
fn is_cross_slot(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
            RedisConn::Node(c, host, port) => {
                let routing = RoutingInfo::SingleNode(Self::at_node(host, *port));
                Box::pin(c.route_command(cmd.clone(), routing))
            }
            RedisConn::Slot(c, route) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*route));
                Box::pin(c.route_command(cmd.clone(), routing))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => Box::pin(async move {
                match c.req_packed_commands(pipeline, offset, count).await {
                    Err(e) if is_cross_slot(&e) && !pipeline.is_transaction() => {
                        let mut out = Vec::with_capacity(pipeline.len());
                        for cmd in pipeline.cmd_iter() {
                            out.push(c.req_packed_command(cmd).await?);
                        }
                        Ok(out)
                    }
                    other => other,
                }
            }),
            RedisConn::Node(c, host, port) => {
                let route = Self::at_node(host, *port);
                Box::pin(c.route_pipeline(pipeline.clone(), offset, count, route))
            }
            RedisConn::Slot(c, route) => {
                let route = SingleNodeRoutingInfo::SpecificNode(*route);
                Box::pin(c.route_pipeline(pipeline.clone(), offset, count, route))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(_) | RedisConn::Node(..) | RedisConn::Slot(..) => 0,
        }
    }
}

/// A primary node of the deployment: the one server, or each primary of a cluster.
#[derive(Clone)]
pub struct Node {
    /// `host:port`, for messages.
    pub addr: String,
    /// A connection whose every command goes to this node.
    pub conn: RedisConn,
}

/// The primaries listed in a `CLUSTER NODES` reply that serve slots, as (host, port):
/// `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`.
pub fn primaries_in(cluster_nodes: &str) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = cluster_nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let is_primary = flags.split(',').any(|f| f == "master");
            let failing = flags.split(',').any(|f| matches!(f, "fail" | "noaddr" | "handshake"));
            if !is_primary || failing || fields.len() < 9 {
                return None;
            }
            let addr = fields[1].split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_with_slots_are_found_in_cluster_nodes() {
        let reply = "\
a1 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
b2 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
c3 127.0.0.1:7003@17003 slave b2 0 1 1 connected
d4 127.0.0.1:7004@17004 master - 0 1 4 connected
e5 127.0.0.1:7005@17005 master,fail - 0 1 5 disconnected 12000-16383
f6 [::1]:7002@17002,node-f master - 0 1 3 connected 10923-11999
";
        assert_eq!(
            primaries_in(reply),
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001),
                ("::1".to_string(), 7002)
            ]
        );
    }
}
