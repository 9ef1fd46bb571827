//! `seckill serve` with several HTTP threads (listeners sharing one port) or none of its own
//! (the runtime serving HTTP), and the promises holding when buyers arrive on all of them
//! at once.

use std::collections::HashSet;
use std::sync::Arc;

use std::process::Stdio;
use std::time::{Duration, Instant};

use seckill::server;
use serde_json::json;

use crate::helpers::{free_port, phone, signal, spec, wait_for_serve, KillOnDrop, TestApp};

#[test]
fn listeners_share_one_port_and_a_taken_port_is_refused() {
    let listeners = server::bind("127.0.0.1:0", 3).unwrap();
    let ports: HashSet<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    assert_eq!(listeners.len(), 3);
    assert_eq!(ports.len(), 1, "{ports:?}");
    let taken = listeners[0].local_addr().unwrap().to_string();
    // Neither a single listener nor a group sharing the port may join a running server.
    for count in [1, 2] {
        let refused = server::bind(&taken, count).expect_err("the port is taken");
        assert!(refused.to_string().contains(&taken), "{refused}");
    }
    assert!(server::bind("no-such-host.invalid:80", 2).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_http_threads_and_pipelined_calls_sell_exactly_the_stock() {
    let sale = Arc::new(
        TestApp::builder()
            .tune(|config| {
                config.http.threads = 3;
                // Several script calls of the activity in flight at once (the default is one).
                config.funnel.batch_pipeline = 4;
            })
            .sale(vec![spec(50, 1, 1)])
            .serve()
            .build()
            .await,
    );
    // 600 requests at once open many connections, which the kernel spreads over the three
    // listeners.
    let users: Vec<String> = (0..600).map(|i| format!("t{i}")).collect();
    let product = sale.product;
    let mut winners = HashSet::new();
    for (user, (status, body)) in sale.buy_at_once(product, users).await {
        match status.as_u16() {
            200 => assert!(winners.insert(user)),
            409 => assert_eq!(body["error"], "sold_out", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 50);
    assert_eq!(sale.counters(product).await, (0, 50, 50));
    // Stops every thread gracefully (finish panics when that takes over 5 s).
    Arc::into_inner(sale).unwrap().finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_two_threads_sells_and_exits_zero_on_sigterm() {
    sells_and_exits_zero_on_sigterm("2").await;
}

/// `--threads 0` (the default): the runtime's workers serve HTTP beside group commit and Redis,
/// with the same promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_the_runtime_sells_and_exits_zero_on_sigterm() {
    sells_and_exits_zero_on_sigterm("0").await;
}

/// `seckill serve --threads THREADS`: refuses a port already held, sells to two buyers on
/// connections of their own, and on SIGTERM exits 0 and stops listening.
async fn sells_and_exits_zero_on_sigterm(threads: &str) {
    let f = TestApp::builder().pipeline().sale(vec![phone(10, 1)]).build().await;

    // A port another server holds: a clear error and a failing exit, whatever the threads.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().to_string();
    let refused = f
        .command(&["serve", "--bind", &held, "--threads", threads])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&held) && stderr.contains("in use"), "{stderr}");
    drop(holder);

    let bind = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{bind}");
    let mut serve = KillOnDrop(
        f.command(&["serve", "--bind", &bind, "--threads", threads])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    wait_for_serve(&http, &base).await;
    for user in ["a", "b"] {
        let token = f.issue_token(&http, &base, user).await;
        let bought = http
            .post(format!("{base}/api/v1/buy"))
            // A new connection per buyer, so the kernel may pick either listener.
            .header("connection", "close")
            .json(&json!({"product_id": f.product, "user_id": user, "quantity": 1, "token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(bought.status(), 200);
    }
    signal(&serve, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        http.get(format!("{base}/health")).send().await.is_err(),
        "still listening"
    );
}
