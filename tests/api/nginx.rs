//! `scripts/nginx/seckill.conf` for real: an nginx of the test's own (spare port, its own
//! prefix directory, stopped by PID) in front of two `seckill serve` processes that trust it
//! (`auth.trusted_proxies: [127.0.0.1]`). The test client plays many buyers by sending the
//! address each "really" has in `X-Forwarded-For` (nginx believes 127.0.0.1 through its
//! real_ip settings, as it would a load balancer in front of it).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{free_port, random_suffix, spec, wait_for_serve, KillOnDrop, TestApp};

/// The nginx binary (Debian's package: `scripts/setup.sh --with-nginx`).
fn nginx_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nginx"))
                .find(|candidate| candidate.exists())
        })
        .expect("nginx not found: run scripts/setup.sh --with-nginx (scripts/test.sh does)")
}

/// The shipped config with its `${...}` names filled in, as `envsubst` would.
fn render_config(listen: u16, serves: [&str; 2]) -> String {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nginx/seckill.conf"))
        .expect("scripts/nginx/seckill.conf");
    let rendered = template
        .replace("${SECKILL_NGINX_LISTEN}", &format!("127.0.0.1:{listen}"))
        .replace("${SECKILL_SERVE_1}", serves[0])
        .replace("${SECKILL_SERVE_2}", serves[1])
        .replace("${SECKILL_NGINX_REAL_IP_FROM}", "127.0.0.1");
    // Only the comments' envsubst example may still name them.
    let unfilled = rendered
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && line.contains("${"))
        .collect::<Vec<_>>();
    assert!(unfilled.is_empty(), "names left unfilled: {unfilled:?}");
    rendered
}

/// nginx running in `dir` with the shipped config in front of `serves`, listening on `port`
/// (one process, `master_process off`: killing it by PID stops it all).
fn start_nginx(dir: &Path, port: u16, serves: [&str; 2]) -> KillOnDrop {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("seckill.conf"), render_config(port, serves)).unwrap();
    let d = dir.display();
    let main = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         include {d}/seckill.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("start nginx");
    KillOnDrop(child)
}

/// `seckill serve` on `port` with the app's config, debug logs (JSON lines) into `log`.
fn start_serve(app: &TestApp, port: u16, log: &Path) -> KillOnDrop {
    let child = app
        .command(&[
            "--log-format",
            "json",
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--threads",
            "1",
        ])
        .env("RUST_LOG", "warn,seckill=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start seckill serve");
    KillOnDrop(child)
}

