//! Buyer identity settings (`auth:`): the mode, its keys, and the trusted proxies as CIDRs.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How `seckill serve` knows who the buyer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may buy as any `user_id` (demos and tests only; `serve` warns).
    #[default]
    None,
    /// The buyer is the `sub` claim of `Authorization: Bearer <JWT>`.
    Jwt,
    /// The buyer is named by `auth.user_header`, believed only from `auth.trusted_proxies`.
    Gateway,
}

/// Buyer identity settings (see [`AuthMode`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none`, `jwt` or `gateway`.
    pub mode: AuthMode,
    /// HS256 key of the JWTs (`jwt` mode; `SECKILL_AUTH_JWT_SECRET`); empty when
    /// `jwt_public_key_file` is used instead.
    pub jwt_secret: String,
    /// PEM public key (RSA for RS256, EC P-256 for ES256) of the JWTs (`jwt` mode).
    pub jwt_public_key_file: Option<String>,
    /// When set, a JWT's `iss` must equal it.
    pub jwt_issuer: Option<String>,
    /// When set, a JWT's `aud` must contain it.
    pub jwt_audience: Option<String>,
    /// The header naming the buyer (`gateway` mode).
    pub user_header: String,
    /// The proxies in front of `serve`, as CIDRs: in every mode, a peer in them is believed
    /// about the client's address (`X-Forwarded-For`, `X-Real-IP`); in `gateway` mode also
    /// about the buyer (`user_header`).
    pub trusted_proxies: Vec<Cidr>,
}

/// Shortest HS256 JWT secret accepted, in bytes (RFC 7518: at least the hash's size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            jwt_secret: String::new(),
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            user_header: "X-User-Id".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// The fault of a setting the mode cannot work with, as `(field, why)`.
    pub(super) fn fault(&self) -> Option<(&'static str, String)> {
        match self.mode {
            AuthMode::None => None,
            AuthMode::Jwt => match (self.jwt_secret.is_empty(), &self.jwt_public_key_file) {
                (true, None) => Some((
                    "auth.jwt_secret",
                    "jwt mode needs auth.jwt_secret (HS256) or auth.jwt_public_key_file (RS256/ES256)".into(),
                )),
                (false, Some(_)) => Some((
                    "auth.jwt_secret",
                    "set either auth.jwt_secret or auth.jwt_public_key_file, not both".into(),
                )),
                (false, None) if self.jwt_secret.len() < MIN_JWT_SECRET_BYTES => Some((
                    "auth.jwt_secret",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                )),
                _ => None,
            },
            AuthMode::Gateway => {
                if axum::http::HeaderName::from_bytes(self.user_header.as_bytes()).is_err() {
                    Some(("auth.user_header", "must be a valid HTTP header name".into()))
                } else if self.trusted_proxies.is_empty() {
                    Some((
                        "auth.trusted_proxies",
                        "gateway mode needs the gateway's addresses (CIDRs, e.g. 10.0.0.0/8)".into(),
                    ))
                } else {
                    None
                }
            }
        }
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`; a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Cidr, String> {
        let bad = || format!("{text:?} is not a CIDR (expected e.g. 10.0.0.0/8 or ::1/128)");
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() && !text.contains('/') {
            max
        } else {
            prefix.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn trusted_proxies_are_cidrs_checked_at_load() {
        let c = Config::parse("auth:\n  trusted_proxies: [10.0.0.0/8, \"::1\", 192.168.1.7/32]\n").unwrap();
        let [private, loopback6, host] = c.auth.trusted_proxies[..] else {
            panic!("three networks: {:?}", c.auth.trusted_proxies)
        };
        assert!(private.contains("10.200.3.4".parse().unwrap()));
        assert!(!private.contains("11.0.0.1".parse().unwrap()));
        // A v4 peer seen on a dual-stack socket still matches its v4 network.
        assert!(private.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(loopback6.contains("::1".parse().unwrap()) && !loopback6.contains("::2".parse().unwrap()));
        assert!(host.contains("192.168.1.7".parse().unwrap()) && !host.contains("192.168.1.8".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "10.0.0.0/", "::1/129", "example.com/8"] {
            let err = Config::parse(&format!("auth:\n  trusted_proxies: [\"{bad}\"]\n")).unwrap_err();
            assert!(err.contains(bad) && err.contains("trusted_proxies"), "{err}");
        }
    }

    #[test]
    fn each_auth_mode_needs_its_settings() {
        let mut c = Config::default();
        c.auth.mode = AuthMode::Jwt;
        assert!(c.validate().unwrap_err().to_string().contains("auth.jwt_secret"));
        c.auth.jwt_secret = "short".into();
        assert!(c.validate().unwrap_err().to_string().contains("at least 32 bytes"));
        c.auth.jwt_secret = "x".repeat(MIN_JWT_SECRET_BYTES);
        c.validate().unwrap();
        c.auth.jwt_public_key_file = Some("key.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("not both"));
        c.auth.mode = AuthMode::Gateway;
        assert!(c.validate().unwrap_err().to_string().contains("auth.trusted_proxies"));
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.validate().unwrap();
        c.auth.user_header = "X User".into();
        assert!(c.validate().unwrap_err().to_string().contains("auth.user_header"));
    }
}
