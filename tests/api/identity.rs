//! Buyer identity (`auth.mode`): in `jwt` mode the buyer is the JWT's `sub`, in `gateway` mode
//! the header a trusted proxy sets; anything else is `401 unauthenticated` and acting as
//! someone else `403 forbidden`, with nothing deducted.

use std::sync::Arc;

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spec, TestApp};
use seckill::config::{AuthMode, Cidr};

/// The HS256 secret of the JWT-mode apps (32+ bytes, as the config demands).
const JWT_SECRET: &str = "jwt-test-secret-0123456789abcdef0123";

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A JWT for `sub`, signed with `secret`, expiring at `exp`.
fn jwt(sub: &str, exp: i64, secret: &str) -> String {
    let claims = json!({"sub": sub, "exp": exp, "iat": unix_now()});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid JWT for `sub`, for an hour.
fn jwt_of(sub: &str) -> String {
    jwt(sub, unix_now() + 3600, JWT_SECRET)
}

/// `POST path` with `body` and the extra `headers`.
async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: &Value) -> (StatusCode, Value) {
    let mut request = app.http.post(format!("{}{path}", app.base)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.expect("http");
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn jwt_app(stock: u32) -> TestApp {
    TestApp::builder()
        .sale(vec![spec(stock, 1, 1)])
        .tune(|c| {
            c.auth.mode = AuthMode::Jwt;
            c.auth.jwt_secret = JWT_SECRET.into();
        })
        .serve()
        .build()
        .await
}

fn bearer(jwt: &str) -> String {
    format!("Bearer {jwt}")
}

#[tokio::test]
async fn jwt_mode_lets_only_the_tokens_subject_fetch_a_token_and_buy() {
    let app = jwt_app(10).await;
    let token_for = |user: &str| json!({"activity_id": app.activity, "user_id": user});
    let buy_as =
        |user: &str, token: &str| json!({"product_id": app.product, "user_id": user, "quantity": 1, "token": token});
    // A purchase token registered for alice by the operator: only her credentials may use it.
    let alices_token = app.token("alice").await;
    let bobs_token = app.token("bob").await;

    let expired = bearer(&jwt("alice", unix_now() - 3600, JWT_SECRET));
    let forged = bearer(&jwt("alice", unix_now() + 3600, "another-secret-0123456789abcdef01234"));
    for headers in [
        vec![],
        vec![("authorization", expired.as_str())],
        vec![("authorization", forged.as_str())],
    ] {
        let answer = post(&app, "/api/v1/token", &headers, &token_for("alice")).await;
        assert_error(&answer, 401, "unauthenticated");
        let answer = post(&app, "/api/v1/buy", &headers, &buy_as("alice", &alices_token)).await;
        assert_error(&answer, 401, "unauthenticated");
    }

    let alice = bearer(&jwt_of("alice"));
    let as_alice = [("authorization", alice.as_str())];
    let answer = post(&app, "/api/v1/token", &as_alice, &token_for("bob")).await;
    assert_error(&answer, 403, "forbidden");
    let answer = post(&app, "/api/v1/buy", &as_alice, &buy_as("bob", &bobs_token)).await;
    assert_error(&answer, 403, "forbidden");
    assert_eq!(app.counters(app.product).await, (10, 0, 0), "nothing deducted");

    // Her own token, asked for without naming her (the JWT does), then her purchase.
    let (status, issued) = post(&app, "/api/v1/token", &as_alice, &json!({"activity_id": app.activity})).await;
    assert_eq!(status, 200, "{issued}");
    let token = issued["token"].as_str().expect("token");
    let (status, bought) = post(&app, "/api/v1/buy", &as_alice, &buy_as("alice", token)).await;
    assert_eq!(status, 200, "{bought}");
    assert_eq!(bought["status"], "queued");
    assert_eq!(app.counters(app.product).await, (9, 1, 1));
    app.finish().await;
}

#[tokio::test]
async fn jwt_holding_crowd_buys_exactly_the_stock() {
    const BUYERS: usize = 2_000;
    const STOCK: u32 = 100;
    let app = Arc::new(jwt_app(STOCK).await);
    let mut tasks = Vec::new();
    for n in 0..BUYERS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("buyer{n}");
            let credentials = bearer(&jwt_of(&user));
            let headers = [("authorization", credentials.as_str())];
            let (status, issued) = post(&app, "/api/v1/token", &headers, &json!({"activity_id": app.activity})).await;
            assert_eq!(status, 200, "{issued}");
            let body = json!({"product_id": app.product, "user_id": user, "quantity": 1, "token": issued["token"]});
            post(&app, "/api/v1/buy", &headers, &body).await
        }));
    }
    let mut queued = 0;
    for task in tasks {
        let answer = task.await.expect("buyer task");
        match answer.0.as_u16() {
            200 => queued += 1,
            _ => assert_error(&answer, 409, "sold_out"),
        }
    }
    assert_eq!(queued, STOCK as usize);
    assert_eq!(app.counters(app.product).await, (0, i64::from(STOCK), STOCK as usize));
    Arc::into_inner(app).expect("every buyer done").finish().await;
}

