//! Purchase tokens: unforgeable, bound to one activity, one user and an expiry.
//!
//! A token is `<expiry_unix>.<base64url(HMAC-SHA256(secret, "activity|user|expiry"))>`.
//! The server checks the signature and expiry locally (no Redis round trip), so forged,
//! altered and expired tokens cost nothing; `reserve.lua` then checks that the token is
//! the one registered for the user, which is what makes revocation work.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs and verifies tokens with `token.secret`.
#[derive(Clone)]
pub struct Signer {
    // Keyed once; cloning the keyed state is cheaper than re-deriving the key per token.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer keyed with `secret`.
    pub fn new(secret: &str) -> Signer {
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
        Signer { mac }
    }

    fn tag(&self, activity: u64, user: &str, expiry: u64) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        // itoa, not to_string: every buy request is verified, and the formatting machinery
        // and its two allocations cost about as much as the rest of the message.
        mac.update(itoa::Buffer::new().format(activity).as_bytes());
        mac.update(b"|");
        mac.update(user.as_bytes());
        mac.update(b"|");
        mac.update(itoa::Buffer::new().format(expiry).as_bytes());
        mac
    }

    /// The token of `user` in `activity`, valid until `expiry` (unix seconds).
    pub fn sign(&self, activity: u64, user: &str, expiry: u64) -> String {
        let tag = self.tag(activity, user, expiry).finalize().into_bytes();
        format!("{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `token` was signed for `activity` and `user` and is unexpired at `now` (unix
    /// seconds). The signature comparison is constant-time.
    pub fn verify(&self, activity: u64, user: &str, token: &str, now: u64) -> bool {
        let Some((expiry, tag)) = token.split_once('.') else {
            return false;
        };
        let Some(expiry) = parse_expiry(expiry) else {
            return false;
        };
        if expiry <= now || tag.len() != 43 {
            return false;
        }
        let mut raw = [0u8; 33];
        let Ok(32) = URL_SAFE_NO_PAD.decode_slice(tag, &mut raw) else {
            return false;
        };
        self.tag(activity, user, expiry).verify_slice(&raw[..32]).is_ok()
    }
}

/// The expiry (unix seconds) written in a token, if it has one.
pub fn expiry_of(token: &str) -> Option<u64> {
    parse_expiry(token.split_once('.')?.0)
}

// Strict: digits only, so "+5" or " 5" cannot alias a signed "5".
fn parse_expiry(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Seconds since the Unix epoch by this machine's clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_tokens_verify_and_tampering_fails() {
        let s = Signer::new("secret-one");
        let t = s.sign(7, "alice", 2_000_000_000);
        assert!(s.verify(7, "alice", &t, 1_000));
        assert!(!s.verify(8, "alice", &t, 1_000), "other activity");
        assert!(!s.verify(7, "bob", &t, 1_000), "other user");
        assert!(!s.verify(7, "alice", &t, 2_000_000_000), "expired");
        assert!(!Signer::new("secret-two").verify(7, "alice", &t, 1_000), "other secret");
        let altered = t.replacen("2000000000", "2000000001", 1);
        assert!(!s.verify(7, "alice", &altered, 1_000));
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(!s.verify(7, "alice", std::str::from_utf8(&flipped).unwrap(), 1_000));
        for bad in ["", ".", "x.y", "+2000000000.abc", "2000000000."] {
            assert!(!s.verify(7, "alice", bad, 1_000), "{bad}");
        }
        assert_eq!(expiry_of(&t), Some(2_000_000_000));
    }

    /// Tokens already handed out must keep verifying: the signed message is
    /// `activity|user|expiry` in decimal, as an independent HMAC-SHA256 computes it.
    #[test]
    fn tokens_sign_the_decimal_message() {
        let s = Signer::new("secret-one");
        assert_eq!(
            s.sign(7, "alice", 2_000_000_000),
            "2000000000.WJZqEDNAqx06-c0Bcpo1v3QyzMJVFy4ftu6ni2ir2aE"
        );
        assert_eq!(
            s.sign(u64::MAX, "u:1", u64::MAX),
            "18446744073709551615.g6DX_RzJsj-L_32FZ4jj-W28v6UbDu4fmnFXtJd8mTo"
        );
    }
}
