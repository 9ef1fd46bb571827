//! Redis servers of a test's own, for tests about crashes, persistence and failover: a single
//! [`OwnRedis`] on a spare port, or a [`SentinelSet`] (a primary, one replica and three
//! sentinels). Each lives in a directory of its own and is killed on drop.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{free_port, random_suffix};

/// A `redis-server` of the test's own, on a free port, in a directory of its own (where its
/// AOF and RDB files live, so [`OwnRedis::restart`] reloads them), killed on drop.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    settings: Vec<String>,
}

impl OwnRedis {
    /// A Redis that keeps nothing on disk.
    pub async fn start() -> OwnRedis {
        Self::start_with(&["--save", "", "--appendonly", "no"]).await
    }

    /// A Redis with these settings (redis.conf directives as flags, e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`).
    pub async fn start_with(settings: &[&str]) -> OwnRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("seckill-redis-{port}-{}", random_suffix()));
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        let mut r = OwnRedis {
            port,
            child: None,
            dir,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        r.restart().await;
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Where its AOF and RDB files are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Starts it (again) with its settings and directory; waits until it answers PING
    /// (so an AOF is loaded by the time this returns).
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        for _ in 0..250 {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Sends `sig` (such as `-STOP`) to the server.
    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap();
        }
    }

    /// Kills the server (its files stay for [`OwnRedis::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name the sentinels monitor the primary under.
pub const MASTER: &str = "seckill-test";

/// A replicated Redis watched by three sentinels.
pub struct SentinelSet {
    pub primary: OwnRedis,
    pub replica: OwnRedis,
    pub sentinel_ports: Vec<u16>,
    sentinels: Vec<Child>,
    dir: std::path::PathBuf,
}

impl SentinelSet {
    /// Starts the primary, a replica of it (waiting until it is in sync) and three
    /// sentinels (waiting until each knows the replica), with a one-second failure detection.
    pub async fn start(primary_settings: &[&str]) -> SentinelSet {
        let primary = OwnRedis::start_with(primary_settings).await;
        let primary_port = primary.port.to_string();
        let mut replica_settings = primary_settings.to_vec();
        replica_settings.extend(["--replicaof", "127.0.0.1", &primary_port]);
        let replica = OwnRedis::start_with(&replica_settings).await;
        wait_until("the replica is in sync", || async {
            info(&replica.url(), "replication")
                .await
                .contains("master_link_status:up")
        })
        .await;
        let dir = std::env::temp_dir().join(format!("seckill-sentinels-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut set = SentinelSet {
            primary,
            replica,
            sentinel_ports: Vec::new(),
            sentinels: Vec::new(),
            dir,
        };
        for i in 0..3 {
            let port = free_port();
            let conf = set.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    set.dir.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            set.sentinels.push(child);
            set.sentinel_ports.push(port);
        }
        for port in set.sentinel_ports.clone() {
            let url = format!("redis://127.0.0.1:{port}");
            wait_until("a sentinel sees the replica", || async {
                sentinel_replicas(&url).await >= 1
            })
            .await;
        }
        set
    }

    /// `redis+sentinel://` URL naming the three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{MASTER}/0", hosts.join(","))
    }