async fn gateway_app(trusted: &str) -> TestApp {
    let trusted: Cidr = trusted.parse().unwrap();
    TestApp::builder()
        .sale(vec![spec(10, 1, 1)])
        .tune(move |c| {
            c.auth.mode = AuthMode::Gateway;
            c.auth.user_header = "X-User-Id".into();
            c.auth.trusted_proxies = vec![trusted];
        })
        .serve()
        .build()
        .await
}

#[tokio::test]
async fn gateway_header_is_believed_only_from_a_trusted_peer() {
    let app = gateway_app("10.0.0.0/8").await;
    let alices_token = app.token("alice").await;
    let as_alice = [("x-user-id", "alice")];
    let answer = post(&app, "/api/v1/token", &as_alice, &json!({"activity_id": app.activity})).await;
    assert_error(&answer, 401, "unauthenticated");
    let body = json!({"product_id": app.product, "user_id": "alice", "quantity": 1, "token": alices_token});
    let answer = post(&app, "/api/v1/buy", &as_alice, &body).await;
    assert_error(&answer, 401, "unauthenticated");
    assert_eq!(app.counters(app.product).await, (10, 0, 0), "nothing deducted");
    app.finish().await;

    let app = gateway_app("127.0.0.1/32").await;
    let answer = post(
        &app,
        "/api/v1/token",
        &[],
        &json!({"activity_id": app.activity, "user_id": "alice"}),
    )
    .await;
    assert_error(&answer, 401, "unauthenticated");
    let answer = post(
        &app,
        "/api/v1/token",
        &as_alice,
        &json!({"activity_id": app.activity, "user_id": "bob"}),
    )
    .await;
    assert_error(&answer, 403, "forbidden");
    let (status, issued) = post(&app, "/api/v1/token", &as_alice, &json!({"activity_id": app.activity})).await;
    assert_eq!(status, 200, "{issued}");
    let body = json!({"product_id": app.product, "user_id": "alice", "quantity": 1, "token": issued["token"]});
    let (status, bought) = post(&app, "/api/v1/buy", &as_alice, &body).await;
    assert_eq!(status, 200, "{bought}");
    assert_eq!(app.counters(app.product).await, (9, 1, 1));
    app.finish().await;
}

#[tokio::test]
async fn a_bad_trusted_proxy_or_missing_jwt_key_is_a_config_error() {
    let app = TestApp::builder().build().await;
    let bad_cidr = app.write_file(
        "bad-cidr.yaml",
        "auth:\n  mode: gateway\n  trusted_proxies: [\"10.0.0.0/33\"]\n",
    );
    let no_key = app.write_file("no-key.yaml", "auth:\n  mode: jwt\n");
    let missing_file = app.write_file(
        "missing-file.yaml",
        "auth:\n  mode: jwt\n  jwt_public_key_file: /nonexistent/seckill-jwt.pem\n",
    );
    for (config, needle) in [
        (&bad_cidr, "10.0.0.0/33"),
        (&no_key, "auth.jwt_secret"),
        (&missing_file, "auth.jwt_public_key_file"),
    ] {
        let config = config.to_str().unwrap();
        let out = app
            .cli_with(&["--config", config, "serve", "--insecure-dev-secret"], &[], None)
            .await;
        assert_eq!(out.code, 2, "{config}: {out:?}");
        assert!(out.stderr.contains(needle), "{config}: {}", out.stderr);
    }
}

/// A P-256 key pair for the ES256 test (test-only; PKCS#8 private key, SPKI public key).
const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0pJwFKSH67WS/E0t
TKfuC69sK1ZBjSVMtZI5lT4WxS2hRANCAATwNwDUVt5J7jW05cAsCGeHP3k5yZZb
XELhLCP6czI46aEj3sPHb09t+4RO5x2psOaWj9ZmdY/SO943LBrW1iwz
-----END PRIVATE KEY-----
";
const EC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8DcA1FbeSe41tOXALAhnhz95OcmW
W1xC4Swj+nMyOOmhI97Dx29PbfuETucdqbDmlo/WZnWP0jveNywa1tYsMw==
-----END PUBLIC KEY-----
";

