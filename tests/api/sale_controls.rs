//! The operator's controls over a sale that buyers cannot get around: `serve` refuses a
//! secret anyone could know, tokens over HTTP open only `token.open_before_secs` before the
//! start, and `seckill degrade` turns an activity's buys off on every server at once.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, free_port, signal, spawn_app, spec, wait_for_serve, KillOnDrop, TestApp};

const DEFAULT_SECRET: &str = seckill::config::DEFAULT_TOKEN_SECRET;

/// `seckill serve` of `app` on a free port with `extra` flags and the token secret `secret`;
/// stderr piped. Returns the child (killed when dropped) and its base URL.
fn serve_binary(app: &TestApp, secret: Option<&str>, extra: &[&str]) -> (KillOnDrop, String) {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--bind", &bind];
    args.extend_from_slice(extra);
    let mut command = app.command(&args);
    if let Some(secret) = secret {
        command.env("SECKILL_TOKEN_SECRET", secret);
    }
    let child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    (KillOnDrop(child), format!("http://{bind}"))
}

/// Waits for `child` to exit (at most 20 s); its exit code and stderr.
fn exit_of(serve: &mut KillOnDrop) -> (i32, String) {
    let child = &mut serve.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve still running after 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_known_or_short_secret_unless_told_it_is_a_demo() {
    let app = spawn_app().await;
    for secret in [DEFAULT_SECRET, "only-twenty-six-bytes-long"] {
        let (mut serve, _) = serve_binary(&app, Some(secret), &[]);
        let (code, err) = exit_of(&mut serve);
        assert_eq!(code, 1, "{secret}: {err}");
        assert!(err.contains("SECKILL_TOKEN_SECRET"), "{secret}: {err}");
        assert!(err.contains("--insecure-dev-secret"), "{secret}: {err}");
    }

    // With the flag it serves, and says why that is unsafe.
    let (mut serve, base) = serve_binary(&app, Some(DEFAULT_SECRET), &["--insecure-dev-secret"]);
    wait_for_serve(&reqwest::Client::new(), &base).await;
    signal(&serve.0, "-INT");
    let (code, err) = exit_of(&mut serve);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("WARN") && err.contains("forge purchase tokens"), "{err}");

    // The tests' own 32+ byte secret is accepted without the flag.
    let (mut serve, base) = serve_binary(&app, None, &[]);
    wait_for_serve(&reqwest::Client::new(), &base).await;
    signal(&serve.0, "-INT");
    let (code, err) = exit_of(&mut serve);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("forge"), "{err}");
}