    /// The port of the server every sentinel calls primary now (`None` while they disagree).
    pub async fn primary_port(&self) -> Option<u16> {
        let mut agreed = None;
        for sentinel in &self.sentinel_ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{sentinel}")).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let (_, port): (String, u16) = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER)
                .query_async(&mut conn)
                .await
                .ok()?;
            if agreed.is_some_and(|a| a != port) {
                return None;
            }
            agreed = Some(port);
        }
        agreed
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `INFO section` of the server at `url` ("" when it does not answer).
pub async fn info(url: &str, section: &str) -> String {
    let Ok(client) = redis::Client::open(url) else {
        return String::new();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

async fn sentinel_replicas(url: &str) -> usize {
    let Ok(client) = redis::Client::open(url) else { return 0 };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let replicas: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(MASTER)
        .query_async(&mut conn)
        .await;
    replicas.map(|r| r.len()).unwrap_or(0)
}

/// Polls `ready` every 50 ms for up to 30 s.
pub async fn wait_until<F, Fut>(what: &str, ready: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Redis Cluster of three primaries (no replicas), each an [`OwnRedis`] with
/// `--cluster-enabled yes` and a cluster bus port of its own, joined with
/// `redis-cli --cluster create`; killed on drop.
pub struct OwnCluster {
    pub nodes: Vec<OwnRedis>,
}

impl OwnCluster {
    /// Starts three nodes with `settings` (as for [`OwnRedis::start_with`]), joins them and
    /// waits until every node says `cluster_state:ok`.
    pub async fn start(settings: &[&str]) -> OwnCluster {
        Self::start_with_replicas(settings, 0).await
    }

    /// Three primaries with `replicas` replicas each (assigned by `redis-cli --cluster create
    /// --cluster-replicas`), every node started with `settings`.
    pub async fn start_with_replicas(settings: &[&str], replicas: usize) -> OwnCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            let bus = crate::helpers::free_port().to_string();
            let mut node_settings = vec!["--cluster-enabled", "yes", "--cluster-port", &bus];
            node_settings.extend_from_slice(settings);
            nodes.push(OwnRedis::start_with(&node_settings).await);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("redis-cli on PATH");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = OwnCluster { nodes };
        for node in &cluster.nodes {
            let url = node.url();
            wait_until("every node says cluster_state:ok", || async {
                cluster_info(&url).await.contains("cluster_state:ok")
            })
            .await;
        }
        if replicas > 0 {
            for node in &cluster.nodes {
                let url = node.url();
                wait_until("every replica is in sync", || async {
                    let info = info(&url, "replication").await;
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
                .await;
            }
        }
        cluster
    }

    /// `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }

    /// A plain connection to each node that answers, with its port.
    pub async fn node_conns(&self) -> Vec<(u16, redis::aio::MultiplexedConnection)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let client = redis::Client::open(node.url()).unwrap();
            if let Ok(Ok(conn)) =
                tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection()).await
            {
                out.push((node.port, conn));
            }
        }
        out
    }

    /// The port of the primary serving `key`'s slot (`CLUSTER KEYSLOT`, then `CLUSTER NODES`).
    pub async fn port_of(&self, key: &str) -> u16 {
        match self.try_port_of(key).await {
            Some(port) => port,
            None => panic!("no primary serves the slot of {key}"),
        }
    }

    /// Whether the node on `port` is a primary now.
    pub async fn is_primary(&self, port: u16) -> bool {
        info(&format!("redis://127.0.0.1:{port}/0"), "replication")
            .await
            .contains("role:master")
    }

    /// The port of a replica of the primary on `port`.
    pub async fn replica_of(&self, port: u16) -> u16 {
        let conns: HashMap<u16, redis::aio::MultiplexedConnection> = self.node_conns().await.into_iter().collect();
        let mut conn = conns[&port].clone();
        let id: String = redis::cmd("CLUSTER").arg("MYID").query_async(&mut conn).await.unwrap();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await.unwrap();
        nodes
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f[2].contains("slave") && f[3] == id)
            .map(|f| {
                f[1].split(['@', ','])
                    .next()
                    .unwrap()
                    .rsplit_once(':')
                    .unwrap()
                    .1
                    .parse()
                    .unwrap()
            })
            .unwrap_or_else(|| panic!("no replica of {port}"))
    }

    /// [`Self::port_of`], `None` while no healthy primary serves the slot (during a failover).
    pub async fn try_port_of(&self, key: &str) -> Option<u16> {
        let (_, mut conn) = self.node_conns().await.remove(0);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await.unwrap();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields[2].contains("master") || fields[2].contains("fail") || fields.len() < 9 {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ','])
                .next()
                .unwrap()
                .rsplit_once(':')
                .unwrap()
                .1
                .parse()
                .unwrap();
            for range in &fields[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if (lo.parse::<u16>().unwrap()..=hi.parse::<u16>().unwrap()).contains(&slot) {
                    return Some(port);
                }
            }
        }
        None
    }
}

impl OwnCluster {
    /// Moves `key`'s slot, with every key in it, from the primary serving it to the node on
    /// `to` (what `redis-cli --cluster reshard` does for each slot: IMPORTING / MIGRATING,
    /// MIGRATE, then SETSLOT NODE on every node).
    pub async fn move_slot_of(&self, key: &str, to: u16) {
        let from = self.port_of(key).await;
        assert_ne!(from, to, "{key} is already on {to}");
        let conns: HashMap<u16, redis::aio::MultiplexedConnection> = self.node_conns().await.into_iter().collect();
        let (mut src, mut dst) = (conns[&from].clone(), conns[&to].clone());
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut src)
            .await
            .unwrap();
        let src_id: String = redis::cmd("CLUSTER").arg("MYID").query_async(&mut src).await.unwrap();
        let dst_id: String = redis::cmd("CLUSTER").arg("MYID").query_async(&mut dst).await.unwrap();
        let setslot = |state: &str, id: &str| {
            let mut c = redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(state).arg(id);
            c
        };
        let () = setslot("IMPORTING", &src_id).query_async(&mut dst).await.unwrap();
        let () = setslot("MIGRATING", &dst_id).query_async(&mut src).await.unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut src)
                .await
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut src)
                .await
                .unwrap();
        }
        for mut conn in conns.into_values() {
            let () = setslot("NODE", &dst_id).query_async(&mut conn).await.unwrap();
        }
        let (url, to_url) = (self.nodes[0].url(), format!("redis://127.0.0.1:{to}/0"));
        wait_until("the cluster agrees on the moved slot", || async {
            cluster_info(&url).await.contains("cluster_state:ok")
                && cluster_info(&to_url).await.contains("cluster_state:ok")
        })
        .await;
        assert_eq!(self.port_of(key).await, to);
    }
}

async fn cluster_info(url: &str) -> String {
    let Ok(client) = redis::Client::open(url) else {
        return String::new();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}
