//! Who the buyer is (`auth.mode`): anyone (`none`), the `sub` claim of a verified JWT
//! (`jwt`), or the header a trusted gateway sets (`gateway`). Checked before the body is read
//! and before anything reaches Redis.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::client_addr::ClientAddrs;
use super::error::ApiError;
use crate::config::{AuthConfig, AuthMode};

/// How the server tells who the buyer is, built once from [`AuthConfig`].
pub enum Identity {
    /// `none`: the body's `user_id` is believed.
    Anyone,
    /// `jwt`: the `sub` of a JWT verified with `key` under `validation`.
    Jwt {
        /// The issuer's HS256 secret or public key.
        key: DecodingKey,
        /// Algorithm, `exp`/`nbf`, issuer and audience.
        validation: Box<Validation>,
    },
    /// `gateway`: `header`, from a peer in `trusted` only.
    Gateway {
        /// The header naming the buyer.
        header: HeaderName,
        /// The gateways' networks (the same proxies whose address headers are believed).
        trusted: ClientAddrs,
    },
    /// The configured mode could not be set up: every request is refused (the server fails
    /// closed rather than open).
    Refuse,
}

/// The buyer a request was made by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `auth.mode: none`: whoever the body names.
    Anyone,
    /// The authenticated user.
    User(String),
}

impl Caller {
    /// `forbidden` unless the caller may act as `user` (only as themselves, when known).
    pub fn may_act_as(&self, user: &str) -> Result<(), ApiError> {
        match self {
            Caller::User(me) if me != user => Err(ApiError::forbidden()),
            _ => Ok(()),
        }
    }
}

/// The claims read from a buyer's JWT (`exp`, `nbf`, `iss`, `aud` are checked by the
/// validation itself).
#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Identity {
    /// The identity check `auth` describes; an error naming the field when it cannot be set
    /// up (an unreadable or malformed key file).
    pub fn new(auth: &AuthConfig) -> Result<Identity, String> {
        match auth.mode {
            AuthMode::None => Ok(Identity::Anyone),
            AuthMode::Jwt => {
                let (key, algorithm) = match &auth.jwt_public_key_file {
                    None => (DecodingKey::from_secret(auth.jwt_secret.as_bytes()), Algorithm::HS256),
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| format!("auth.jwt_public_key_file: {path}: {e}"))?;
                        if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                            (key, Algorithm::RS256)
                        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                            (key, Algorithm::ES256)
                        } else {
                            return Err(format!(
                                "auth.jwt_public_key_file: {path}: not a PEM RSA or EC (P-256) public key"
                            ));
                        }
                    }
                };
                let mut validation = Validation::new(algorithm);
                validation.validate_nbf = true;
                // A configured issuer or audience is required, not only compared when present.
                let mut required = vec!["exp", "sub"];
                match &auth.jwt_audience {
                    Some(audience) => {
                        validation.set_audience(&[audience]);
                        required.push("aud");
                    }
                    None => validation.validate_aud = false,
                }
                if let Some(issuer) = &auth.jwt_issuer {
                    validation.set_issuer(&[issuer]);
                    required.push("iss");
                }
                validation.set_required_spec_claims(&required);
                Ok(Identity::Jwt {
                    key,
                    validation: Box::new(validation),
                })
            }
            AuthMode::Gateway => Ok(Identity::Gateway {
                header: HeaderName::from_bytes(auth.user_header.as_bytes())
                    .map_err(|e| format!("auth.user_header: {e}"))?,
                trusted: ClientAddrs::new(&auth.trusted_proxies),
            }),
        }
    }

    /// The caller of a request with `headers` and `extensions`; `unauthenticated` when the
    /// mode requires credentials that are missing, invalid, expired or not believed.
    pub fn caller(&self, headers: &HeaderMap, extensions: &Extensions) -> Result<Caller, ApiError> {
        match self {
            Identity::Anyone => Ok(Caller::Anyone),
            Identity::Jwt { key, validation } => {
                let bearer = headers
                    .get(AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .ok_or_else(ApiError::unauthenticated)?;
                let claims = jsonwebtoken::decode::<Claims>(bearer.trim(), key, validation)
                    .map_err(|_| ApiError::unauthenticated())?
                    .claims;
                if claims.sub.is_empty() {
                    return Err(ApiError::unauthenticated());
                }
                Ok(Caller::User(claims.sub))
            }
            Identity::Gateway { header, trusted } => {
                let peer = extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .ok_or_else(ApiError::unauthenticated)?
                    .0
                    .ip();
                if !trusted.trusts(peer) {
                    return Err(ApiError::unauthenticated());
                }
                let user = headers
                    .get(header)
                    .and_then(|value| value.to_str().ok())
                    .filter(|user| !user.is_empty())
                    .ok_or_else(ApiError::unauthenticated)?;
                Ok(Caller::User(user.to_string()))
            }
            Identity::Refuse => Err(ApiError::unauthenticated()),
        }
    }
}

impl<S: AsRef<Identity> + Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, ApiError> {
        state.as_ref().caller(&parts.headers, &parts.extensions)
    }
}