/// Moves the activity's start in Redis to `secs` from now by Redis's clock (what the clock
/// reaching that point looks like to the token endpoint and the buy script).
async fn start_in(app: &TestApp, secs: i64) {
    let mut conn = app.redis.conn();
    let (now, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let () = conn
        .hset(app.redis.keys().activity(app.activity), "start_ms", (now + secs) * 1000)
        .await
        .unwrap();
}

/// `POST /api/v1/token` for `user` in the app's activity.
async fn ask_token(app: &TestApp, user: &str) -> (StatusCode, Value) {
    let body = json!({"activity_id": app.activity, "user_id": user});
    app.post_json("/api/v1/token", &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tokens_open_only_shortly_before_the_start() {
    let app = TestApp::builder()
        .tune(|c| c.token.open_before_secs = 60)
        .sale(vec![spec(10, 1, 1)])
        .opens_in_secs(3600)
        .serve()
        .build()
        .await;
    assert_error(&ask_token(&app, "early").await, 403, "not_started");
    start_in(&app, 90).await;
    assert_error(&ask_token(&app, "early").await, 403, "not_started");
    // Nothing was registered for the refused buyer.
    let registered: bool = app
        .redis
        .conn()
        .exists(app.redis.keys().token(app.activity, "early"))
        .await
        .unwrap();
    assert!(!registered);

    // The operator still issues tokens ahead of time.
    let out = app.cli(&["token", &app.activity.to_string(), "--user", "vip"]).await;
    out.ok();
    assert!(out.stdout.contains("vip,"), "{}", out.stdout);

    start_in(&app, 30).await;
    let (status, issued) = ask_token(&app, "early").await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let token = issued["token"].as_str().unwrap().to_string();
    // Issued inside the window, but the sale itself still opens at its start.
    assert_error(&app.buy(app.product, "early", 1, &token).await, 403, "not_started");
    start_in(&app, -1).await;
    assert_eq!(app.buy(app.product, "early", 1, &token).await.0, StatusCode::OK);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tokens_open_at_the_start_by_default() {
    let app = TestApp::builder()
        .sale(vec![spec(10, 1, 1)])
        .opens_in_secs(3600)
        .serve()
        .build()
        .await;
    assert_error(&ask_token(&app, "u").await, 403, "not_started");
    start_in(&app, -1).await;
    assert_eq!(ask_token(&app, "u").await.0, StatusCode::OK);
    app.finish().await;
}

/// `POST /api/v1/buy` at `base`.
async fn buy_at(http: &reqwest::Client, base: &str, product: u64, user: &str, token: &str) -> (StatusCode, Value) {
    let res = http
        .post(format!("{base}/api/v1/buy"))
        .json(&json!({"product_id": product, "user_id": user, "quantity": 1, "token": token}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Polls every server in `bases` with a buy that cannot take stock (a bad token) until each
/// answers `code`; how long that took.
async fn until_all_answer(http: &reqwest::Client, bases: &[&str], product: u64, code: &str) -> Duration {
    let started = Instant::now();
    for base in bases {
        loop {
            let answer = buy_at(http, base, product, "poller", "1.not-a-token").await;
            if answer.1["error"] == code {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{base} still answers {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_answers_every_server_from_memory_until_switched_off() {
    // A long stock refresh: the switch must still reach the servers within a second.
    let app = TestApp::builder()
        .tune(|c| c.funnel.sold_out_cache_ms = 60_000)
        .sale(vec![spec(10, 1, 1)])
        .serve()
        .build()
        .await;
    let (mut other, other_base) = serve_binary(&app, None, &[]);
    let http = reqwest::Client::new();
    wait_for_serve(&http, &other_base).await;
    let bases = [app.base.as_str(), other_base.as_str()];
    let activity = app.activity.to_string();
    let users: Vec<String> = (0..6).map(|i| format!("buyer{i}")).collect();
    let tokens = app.tokens(&users).await;

    // One purchase before, on the in-process server only (the other has not seen the product).
    assert_eq!(buy_at(&http, bases[0], app.product, &users[0], &tokens[0]).await.0, 200);
    let before = app.counters(app.product).await;
    assert_eq!(before.0, 9);

    app.cli(&["degrade", &activity, "on", "--message", "back at noon"])
        .await
        .ok();
    let took = until_all_answer(&http, &bases, app.product, "degraded").await;
    assert!(
        took <= Duration::from_secs(1),
        "degrade took {took:?} to reach both servers"
    );
    for (i, base) in bases.iter().cycle().take(4).enumerate() {
        let (status, body) = buy_at(&http, base, app.product, &users[i + 1], &tokens[i + 1]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{base}: {body}");
        assert_eq!(body, json!({"error": "degraded", "message": "back at noon"}), "{base}");
    }
    assert_eq!(app.counters(app.product).await, before, "stock touched while degraded");

    let status = app.cli(&["degrade", &activity, "status", "--json"]).await;
    status.ok();
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        status,
        json!({"activity_id": app.activity, "degraded": true, "message": "back at noon"})
    );
    let (_, metrics) = app.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains(&format!("seckill_degraded{{activity=\"{activity}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("seckill_requests_total")
            && l.contains("code=\"degraded\"")
            && l.contains("/api/v1/buy")),
        "{metrics}"
    );

    app.cli(&["degrade", &activity, "off"]).await.ok();
    let took = until_all_answer(&http, &bases, app.product, "invalid_token").await;
    assert!(
        took <= Duration::from_secs(1),
        "off took {took:?} to reach both servers"
    );
    for (i, base) in bases.iter().enumerate() {
        let (status, body) = buy_at(&http, base, app.product, &users[i + 1], &tokens[i + 1]).await;
        assert_eq!(status, StatusCode::OK, "{base}: {body}");
    }
    assert_eq!(app.counters(app.product).await.0, 7);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains(&format!("seckill_degraded{{activity=\"{activity}\"}} 0")),
        "{metrics}"
    );

    signal(&other.0, "-INT");
    let (code, err) = exit_of(&mut other);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("activity degraded") && err.contains("back at noon"),
        "{err}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_refuses_bad_input_and_changes_nothing() {
    let app = TestApp::builder().sale(vec![spec(10, 1, 1)]).build().await;
    let activity = app.activity.to_string();
    app.cli(&["degrade", &activity, "on", "--message", "  "])
        .await
        .fails_with(2, &["--message", "1..=500"]);
    let long = "x".repeat(501);
    app.cli(&["degrade", &activity, "on", "--message", &long])
        .await
        .fails_with(2, &["--message", "1..=500"]);
    app.cli(&["degrade", "999999999", "on"])
        .await
        .fails_with(1, &["999999999"]);
    let switch: bool = app
        .redis
        .conn()
        .exists(app.redis.keys().degraded(999_999_999))
        .await
        .unwrap();
    assert!(!switch);
    let out = app.cli(&["degrade", &activity, "status"]).await;
    out.ok();
    assert!(out.stdout.contains("is not degraded"), "{}", out.stdout);
    app.cli(&["degrade", &activity, "on"]).await.ok();
    let out = app.cli(&["degrade", &activity, "status"]).await;
    assert!(
        out.stdout.contains(seckill::ops::degrade::DEFAULT_MESSAGE),
        "{}",
        out.stdout
    );
}
