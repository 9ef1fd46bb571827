//! A Redis primary, one replica and three sentinels of the test's own, on spare ports in
//! directories of their own, all killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::buy_support::OwnRedis;
use crate::helpers::{free_port, random_suffix};

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