#[tokio::test]
async fn es256_jwt_from_a_public_key_file_with_issuer_and_audience() {
    let key_dir = std::env::temp_dir().join(format!("seckill-jwt-{}", crate::helpers::random_suffix()));
    std::fs::create_dir_all(&key_dir).unwrap();
    let key_file = key_dir.join("jwt-public.pem");
    std::fs::write(&key_file, EC_PUBLIC_PEM).unwrap();
    let key_path = key_file.to_str().unwrap().to_string();
    let app = TestApp::builder()
        .sale(vec![spec(10, 1, 1)])
        .tune(move |c| {
            c.auth.mode = AuthMode::Jwt;
            c.auth.jwt_public_key_file = Some(key_path);
            c.auth.jwt_issuer = Some("https://login.example".into());
            c.auth.jwt_audience = Some("seckill".into());
        })
        .serve()
        .build()
        .await;
    let signed = |claims: Value| {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap();
        bearer(&encode(&Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key).unwrap())
    };
    let exp = unix_now() + 3600;
    let body = json!({"activity_id": app.activity});
    for wrong in [
        json!({"sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": "seckill"}),
        json!({"sub": "alice", "exp": exp, "iss": "https://login.example", "aud": "other"}),
        json!({"sub": "alice", "exp": exp, "aud": "seckill"}),
        json!({"sub": "alice", "exp": exp, "iss": "https://login.example"}),
        json!({"sub": "alice", "exp": exp, "nbf": unix_now() + 600, "iss": "https://login.example", "aud": "seckill"}),
    ] {
        let credentials = signed(wrong.clone());
        let answer = post(&app, "/api/v1/token", &[("authorization", credentials.as_str())], &body).await;
        assert_error(&answer, 401, "unauthenticated");
    }
    // An HS256 JWT must not pass as ES256, whatever its secret.
    let hs256 = bearer(&jwt("alice", exp, JWT_SECRET));
    let answer = post(&app, "/api/v1/token", &[("authorization", hs256.as_str())], &body).await;
    assert_error(&answer, 401, "unauthenticated");

    let good = signed(json!({"sub": "alice", "exp": exp, "iss": "https://login.example", "aud": "seckill"}));
    let (status, issued) = post(&app, "/api/v1/token", &[("authorization", good.as_str())], &body).await;
    assert_eq!(status, 200, "{issued}");
    let buy = json!({"product_id": app.product, "user_id": "alice", "quantity": 1, "token": issued["token"]});
    let (status, bought) = post(&app, "/api/v1/buy", &[("authorization", good.as_str())], &buy).await;
    assert_eq!(status, 200, "{bought}");
    app.finish().await;
    std::fs::remove_dir_all(&key_dir).unwrap();
}

#[tokio::test]
async fn doctor_warns_when_anyone_may_buy_as_anyone() {
    let app = TestApp::builder().build().await;
    let doctor = app.cli(&["doctor", "--json"]).await;
    let json: Value = serde_json::from_str(&doctor.stdout).expect(&doctor.stderr);
    let row = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "buyer identity")
        .unwrap_or_else(|| panic!("no buyer identity row: {json}"));
    assert_eq!(row["verdict"], "warn", "{json}");
    assert!(row["detail"].as_str().unwrap().contains("auth.mode is none"), "{json}");
}

#[tokio::test]
async fn a_revoked_buyer_gets_no_token_over_http_until_the_operator_lifts_it() {
    let app = jwt_app(10).await;
    let alice = bearer(&jwt_of("alice"));
    let as_alice = [("authorization", alice.as_str())];
    let ask = json!({"activity_id": app.activity});
    let (status, issued) = post(&app, "/api/v1/token", &as_alice, &ask).await;
    assert_eq!(status, 200, "{issued}");
    let activity = app.activity.to_string();
    app.cli(&["token", "revoke", &activity, "--user", "alice"]).await.ok();

    // Asking again must not hand her a fresh token, and the old one no longer buys.
    let answer = post(&app, "/api/v1/token", &as_alice, &ask).await;
    assert_error(&answer, 403, "revoked");
    let buy = json!({"product_id": app.product, "user_id": "alice", "quantity": 1, "token": issued["token"]});
    let answer = post(&app, "/api/v1/buy", &as_alice, &buy).await;
    assert_error(&answer, 401, "invalid_token");
    assert_eq!(app.counters(app.product).await, (10, 0, 0), "nothing deducted");

    app.cli(&["token", "lift", &activity, "--user", "alice"]).await.ok();
    let (status, issued) = post(&app, "/api/v1/token", &as_alice, &ask).await;
    assert_eq!(status, 200, "{issued}");
    let buy = json!({"product_id": app.product, "user_id": "alice", "quantity": 1, "token": issued["token"]});
    let (status, bought) = post(&app, "/api/v1/buy", &as_alice, &buy).await;
    assert_eq!(status, 200, "{bought}");
    app.finish().await;
}
