//! Where Redis is, as `redis.url` says: one server (`redis://`, `rediss://`, `unix://`), a
//! primary that Sentinel names (`redis+sentinel://`), or a Redis Cluster (`redis+cluster://`).

use crate::config::url_address;

/// The port sentinels listen on unless the URL says otherwise.
pub const SENTINEL_PORT: u16 = 26379;

/// The port cluster nodes listen on unless the URL says otherwise.
pub const CLUSTER_PORT: u16 = 6379;

/// A parsed `redis.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, by the redis crate's own URL syntax.
    Direct(String),
    /// `redis+sentinel://[[user]:password@]host1[:port],host2[:port]/<master-name>[/<db>]`:
    /// the sentinels to ask, the master name they monitor, and the database and credentials
    /// of the primary (the sentinels themselves are asked without credentials).
    Sentinel {
        /// `host:port` of each sentinel.
        sentinels: Vec<(String, u16)>,
        /// The name the sentinels monitor the primary under.
        master: String,
        /// Database number on the primary.
        db: i64,
        /// ACL user on the primary.
        username: Option<String>,
        /// Password on the primary.
        password: Option<String>,
    },
    /// `redis+cluster://[[user]:password@]host1[:port],host2[:port]/`: some nodes of a Redis
    /// Cluster to learn the slot map from (every node takes the same credentials; a cluster
    /// has only database 0).
    Cluster {
        /// `host:port` of each seed node.
        nodes: Vec<(String, u16)>,
        /// ACL user on every node.
        username: Option<String>,
        /// Password on every node.
        password: Option<String>,
    },
}

impl RedisTarget {
    /// Parses `url`; the error says what is wrong with it (never echoing a password).
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            return parse_cluster(url, rest);
        }
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return Ok(RedisTarget::Direct(url.to_string()));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (username, password, hosts) = split_userinfo(authority);
        let shown = url_address(url);
        if hosts.is_empty() {
            return Err(format!(
                "{shown}: names no sentinel (redis+sentinel://host:26379,.../master-name/db)"
            ));
        }
        let sentinels = parse_hosts(&shown, hosts, SENTINEL_PORT)?;
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or_default();
        if master.is_empty() {
            return Err(format!(
                "{shown}: names no master (redis+sentinel://host:26379,.../master-name/db)"
            ));
        }
        let db = match parts.next().filter(|d| !d.is_empty()) {
            None => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| format!("{shown}: database {d:?} is not a number"))?,
        };
        if parts.next().is_some_and(|p| !p.is_empty()) {
            return Err(format!("{shown}: too many path parts (expected /master-name/db)"));
        }
        Ok(RedisTarget::Sentinel {
            sentinels,
            master: master.to_string(),
            db,
            username,
            password,
        })
    }

    /// How messages name it: `host:port`, or `master NAME via sentinels h1:p1,h2:p2`.
    pub fn describe(&self) -> String {
        match self {
            RedisTarget::Direct(url) => url_address(url),
            RedisTarget::Sentinel { sentinels, master, .. } => {
                let list: Vec<String> = sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                format!("master {master} via sentinels {}", list.join(","))
            }
            RedisTarget::Cluster { nodes, .. } => {
                let list: Vec<String> = nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                format!("cluster {}", list.join(","))
            }
        }
    }
}

fn parse_cluster(url: &str, rest: &str) -> Result<RedisTarget, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (username, password, hosts) = split_userinfo(authority);
    let shown = url_address(url);
    if hosts.is_empty() {
        return Err(format!(
            "{shown}: names no node (redis+cluster://host1:7000,host2:7001/)"
        ));
    }
    if !matches!(path, "" | "0") {
        return Err(format!(
            "{shown}: a Redis Cluster has only database 0, the URL names /{path}"
        ));
    }
    let nodes = parse_hosts(&shown, hosts, CLUSTER_PORT)?;
    Ok(RedisTarget::Cluster {
        nodes,
        username,
        password,
    })
}

/// `[user[:password]@]hosts` into user, password and the hosts part.
fn split_userinfo(authority: &str) -> (Option<String>, Option<String>, &str) {
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (non_empty(user), non_empty(pass)),
            None => (non_empty(info), None),
        },
    };
    (username, password, hosts)
}

fn parse_hosts(shown: &str, hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    hosts
        .split(',')
        .map(|h| parse_host(h, default_port).ok_or_else(|| format!("{shown}: {h:?} is not host[:port]")))
        .collect()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host(h: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse().ok().filter(|p| *p > 0)?,
    };
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_pass_through() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/0"),
            Ok(RedisTarget::Direct("redis://127.0.0.1:6379/0".into()))
        );
    }

    #[test]
    fn sentinel_urls_parse() {
        let t = RedisTarget::parse("redis+sentinel://:pw@h1:26380,h2,[::1]:5/mymaster/3").unwrap();
        assert_eq!(
            t,
            RedisTarget::Sentinel {
                sentinels: vec![("h1".into(), 26380), ("h2".into(), 26379), ("::1".into(), 5)],
                master: "mymaster".into(),
                db: 3,
                username: None,
                password: Some("pw".into()),
            }
        );
        assert_eq!(t.describe(), "master mymaster via sentinels h1:26380,h2:26379,::1:5");
        let t = RedisTarget::parse("redis+sentinel://h1/m").unwrap();
        assert!(matches!(t, RedisTarget::Sentinel { db: 0, .. }));
    }

    #[test]
    fn cluster_urls_parse() {
        let t = RedisTarget::parse("redis+cluster://u:pw@h1:7000,h2,[::1]:7002/").unwrap();
        assert_eq!(
            t,
            RedisTarget::Cluster {
                nodes: vec![("h1".into(), 7000), ("h2".into(), 6379), ("::1".into(), 7002)],
                username: Some("u".into()),
                password: Some("pw".into()),
            }
        );
        assert_eq!(t.describe(), "cluster h1:7000,h2:6379,::1:7002");
        assert!(matches!(
            RedisTarget::parse("redis+cluster://h1:7000"),
            Ok(RedisTarget::Cluster { .. })
        ));
        for (url, why) in [
            ("redis+cluster:///", "names no node"),
            ("redis+cluster://:secret@/", "names no node"),
            ("redis+cluster://h1:x/", "is not host[:port]"),
            ("redis+cluster://:secret@h1:7000,,h2/", "is not host[:port]"),
            ("redis+cluster://:secret@h1:70000/", "is not host[:port]"),
            ("redis+cluster://:secret@h1:7000/3", "only database 0"),
        ] {
            let err = RedisTarget::parse(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("secret"), "{url}: {err}");
        }
    }

    #[test]
    fn bad_sentinel_urls_say_why_without_the_password() {
        for (url, why) in [
            ("redis+sentinel://h1:26379", "names no master"),
            ("redis+sentinel://h1:26379/", "names no master"),
            ("redis+sentinel:///m/0", "names no sentinel"),
            ("redis+sentinel://h1:port/m", "is not host[:port]"),
            ("redis+sentinel://h1:0/m", "is not host[:port]"),
            ("redis+sentinel://h1,/m", "is not host[:port]"),
            ("redis+sentinel://:secret@h1/m/x", "is not a number"),
            ("redis+sentinel://h1/m/0/extra", "too many path parts"),
        ] {
            let err = RedisTarget::parse(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("secret"), "{url}: {err}");
        }
    }
}
