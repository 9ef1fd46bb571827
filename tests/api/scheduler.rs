//! `seckill scheduler`: opens a preheated activity at its start and ends it at its end, in
//! MySQL and Redis, and several schedulers at once make each transition once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use seckill::model::ActivityStatus;

use crate::helpers::{phone, signal, KillOnDrop, TestApp};

/// An activity with one product, preheated (still `draft`), whose window opens `opens_in`
/// from now (whole seconds) and lasts `lasts`.
async fn preheated(app: &TestApp, opens_in: i64, lasts: i64) -> (u64, DateTime<Utc>, DateTime<Utc>) {
    let start = Utc::now().trunc_subsecs(0) + chrono::Duration::seconds(opens_in);
    let end = start + chrono::Duration::seconds(lasts);
    let activity = app.create_activity((start, end)).await;
    app.add_product(activity.id, phone(10, 1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.hot(activity.id).await;
    assert_eq!(app.activity(activity.id).await.status, ActivityStatus::Draft);
    (activity.id, start, end)
}

/// `seckill scheduler` with JSON logs on a pipe (transitions are logged at info).
pub(crate) fn scheduler(app: &TestApp) -> KillOnDrop {
    app.command(&["--log-format", "json", "scheduler"])
        .env("RUST_LOG", "seckill=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .unwrap()
}

/// Stops `child` with SIGTERM; asserts it exits 0 and returns its log lines.
pub(crate) fn stop(child: KillOnDrop) -> Vec<serde_json::Value> {
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "scheduler exit {:?}: {log}", out.status);
    log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Log lines with `message` about `activity`.
pub(crate) fn count(logs: &[serde_json::Value], message: &str, activity: u64) -> usize {
    logs.iter()
        .filter(|l| l["fields"]["message"] == message && l["fields"]["activity"] == activity)
        .count()
}

/// Polls MySQL until the activity has `status`; the moment it was seen.
pub(crate) async fn seen(app: &TestApp, activity: u64, status: ActivityStatus, deadline: Instant) -> DateTime<Utc> {
    loop {
        if app.activity(activity).await.status == status {
            return Utc::now();
        }
        assert!(Instant::now() < deadline, "activity {activity} never became {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn opens_at_start_and_ends_at_end_in_mysql_and_redis() {
    let app = TestApp::builder().build().await;
    let (id, start, end) = preheated(&app, 2, 2).await;
    let child = scheduler(&app);
    let deadline = Instant::now() + Duration::from_secs(10);

    let opened = seen(&app, id, ActivityStatus::Online, deadline).await;
    assert_eq!(app.activity_hash(id).await["status"], "online", "Redis opened too");
    let late = opened - start;
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
        "opened {late} after its start"
    );

    let ended = seen(&app, id, ActivityStatus::Ended, deadline).await;
    assert_eq!(app.activity_hash(id).await["status"], "ended", "Redis ended too");
    let late = ended - end;
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
        "ended {late} after its end"
    );

    let logs = stop(child);
    assert_eq!(count(&logs, "activity opened", id), 1, "{logs:?}");
    assert_eq!(count(&logs, "activity ended", id), 1, "{logs:?}");
}

#[tokio::test]
async fn a_paused_or_unpreheated_activity_is_not_opened() {
    let app = TestApp::builder().build().await;
    // Preheated and started, then paused by an operator: resuming it is theirs to decide.
    let (paused, _, _) = preheated(&app, -5, 3600).await;
    seckill::ops::start(&app.db, &app.redis, paused).await.unwrap();
    seckill::ops::stop(&app.db, &app.redis, paused, false).await.unwrap();
    // Due, but never preheated: `start` would refuse, and the scheduler says so once.
    let now = Utc::now().trunc_subsecs(0);
    let cold = app
        .create_activity((now - chrono::Duration::seconds(5), now + chrono::Duration::hours(1)))
        .await
        .id;
    let child = scheduler(&app);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = stop(child);
    assert_eq!(app.activity(paused).await.status, ActivityStatus::Paused);
    assert_eq!(app.activity(cold).await.status, ActivityStatus::Draft);
    assert_eq!(count(&logs, "activity opened", paused), 0, "{logs:?}");
    let warned = logs
        .iter()
        .filter(|l| l["fields"]["activity"] == cold && l["level"] == "WARN")
        .count();
    assert_eq!(warned, 1, "one warning, not one per tick: {logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_at_once_make_each_transition_once() {
    // Ticks far shorter than a transition, so unguarded schedulers would overlap.
    let app = TestApp::builder().tune(|c| c.scheduler.tick_ms = 10).build().await;
    let mut activities = Vec::new();
    for _ in 0..3 {
        activities.push(preheated(&app, 2, 2).await.0);
    }
    let children: Vec<KillOnDrop> = (0..3).map(|_| scheduler(&app)).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    for &id in &activities {
        seen(&app, id, ActivityStatus::Ended, deadline).await;
    }
    let logs: Vec<serde_json::Value> = children.into_iter().flat_map(stop).collect();
    for &id in &activities {
        assert_eq!(count(&logs, "activity opened", id), 1, "activity {id}: {logs:?}");
        assert_eq!(count(&logs, "activity ended", id), 1, "activity {id}: {logs:?}");
    }
    let errors: Vec<_> = logs.iter().filter(|l| l["level"] != "INFO").collect();
    assert!(errors.is_empty(), "a lost race is not an error: {errors:?}");
}

#[tokio::test]
async fn a_pool_of_one_connection_is_refused_before_anything_runs() {
    let app = TestApp::builder().build().await;
    let mut config = app.config.clone();
    config.database.max_connections = 1;
    let path = app.write_config("one-connection.yaml", &config);
    app.cli(&["--config", path.to_str().unwrap(), "scheduler"])
        .await
        .fails_with(2, &["database.max_connections", "at least 2"]);
}
