//! Progress bars (`src/progress.rs`): drawn on a terminal once a job runs long, never on a pipe.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::helpers::{phone, users, TestApp};

/// Runs `seckill ARGS` under `script`, so stdout and stderr are a terminal, with bars shown
/// after `show_after_ms`; returns what the terminal showed.
fn on_a_terminal(f: &TestApp, args: &[&str], show_after_ms: u64) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_seckill").to_string())
        .chain(["--config".into(), f.config_path.display().to_string()])
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = Command::new("script");
    command.args(["-qec", &line, "/dev/null"]).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("SECKILL_")) {
        command.env_remove(name);
    }
    // A person's terminal names its type; without TERM indicatif draws nothing (as under cron or
    // a bare CI runner, where this test would otherwise see no bar).
    command
        .env("SECKILL_PROGRESS_AFTER_MS", show_after_ms.to_string())
        .env("TERM", "xterm");
    let out = command.stdin(Stdio::null()).output().expect("script(1) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn progress_default_ms() -> u64 {
    seckill::progress::SHOW_AFTER.as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_expire_draws_a_bar_on_a_terminal_when_long_and_nothing_on_a_pipe() {
    const ORDERS: usize = 400;
    let f = TestApp::builder().pipeline().sale(vec![phone(10_000, 1)]).build().await;
    let a = f.activity.to_string();
    let expire = ["order", "expire", "--older-than", "0s", "--activity", a.as_str()];

    f.reserve(users("pipe", ORDERS), 1).await;
    f.drain().await;
    let started = Instant::now();
    let piped = f
        .command(&expire)
        .env("SECKILL_PROGRESS_AFTER_MS", "0")
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(piped.status.success(), "{piped:?}");
    assert!(piped.stderr.is_empty(), "{}", String::from_utf8_lossy(&piped.stderr));
    let stdout = String::from_utf8_lossy(&piped.stdout);
    assert!(
        stdout.ends_with(&format!("{ORDERS} expired, 0 paid or cancelled meanwhile\n")),
        "{stdout}"
    );
    assert!(!stdout.contains("expire ["), "{stdout}");

    f.reserve(users("tty", ORDERS), 1).await;
    f.drain().await;
    // How long "long" is, is not what this test is about (the machine's speed would decide
    // it): the bar is told to appear at once, so any job on a terminal draws one.
    let shown = on_a_terminal(&f, &expire, 0);
    assert!(shown.contains(&format!("{ORDERS} expired")), "{shown}");
    assert!(
        shown.contains("expire ["),
        "the job drew no bar on a terminal:\n{shown}"
    );
    // A quick job on a terminal (nothing to expire) ends before the default delay: no bar.
    let quick = on_a_terminal(&f, &expire, progress_default_ms());
    assert!(quick.contains("0 expired") && !quick.contains("expire ["), "{quick}");
    eprintln!("expiring {ORDERS} orders took {took:?}");
}
