//! Observability: `GET /metrics` of serve and of `consumer --metrics-bind`, the reconcile
//! textfile, the alert rules and dashboard against the exported names, `status --watch`
//! off a terminal, and JSON logs without secrets.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::json;

use crate::helpers::{free_port, phone, signal, spec, users, wait_for_serve, KillOnDrop, TestApp};

/// The value of the sample `name{labels}` in a Prometheus text exposition (labels in any
/// order, all of them given).
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeSet<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, got) = match series.split_once('{') {
            Some((metric, rest)) => (
                metric,
                rest.trim_end_matches('}')
                    .split(',')
                    .map(str::to_string)
                    .collect::<BTreeSet<_>>(),
            ),
            None => (series, BTreeSet::new()),
        };
        (metric == name && got == want).then(|| value.parse().unwrap())
    })
}

/// Every metric name in the exposition (histogram series folded into their base name).
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The metric names declared in `src/metrics.rs` (its `pub const NAME: &str = "seckill_..."`).
fn declared_names() -> BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let names: BTreeSet<String> = source
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"seckill_"))
        .map(|l| l.split('"').nth(1).unwrap().to_string())
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    names
}

/// `seckill_...` names referenced in `text`, with histogram suffixes removed.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("seckill_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let res = http.get(url).send().await.expect("scrape");
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_metrics_count_what_happened() {
    let sale = TestApp::builder().sale(vec![spec(20, 1, 1)]).serve().build().await;
    let (activity, product) = (sale.activity.to_string(), sale.product.to_string());
    let url = format!("{}/metrics", sale.base);
    let stock_labels = [("activity", activity.as_str()), ("product", product.as_str())];

    // The refresh task reads the preheated stock at start, before any purchase.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(&sale.http, &url).await;
        if sample(&text, "seckill_remaining_stock", &stock_labels) == Some(20.0) {
            break;
        }
        assert!(Instant::now() < deadline, "remaining stock never refreshed:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A burst of 20 fresh buyers takes the whole stock.
    let buyers: Vec<String> = (0..20).map(|i| format!("burst{i}")).collect();
    let tokens = sale.tokens(&buyers).await;
    let answers = join_all(
        buyers
            .iter()
            .zip(&tokens)
            .map(|(u, t)| Box::pin(sale.buy(sale.product, u, 1, t)))
            .collect(),
    )
    .await;
    assert!(answers.iter().all(|(s, _)| s.as_u16() == 200), "{answers:?}");
    // Three late buyers, one after another: Redis says sold out once, then the cache answers.
    for i in 0..3 {
        let user = format!("late{i}");
        let token = sale.token(&user).await;
        let answer = sale.buy(sale.product, &user, 1, &token).await;
        assert_eq!(answer.1["error"], "sold_out", "{answer:?}");
    }
    // Two bad requests: a zero quantity and a body that is not JSON.
    assert_eq!(sale.buy(sale.product, "bad", 0, "x").await.0.as_u16(), 400);
    assert_eq!(
        sale.post_raw("/api/v1/buy", "{", Some("application/json"))
            .await
            .0
            .as_u16(),
        400
    );

    let text = scrape(&sale.http, &url).await;
    let buy = |code: &str| {
        sample(
            &text,
            "seckill_requests_total",
            &[("route", "/api/v1/buy"), ("code", code)],
        )
    };
    assert_eq!(buy("ok"), Some(20.0), "{text}");
    assert_eq!(buy("sold_out"), Some(3.0), "{text}");
    assert_eq!(buy("bad_request"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "seckill_reservations_total", &[]), Some(20.0));
    assert_eq!(sample(&text, "seckill_sold_out_cache_hits_total", &[]), Some(2.0));
    assert_eq!(sample(&text, "seckill_rate_limited_total", &[]), Some(0.0));
    for reason in ["admission", "breaker", "redis"] {
        assert_eq!(
            sample(&text, "seckill_busy_total", &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }
    assert_eq!(sample(&text, "seckill_remaining_stock", &stock_labels), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "seckill_request_duration_seconds_count",
            &[("route", "/api/v1/buy")]
        ),
        Some(25.0)
    );
    // 21 purchases reached Redis (20 + the first late one) in however many batches.
    let batches = sample(&text, "seckill_group_commit_batch_size_count", &[]).unwrap();
    assert_eq!(sample(&text, "seckill_group_commit_batch_size_sum", &[]), Some(21.0));
    assert!((1.0..=21.0).contains(&batches), "{batches}");
    assert_eq!(sample(&text, "seckill_admission_in_flight", &[]), Some(0.0));
    assert_eq!(sample(&text, "seckill_breaker_state", &[]), Some(0.0));

    // Every serve-side name of src/metrics.rs is exported.
    let exposed = exposed_names(&text);
    for name in declared_names().iter().filter(|n| {
        !n.starts_with("seckill_consumer_") && !n.starts_with("seckill_reconcile_") && *n != "seckill_dlq_entries"
    }) {
        assert!(exposed.contains(name), "{name} missing from /metrics:\n{text}");
    }
    sale.finish().await;
}

/// Runs the futures concurrently (a `join_all` without the futures crate).
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match std::pin::Pin::new(&mut *f).poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_metrics_after_a_drain_and_status_agrees() {
    let f = TestApp::builder().pipeline().sale(vec![phone(50, 1)]).build().await;
    let nos = f.reserve(users("m", 30), 1).await;
    assert_eq!(nos.len(), 30);
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut consumer = f.spawn(&["consumer", "--name", "metrics", "--metrics-bind", &bind]);
    let http = reqwest::Client::new();
    let url = format!("http://{bind}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = match http.get(&url).send().await {
            Ok(res) => res.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // The backlog gauges are refreshed every few seconds: wait until one refresh saw the drain.
        let activity = f.activity.to_string();
        let lag = sample(&text, "seckill_consumer_lag_entries", &[("activity", &activity)]);
        let pending = sample(&text, "seckill_consumer_pending_entries", &[("activity", &activity)]);
        if sample(&text, "seckill_consumer_orders_persisted_total", &[]) == Some(30.0)
            && lag == Some(0.0)
            && pending == Some(0.0)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "consumer metrics never showed the drain:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    signal(&consumer, "-TERM");
    assert!(consumer.wait().unwrap().success());
    let activity = f.activity.to_string();
    assert_eq!(sample(&text, "seckill_consumer_entries_read_total", &[]), Some(30.0));
    assert_eq!(sample(&text, "seckill_consumer_duplicates_total", &[]), Some(0.0));
    assert_eq!(sample(&text, "seckill_consumer_dead_lettered_total", &[]), Some(0.0));
    assert_eq!(sample(&text, "seckill_consumer_retries_total", &[]), Some(0.0));
    assert_eq!(
        sample(&text, "seckill_consumer_pending_entries", &[("activity", &activity)]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "seckill_dlq_entries", &[("activity", &activity)]),
        Some(0.0)
    );
    let batches = sample(&text, "seckill_consumer_batch_duration_seconds_count", &[]).unwrap();
    assert!(batches >= 1.0, "{text}");
    assert_eq!(f.orders().await, 30);

    // status --json agrees with Redis and MySQL.
    let (code, out) = f.run(&["status", &activity, "--json"]);
    assert_eq!(code, 0, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &status["products"][0];
    let (stock, sold, total) = f.redis_counters().await;
    assert_eq!((stock, sold, total), (20, 30, 50));
    assert_eq!(p["remaining"], json!(stock));
    assert_eq!(p["reserved"], json!(sold));
    assert_eq!(p["total_stock"], json!(total));
    assert_eq!(p["sold"], json!(f.mysql_sold().await));
    assert_eq!(p["orders"], json!(f.orders().await));
    assert_eq!(status["unpersisted"], json!(f.backlog().await));
    assert_eq!(status["unpersisted"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_writes_a_textfile() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    f.reserve(users("r", 4), 1).await;
    f.drain().await;
    let dir = std::env::temp_dir().join(format!("seckill-prom-{}", f.activity));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reconcile.prom");
    let activity = f.activity.to_string();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (code, out) = f.run(&["reconcile", &activity, "--metrics-file", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        sample(&text, "seckill_reconcile_drift", &[("activity", &activity)]),
        Some(0.0),
        "{text}"
    );
    let ran = sample(
        &text,
        "seckill_reconcile_last_run_timestamp_seconds",
        &[("activity", &activity)],
    )
    .unwrap();
    assert!(ran >= before.floor() && ran <= before + 60.0, "{ran} vs {before}");
    assert!(text.contains("# TYPE seckill_reconcile_drift gauge"));

    // Drift: Redis claims a unit more on sale than MySQL accounts for.
    let mut conn = f.redis.conn();
    let _: i64 = conn
        .hincr(f.redis.keys().product(f.activity, f.product), "stock", 1)
        .await
        .unwrap();
    let (code, out) = f.run(&["reconcile", &activity, "--metrics-file", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let text = std::fs::read_to_string(&path).unwrap();
    let drift = sample(&text, "seckill_reconcile_drift", &[("activity", &activity)]).unwrap();
    assert!(drift >= 1.0, "{text}");
    // Written atomically: no temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("reconcile.prom")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/prometheus/alerts.yml");
    let text = std::fs::read_to_string(rules).unwrap();
    let declared = declared_names();
    for name in referenced_names(&text) {
        assert!(
            declared.contains(&name),
            "alerts.yml uses {name}, which nothing exports"
        );
    }
    match Command::new("promtool").args(["check", "rules", rules]).output() {
        Err(_) => {
            eprintln!("notice: promtool not found (Debian package `prometheus`); alerts.yml not validated by promtool")
        }
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn grafana_dashboard_uses_exported_names() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/grafana/seckill.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard is JSON");
    let mut exprs = String::new();
    collect_exprs(&dashboard, &mut exprs);
    let used = referenced_names(&exprs);
    assert!(used.len() >= 10, "{used:?}");
    let declared = declared_names();
    for name in &used {
        assert!(
            declared.contains(name),
            "the dashboard uses {name}, which nothing exports"
        );
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => {
                        out.push_str(s);
                        out.push('\n');
                    }
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_plain_lines_and_stops_on_sigint() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    f.reserve(users("w", 3), 1).await;
    let activity = f.activity.to_string();
    let mut watch = KillOnDrop(
        f.command(&["status", &activity, "--watch", "--interval", "300ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal(&watch, "-INT");
    let status = watch.wait().unwrap();
    let mut out = String::new();
    watch.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    watch.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains('\x1b'), "escape codes off a terminal:\n{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "{out}");
    for line in &lines {
        assert!(
            line.contains(&format!("activity={activity} product={} remaining=7 sold=3", f.product)),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_no_token_or_secret() {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = KillOnDrop(
        f.command(&["--log-format", "json", "serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    wait_for_serve(&http, &base).await;
    let token = f.issue_token(&http, &base, "logger").await;
    let bought = http
        .post(format!("{base}/api/v1/buy"))
        .json(&json!({"product_id": f.product, "user_id": "logger", "quantity": 1, "token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(bought.status(), 200);
    let forged = format!("{}x", &token[..token.len() - 1]);
    let refused = http
        .post(format!("{base}/api/v1/buy"))
        .json(&json!({"product_id": f.product, "user_id": "other", "quantity": 1, "token": forged}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    signal(&serve, "-INT");
    assert!(serve.wait().unwrap().success());
    let mut logs = String::new();
    serve.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    let secret = f.config.token.secret.clone();
    let mut messages = Vec::new();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        messages.push(v["fields"]["message"].as_str().unwrap_or_default().to_string());
        assert!(!line.contains(&token), "token in the log: {line}");
        assert!(!line.contains(&forged), "token in the log: {line}");
        assert!(!line.contains(&secret), "secret in the log: {line}");
    }
    assert!(messages.iter().any(|m| m == "buy: queued"), "{logs}");
    assert!(messages.iter().any(|m| m == "buy: refused"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_sold_out_elsewhere_is_answered_from_memory() {
    // Stock 0 from the start: no purchase ever got a sold-out verdict from this server, yet the
    // periodic refresh marks it, so even requests that would stop at the token check (a
    // flood of bad tokens) are answered sold out without work.
    let sale = TestApp::builder().sale(vec![spec(0, 1, 1)]).serve().build().await;
    let url = format!("{}/metrics", sale.base);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = sale.buy(sale.product, "nobody", 1, "1.not-a-token").await;
        if answer.1["error"] == "sold_out" {
            break;
        }
        assert_eq!(answer.1["error"], "invalid_token", "{answer:?}");
        assert!(
            Instant::now() < deadline,
            "the refresh never marked the product sold out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = scrape(&sale.http, &url).await;
    assert!(
        sample(&text, "seckill_sold_out_cache_hits_total", &[]).unwrap() >= 1.0,
        "{text}"
    );
    // Bad input is still bad input.
    crate::helpers::assert_error(&sale.buy(sale.product, "nobody", 0, "x").await, 400, "bad_request");
    sale.finish().await;
}
