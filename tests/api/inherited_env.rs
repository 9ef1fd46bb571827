//! The processes the tests start take their settings from the test's own configuration, not
//! from `SECKILL_*` variables exported in the environment `cargo test` runs in.

use crate::helpers::{mysql_server_url, redis_url};

/// Runs one pipeline test (whose `seckill reconcile` is started through the fixture) in a
/// child of this test binary, with `SECKILL_*` exported towards a dead MySQL, a dead Redis and
/// another key prefix: the test must still pass, and quickly.
#[test]
fn exported_seckill_variables_do_not_reach_the_binary_the_tests_start() {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pipeline::reconcile_classifies_and_fixes",
            "--test-threads",
            "1",
        ])
        .env("SECKILL_TEST_MYSQL_URL", mysql_server_url())
        .env("SECKILL_TEST_REDIS_URL", redis_url())
        .env("SECKILL_DATABASE_URL", "mysql://root@127.0.0.1:1/elsewhere")
        .env("SECKILL_REDIS_URL", "redis://127.0.0.1:1/0")
        .env("SECKILL_KEY_PREFIX", "elsewhere")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