/// `method path` through nginx as the client `address`.
async fn send(
    http: &reqwest::Client,
    base: &str,
    address: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let request = match body {
        Some(body) => http.post(format!("{base}{path}")).json(body),
        None => http.get(format!("{base}{path}")),
    };
    let answer = request
        .header("x-forwarded-for", address)
        .send()
        .await
        .expect("nginx answers");
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_two_serves_limits_and_logs_the_buyers_address() {
    const BUYERS: usize = 2_000;
    const STOCK: u32 = 100;
    let app = TestApp::builder()
        .sale(vec![spec(STOCK, 1, 1), spec(20, 1, 1)])
        .tune(|c| {
            c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            c.funnel.per_ip_rps = 1;
            c.funnel.per_ip_burst = 3;
        })
        .build()
        .await;
    let dir = std::env::temp_dir().join(format!("seckill-nginx-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let serve_ports = [free_port(), free_port()];
    let serve_logs = [dir.join("serve-1.log"), dir.join("serve-2.log")];
    let _serves = [
        start_serve(&app, serve_ports[0], &serve_logs[0]),
        start_serve(&app, serve_ports[1], &serve_logs[1]),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for port in serve_ports {
        wait_for_serve(&http, &format!("http://127.0.0.1:{port}")).await;
    }
    let port = free_port();
    let serves = serve_ports.map(|p| format!("127.0.0.1:{p}"));
    let _nginx = start_nginx(&dir.join("nginx"), port, [&serves[0], &serves[1]]);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(http.get(format!("{base}/health")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            Instant::now() < deadline,
            "nginx did not come up: {}",
            std::fs::read_to_string(dir.join("nginx/stderr.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The burst: 2,000 buyers, each from an address of its own, for 100 units, limit 1.
    let users: Vec<String> = (0..BUYERS).map(|n| format!("buyer{n}")).collect();
    let tokens = app.tokens(&users).await;
    let (http, base) = (Arc::new(http), Arc::new(base));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let product = app.product;
    let mut tasks = Vec::new();
    for (n, (user, token)) in users.into_iter().zip(tokens).enumerate() {
        let (http, base, gate) = (http.clone(), base.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let address = format!("10.0.{}.{}", n / 256, n % 256);
            let body = json!({"product_id": product, "user_id": user, "quantity": 1, "token": token});
            (user, send(&http, &base, &address, "/api/v1/buy", Some(&body)).await)
        }));
    }
    let mut buyers = HashSet::new();
    let mut sold_out = 0;
    for task in tasks {
        let (user, (status, body)) = task.await.unwrap();
        match status.as_u16() {
            200 => assert!(buyers.insert(user), "{body}"),
            409 if body["error"] == "sold_out" => sold_out += 1,
            _ => panic!("{user}: {status} {body}"),
        }
    }
    assert_eq!(buyers.len(), STOCK as usize, "exactly the stock, to distinct buyers");
    assert_eq!(sold_out, BUYERS - STOCK as usize);
    assert_eq!(app.counters(product).await, (0, i64::from(STOCK), STOCK as usize));

    // serve limits by the address nginx passes: one address over serve's per-IP rate (3 a
    // second per instance, so at most 7 buys over both in this second) is refused by serve ...
    let second = app.products[1];
    let mut bought = 0;
    let mut refused_by_serve = false;
    for n in 0..12 {
        let user = format!("one-address-{n}");
        let token = app.token(&user).await;
        let body = json!({"product_id": second, "user_id": user, "quantity": 1, "token": token});
        let (status, answer) = send(&http, &base, "203.0.113.7", "/api/v1/buy", Some(&body)).await;
        match status.as_u16() {
            200 => bought += 1,
            429 => {
                assert_eq!(
                    answer["message"], "rate limit exceeded, slow down",
                    "serve's 429: {answer}"
                );
                refused_by_serve = true;
            }
            _ => panic!("{status} {answer}"),
        }
    }
    assert!(refused_by_serve && (3..=7).contains(&bought), "{bought} bought");
    // ... while another address, through the same nginx, still buys.
    let token = app.token("another-address").await;
    let body = json!({"product_id": second, "user_id": "another-address", "quantity": 1, "token": token});
    let (status, answer) = send(&http, &base, "203.0.113.8", "/api/v1/buy", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");

    // A client over nginx's own limit_req (10/s, bursts of 20) gets nginx's 429.
    let mut asks = Vec::new();
    for _ in 0..60 {
        let (http, base) = (http.clone(), base.clone());
        asks.push(tokio::spawn(async move {
            send(&http, &base, "198.51.100.77", "/api/v1/time", None).await
        }));
    }
    let (mut served, mut limited) = (0, 0);
    for ask in asks {
        let (status, answer) = ask.await.unwrap();
        match status.as_u16() {
            200 => served += 1,
            429 => {
                assert_eq!(answer["error"], "too_many_requests", "{answer}");
                assert!(answer["message"].as_str().unwrap().contains("nginx"), "{answer}");
                limited += 1;
            }
            _ => panic!("{status} {answer}"),
        }
    }
    assert!(
        (1..=25).contains(&served) && limited >= 35,
        "{served} served, {limited} limited"
    );

    // The buy log lines name the buyers' addresses, never nginx's.
    let logs: String = serve_logs
        .iter()
        .map(|log| std::fs::read_to_string(log).unwrap())
        .collect();
    let buy_lines: Vec<&str> = logs.lines().filter(|line| line.contains("\"buy: ")).collect();
    assert!(buy_lines.len() >= BUYERS, "{} buy lines", buy_lines.len());
    assert!(
        buy_lines
            .iter()
            .any(|line| line.contains(r#""client":"203.0.113.7""#) && line.contains("buy: refused")),
        "the limited address is logged"
    );
    assert!(buy_lines.iter().any(|line| line.contains(r#""client":"10.0.7.207""#)));
    assert!(
        !buy_lines.iter().any(|line| line.contains(r#""client":"127.0.0.1""#)),
        "nginx's own address is never the client"
    );
    drop((_nginx, _serves));
    std::fs::remove_dir_all(&dir).ok();
}
