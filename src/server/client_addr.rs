//! The client's address: the TCP peer, or, when the peer is a proxy in
//! `auth.trusted_proxies`, the address that proxy reports (`X-Forwarded-For`, else
//! `X-Real-IP`). It keys the per-address rate limits and is named in the buy and token log
//! lines.
//!
//! `X-Forwarded-For` is walked from the right: each proxy appends the address it saw, so the
//! entries right of the first untrusted one were written by proxies we trust, and everything
//! left of it may be the client's own invention.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};

use crate::config::Cidr;

/// Finds a request's client address, given the proxies whose headers are believed.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrs {
    trusted: Vec<Cidr>,
}

/// A request's client address (`None` when the server did not attach the peer's address,
/// as in tests that drive the router directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client(pub Option<IpAddr>);

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("-"),
        }
    }
}

impl ClientAddrs {
    /// Believes the headers of peers in `trusted` only.
    pub fn new(trusted: &[Cidr]) -> Self {
        ClientAddrs {
            trusted: trusted.to_vec(),
        }
    }

    /// True when `ip` (an IPv4-mapped IPv6 address counting as IPv4) is in a trusted network.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        // Several header lines are one list, in order: read from the last line's last entry.
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.rsplit(','))
            .peekable();
        if hops.peek().is_some() {
            // The nearest proxy is the peer; walk back while the hops are proxies we trust.
            let mut client = peer;
            for hop in hops {
                match parse_hop(hop) {
                    Some(ip) if self.trusts(ip) => client = ip,
                    Some(ip) => return ip,
                    // A trusted proxy never writes garbage: this was left of the proxies by
                    // the client, so the last trusted hop is all we know.
                    None => return client,
                }
            }
            return client;
        }
        headers
            .get("x-real-ip")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_hop)
            .unwrap_or(peer)
    }

    /// The client of a request with `headers` and `extensions` (the peer's address as
    /// `ConnectInfo`).
    pub fn of(&self, headers: &HeaderMap, extensions: &Extensions) -> Client {
        Client(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|peer| self.client(peer.0.ip(), headers)),
        )
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>().ok().map(|addr| addr.ip().to_canonical())
}

impl<S: AsRef<ClientAddrs> + Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Client, Self::Rejection> {
        Ok(state.as_ref().of(&parts.headers, &parts.extensions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let addrs = ClientAddrs::new(&["10.0.0.0/8".parse().unwrap(), "127.0.0.1".parse().unwrap()]);
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4")]);
        assert_eq!(addrs.client(ip("8.8.8.8"), &spoofed), ip("8.8.8.8"));
        assert_eq!(addrs.client(ip("127.0.0.1"), &spoofed), ip("1.2.3.4"));
        assert_eq!(
            ClientAddrs::default().client(ip("127.0.0.1"), &spoofed),
            ip("127.0.0.1")
        );
        assert_eq!(addrs.client(ip("::ffff:10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_hops() {
        let addrs = ClientAddrs::new(&["10.0.0.0/8".parse().unwrap()]);
        let peer = ip("10.0.0.1");
        // The client claims 6.6.6.6; the first proxy saw 5.5.5.5; a second proxy 10.1.1.1.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 5.5.5.5, 10.1.1.1")]);
        assert_eq!(addrs.client(peer, &chain), ip("5.5.5.5"));
        // Several header lines are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "5.5.5.5:443, 10.1.1.1"),
        ]);
        assert_eq!(addrs.client(peer, &split), ip("5.5.5.5"));
        let v6 = headers(&[("x-forwarded-for", "[2001:db8::1]:80")]);
        assert_eq!(addrs.client(peer, &v6), ip("2001:db8::1"));
        // All trusted: the farthest proxy; garbage right of a trusted hop: that hop.
        assert_eq!(
            addrs.client(peer, &headers(&[("x-forwarded-for", "10.2.2.2, 10.1.1.1")])),
            ip("10.2.2.2")
        );
        assert_eq!(
            addrs.client(peer, &headers(&[("x-forwarded-for", "5.5.5.5, nonsense, 10.1.1.1")])),
            ip("10.1.1.1")
        );
        // X-Forwarded-For wins over X-Real-IP; X-Real-IP alone is believed.
        let both = headers(&[("x-forwarded-for", "5.5.5.5"), ("x-real-ip", "7.7.7.7")]);
        assert_eq!(addrs.client(peer, &both), ip("5.5.5.5"));
        assert_eq!(addrs.client(peer, &headers(&[("x-real-ip", "7.7.7.7")])), ip("7.7.7.7"));
        assert_eq!(addrs.client(peer, &headers(&[("x-real-ip", "bad")])), peer);
    }
}
