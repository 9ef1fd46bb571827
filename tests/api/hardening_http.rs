//! The HTTP side of issue 15: the per-user rate limit charged only to authentic requests, an
//! honest answer when a purchase's outcome is unknown, slow and silent connections, the
//! connection cap, and JSON on every error answer.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use seckill::token::{unix_now, Signer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_error, free_port, phone, spec, wait_for_serve, KillOnDrop, TestApp};
use crate::redis_servers::OwnRedis;

fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Reads from `stream` until the peer closes it (EOF or reset) or `within` passes; the bytes
/// read, and whether it was closed in time.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Status and body of one raw HTTP/1.1 answer (the connection is asked to close).
async fn raw_request(base: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address(base)).await.unwrap();
    // A server that refuses a request may answer and close before reading all of it.
    let _ = stream.write_all(request).await;
    let (bytes, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "no complete answer to {:?}", String::from_utf8_lossy(request));
    parse_answer(&bytes)
}

fn parse_answer(bytes: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(bytes);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Asserts `body` is `{"error": code, "message": ...}`.
#[track_caller]
fn assert_json_error(status: u16, body: &str, want_status: u16, code: &str) {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{status}: body is not JSON: {body:?}"));
    assert_eq!((status, json["error"].as_str()), (want_status, Some(code)), "{json}");
    assert!(json["message"].is_string(), "{json}");
}

/// The order numbers of `user` in the activity's stream (every reservation Redis made).
async fn reservations_of(sale: &TestApp, user: &str) -> Vec<String> {
    sale.stream_reservations()
        .await
        .into_iter()
        .filter(|r| r.user_id == user)
        .map(|r| r.order_no)
        .collect()
}

/// `GET /api/v1/orders?activity_id=..&user_id=..` with the user's token.
async fn look_up(sale: &TestApp, user: &str, token: &str) -> (StatusCode, Value) {
    let res = sale
        .http
        // The test's user ids need no percent-encoding.
        .get(format!(
            "{}/api/v1/orders?activity_id={}&user_id={user}",
            sale.base, sale.activity
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn order_numbers(lookup: &Value) -> Vec<String> {
    let mut numbers: Vec<String> = lookup["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no orders list: {lookup}"))
        .iter()
        .map(|o| o["order_no"].as_str().unwrap().to_string())
        .collect();
    numbers.sort();
    numbers
}

// ------------------------------------------------------------------ item 4

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_a_victims_name_do_not_spend_the_victims_rate_limit() {
    // The default per-user limit: 20 requests per second, burst 20.
    let sale = TestApp::builder().sale(vec![spec(10, 1, 1)]).serve().build().await;
    let p = sale.product;
    let real = sale.token("victim").await;
    let forged = Signer::new("not-the-server-secret").sign(sale.activity, "victim", unix_now() + 600);
    for n in 0..40 {
        let answer = sale.buy(p, "victim", 1, &forged).await;
        assert_eq!(answer.0.as_u16(), 401, "forged request {n}: {answer:?}");
        assert_eq!(answer.1["error"], "invalid_token", "forged request {n}: {answer:?}");
    }
    // Anyone may ask for a token in any name: that spends the token endpoint's limit only.
    for _ in 0..40 {
        let (status, body) = sale
            .post_json(
                "/api/v1/token",
                &json!({"activity_id": sale.activity, "user_id": "victim"}),
            )
            .await;
        assert!(matches!(status.as_u16(), 200 | 429), "{status} {body}");
    }
    let bought = sale.buy(p, "victim", 1, &real).await;
    assert_eq!(bought.0, 200, "the victim's own purchase: {bought:?}");
    // An authentic buyer is still limited.
    let mut limited = false;
    for _ in 0..40 {
        let (status, body) = sale.buy(p, "victim", 1, &real).await;
        match status.as_u16() {
            409 => assert_eq!(body["error"], "limit_exceeded", "{body}"),
            429 => limited = true,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(limited, "40 authentic requests at once were never rate limited");
    sale.finish().await;
}

// ------------------------------------------------------------------ item 7

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_lost_in_a_redis_stall_is_never_answered_as_not_bought() {
    let own = OwnRedis::start().await;
    let sale = Arc::new(
        TestApp::builder()
            .redis(own.url())
            .tune(|c| {
                c.redis.response_timeout_ms = 400;
                c.funnel.breaker_failures = 1;
                c.funnel.breaker_open_ms = 2500;
                c.funnel.per_user_rps = 0;
            })
            .sale(vec![spec(10, 1, 1)])
            .serve()
            .build()
            .await,
    );
    let p = sale.product;
    let users: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    let tokens = sale.tokens(&users).await;
    // The server learns the product's activity on its first purchase (a Redis read).
    let warm = sale.token("warm-up").await;
    assert_eq!(sale.buy(p, "warm-up", 1, &warm).await.0, 200);

    own.signal("-STOP");
    let stalled_at = Instant::now();
    let mut in_flight = Vec::new();
    for i in 0..4 {
        let (sale, user, token) = (sale.clone(), users[i].clone(), tokens[i].clone());
        in_flight.push(tokio::spawn(async move { sale.buy(p, &user, 1, &token).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = Vec::new();
    for task in in_flight {
        answers.push(task.await.unwrap());
    }
    // The breaker is open by now: this one is refused before anything is sent.
    let refused = sale.buy(p, &users[4], 1, &tokens[4]).await;
    assert_error(&refused, 503, "busy");
    answers.push(refused);
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(stalled_at.elapsed())).await;
    own.signal("-CONT");

    // Redis runs what it had received; wait until purchases are decided again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = sale.buy(p, &users[5], 1, &tokens[5]).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after SIGCONT: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let first = reservations_of(&sale, &users[0]).await;
    assert_eq!(first.len(), 1, "the stalled purchase ran when Redis resumed");
    let mut unknown = 0;
    for (i, (status, body)) in answers.iter().enumerate() {
        let (user, token) = (&users[i], &tokens[i]);
        let reserved = reservations_of(&sale, user).await;
        match (status.as_u16(), body["error"].as_str()) {
            (200, _) => assert_eq!(reserved, vec![body["order_no"].as_str().unwrap().to_string()]),
            (503, Some("busy")) => assert!(
                reserved.is_empty(),
                "{user} was answered busy (not executed) but holds {reserved:?}"
            ),
            (503, Some("unknown_outcome")) => {
                unknown += 1;
                let found = look_up(&sale, user, token).await;
                assert_eq!(found.0, 200, "{found:?}");
                assert_eq!(order_numbers(&found.1), reserved, "{user}: {found:?}");
                for order in found.1["orders"].as_array().unwrap() {
                    assert_eq!(order["user_id"], user.as_str(), "{order}");
                    assert_eq!(order["product_id"], p, "{order}");
                }
            }
            other => panic!("{user}: unexpected answer {other:?}: {body}"),
        }
    }
    assert!(unknown >= 1, "the stalled purchase was answered {:?}", answers[0]);
    // Retrying after unknown_outcome never buys twice, and the order stays findable.
    let retried = sale.buy(p, &users[0], 1, &tokens[0]).await;
    assert_error(&retried, 409, "limit_exceeded");
    let found = look_up(&sale, &users[0], &tokens[0]).await;
    assert_eq!(order_numbers(&found.1), first, "{found:?}");
    // The per-number lookup agrees.
    let (status, order) = sale.get(&format!("/api/v1/orders/{}", first[0])).await;
    assert_eq!(
        (status.as_u16(), order["user_id"].as_str()),
        (200, Some(users[0].as_str()))
    );
    // The lookup needs the user's own token.
    let (status, body) = look_up(&sale, &users[0], &tokens[1]).await;
    assert_error(&(status, body), 401, "invalid_token");
    let metrics = sale.get("/metrics").await.1;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"code="unknown_outcome""#),
        "no unknown_outcome count in /metrics"
    );
    Arc::into_inner(sale).unwrap().finish().await;
}

// ------------------------------------------------------------------ item 8

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_cut() {
    let sale = TestApp::builder()
        .tune(|c| {
            c.http.header_read_timeout_ms = 800;
            c.http.body_read_timeout_ms = 800;
        })
        .sale(vec![spec(100, 1, 1)])
        .serve()
        .build()
        .await;
    let addr = address(&sale.base);

    // A socket that sends nothing.
    let started = Instant::now();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection is still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );

    // Headers trickled in one line every 200 ms: each line is progress, but the head is
    // never complete.
    let started = Instant::now();
    let trickle = TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = trickle.into_split();
    let writer = tokio::spawn(async move {
        let _ = writer.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "trickled headers kept the connection for 5 s");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    writer.abort();

    // A kept-alive connection that goes quiet after its answer.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(closed, "an idle kept-alive connection is still open after 5 s");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // A body trickled byte by byte after a complete head.
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /api/v1/buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let trickling = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow_body.write_all(b" ").await.is_err() {
                break;
            }
        }
        slow_body
    });
    let mut slow_body = trickling.await.unwrap();
    let (answer, _) = read_until_closed(&mut slow_body, Duration::from_secs(1)).await;
    let (status, body) = parse_answer(&answer);
    assert_json_error(status, &body, 400, "bad_request");
    assert!(started.elapsed() < Duration::from_secs(6));

    // Normal requests are unaffected.
    assert_eq!(sale.get("/health").await.0, 200);
    let metrics = sale.get("/metrics").await.1;
    let metrics = metrics.as_str().unwrap();
    let cut = metric_sum(metrics, "seckill_http_connections_cut_total");
    assert!(cut >= 3.0, "cut connections counted {cut}:\n{metrics}");
    // A head that never completes does not hold the shutdown either (finish fails after 5 s).
    let _half = half_open(&addr, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    sale.finish().await;
}

/// The sum of every series of `name` in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Opens `count` connections that each send half a request head and then nothing.
async fn half_open(addr: &str, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        held.push(s);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_at_once_and_counted() {
    let sale = TestApp::builder()
        .tune(|c| {
            c.http.max_connections = 20;
            c.http.header_read_timeout_ms = 1500;
        })
        .sale(vec![spec(100, 1, 1)])
        .serve()
        .build()
        .await;
    let addr = address(&sale.base);
    // The fixture's HTTP client keeps its readiness probes' connections alive, and each one
    // counts against the cap until the header timeout cuts it; wait those out so the cap
    // holds exactly the 20 half-open connections below.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut held = half_open(&addr, 20).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Over the cap: refused at once with a JSON answer.
    let mut refused = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let (status, body) = raw_request(
            &sale.base,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        if status == 503 {
            assert_json_error(status, &body, 503, "busy");
            refused += 1;
        }
    }
    assert_eq!(refused, 10, "every connection over the cap is refused");
    // The held connections are cut by the header timeout; then there is room again.
    for s in &mut held {
        let (_, closed) = read_until_closed(s, Duration::from_secs(4)).await;
        assert!(closed, "a half-open connection outlived the header timeout");
    }
    let (status, body) = raw_request(
        &sale.base,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let metrics = sale.get("/metrics").await.1;
    let metrics = metrics.as_str().unwrap();
    assert_eq!(
        metric_sum(metrics, "seckill_http_connections_refused_total"),
        10.0,
        "{metrics}"
    );
    assert!(
        metric_sum(metrics, "seckill_http_connections_cut_total") >= 20.0,
        "{metrics}"
    );
    sale.finish().await;
}

/// The issue's own scenario: a server whose open-file limit is smaller than the number of
/// half-sent requests one client holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_at_its_open_file_limit_still_answers_health() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    let mut config = f.config.clone();
    config.http.header_read_timeout_ms = 3000;
    let config_path = f.write_config("few-files.yaml", &config);
    let bind = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{bind}");
    let serve = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -n 256 && exec \"$0\" --config \"$1\" serve --bind \"$2\" --threads 1",
        ])
        .arg(env!("CARGO_BIN_EXE_seckill"))
        .arg(&config_path)
        .arg(&bind)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _serve = KillOnDrop(serve);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    wait_for_serve(&http, &base).await;

    let _held = half_open(&bind, 400).await;
    // Answered at once, ok or refused as busy; not left waiting in the kernel's backlog (a
    // generous bound: the machine may be busy with other tests).
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        raw_request(&base, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (status, body) = answer.expect("/health unanswered with 400 half-sent requests open");
    match status {
        200 => assert_eq!(body, "ok"),
        _ => assert_json_error(status, &body, 503, "busy"),
    }
    // Once the header timeout has cut them, /health is plain ok again (the half-open
    // connections are still held open by this side).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, body) = raw_request(&base, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric_sum(&metrics, "seckill_http_connections_cut_total") >= 150.0,
        "{metrics}"
    );
}

// ------------------------------------------------------------------ item 12

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_json_with_a_code() {
    let sale = TestApp::builder()
        .tune(|c| c.http.max_body_bytes = 512)
        .sale(vec![spec(100, 1, 1)])
        .serve()
        .build()
        .await;
    let base = &sale.base;
    // Order numbers outside what Redis can hold are unknown orders, not a Redis failure.
    for number in [
        "1-1-18446744073709551616",
        "1-18446744073709551616-0",
        "18446744073709551616-1-0",
    ] {
        assert_error(&sale.get(&format!("/api/v1/orders/{number}")).await, 404, "not_found");
    }
    let buy = "/api/v1/buy";
    assert_error(
        &sale.post_raw(buy, "{not json", Some("application/json")).await,
        400,
        "bad_request",
    );
    assert_error(&sale.post_raw(buy, "{}", Some("text/plain")).await, 400, "bad_request");
    assert_error(&sale.post_raw(buy, "{}", None).await, 400, "bad_request");
    let oversize = format!(r#"{{"activity_id":1,"user_id":"{}"}}"#, "x".repeat(600));
    assert_error(
        &sale.post_raw("/api/v1/token", oversize, Some("application/json")).await,
        400,
        "bad_request",
    );
    assert_error(&sale.get("/no/such/route").await, 404, "not_found");
    assert_error(&sale.get(buy).await, 405, "method_not_allowed");
    let (status, body) = raw_request(base, b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_json_error(status, &body, 405, "method_not_allowed");
    // Rejected by the HTTP layer itself, before any route: a malformed request line, a head
    // over the buffer, a bad header.
    let (status, body) = raw_request(base, b"NOT A REQUEST\r\n\r\n").await;
    assert_json_error(status, &body, 400, "bad_request");
    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(600_000)
    );
    let (status, body) = raw_request(base, huge.as_bytes()).await;
    assert_json_error(status, &body, 431, "headers_too_large");
    let (status, body) = raw_request(base, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n").await;
    assert_json_error(status, &body, 400, "bad_request");
    // Lookup by user: the query and the token are checked.
    let (status, body) = raw_request(
        base,
        b"GET /api/v1/orders?activity_id=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_json_error(status, &body, 400, "bad_request");
    let path = format!("/api/v1/orders?activity_id={}&user_id=u", sale.activity);
    assert_error(&sale.get(&path).await, 401, "invalid_token");
    sale.finish().await;
}
