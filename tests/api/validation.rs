//! Input that used to slip past the edges (issue 15): user ids the consumer could not
//! persist, deletes and window changes that left Redis and MySQL disagreeing, case-folded
//! blacklist ids, and numbers or dates that reached the backends unchecked.

use chrono::Duration;
use redis::AsyncCommands;
use seckill::buy::{self, Outcome, Purchase};
use serde_json::{json, Value};

use crate::helpers::{assert_error, rfc3339, spawn_app, spec, TestApp};

/// Registers a validly signed token for `user` straight in Redis, past every entry point's
/// user-id check, so the buy endpoint's own check is what is tested.
async fn forge_registered_token(sale: &TestApp, user: &str) -> String {
    let token = sale.signer.sign(sale.activity, user, seckill::token::unix_now() + 600);
    let () = sale
        .redis
        .conn()
        .set_ex(sale.redis.keys().token(sale.activity, user), &token, 600)
        .await
        .unwrap();
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_over_64_bytes_or_with_invisible_characters_are_refused_everywhere() {
    let sale = TestApp::builder().sale(vec![spec(100, 1, 1)]).serve().build().await;
    let (a, p) = (sale.activity.to_string(), sale.product);
    let counters = sale.counters(p).await;
    let too_long = "é".repeat(33); // 33 characters, 66 bytes
    let answer = sale
        .post_json(
            "/api/v1/token",
            &json!({"activity_id": sale.activity, "user_id": too_long}),
        )
        .await;
    assert_error(&answer, 400, "bad_request");
    assert!(answer.1["message"].as_str().unwrap().contains("66 bytes"), "{answer:?}");
    let token = forge_registered_token(&sale, &too_long).await;
    assert_error(&sale.buy(p, &too_long, 1, &token).await, 400, "bad_request");

    for invisible in [
        "a\u{200B}b",
        "a\u{200D}b",
        "evil\u{202E}gpj.exe",
        "a\u{2066}b",
        "\u{FEFF}a",
        " a",
        "a ",
    ] {
        let answer = sale
            .post_json(
                "/api/v1/token",
                &json!({"activity_id": sale.activity, "user_id": invisible}),
            )
            .await;
        assert_error(&answer, 400, "bad_request");
        let token = forge_registered_token(&sale, invisible).await;
        assert_error(&sale.buy(p, invisible, 1, &token).await, 400, "bad_request");
        sale.cli(&["blacklist", "add", invisible])
            .await
            .fails_with(2, &["<USER>", "must not contain"]);
    }
    assert_eq!(sale.counters(p).await, counters, "nothing deducted, nothing queued");

    sale.cli(&["token", &a, "--user", &too_long])
        .await
        .fails_with(2, &["--user", "66 bytes", "at most 64 bytes"]);
    sale.cli(&["token", "revoke", &a, "--user", &too_long])
        .await
        .fails_with(2, &["--user", "66 bytes"]);
    sale.cli(&["blacklist", "add", &too_long])
        .await
        .fails_with(2, &["66 bytes"]);
    sale.cli(&["blacklist", "remove", &too_long])
        .await
        .fails_with(2, &["66 bytes"]);
    sale.cli(&["order", "list", "--activity", &a, "--user", &too_long])
        .await
        .fails_with(2, &["--user", "66 bytes"]);
    let file = std::env::temp_dir().join(format!("seckill-users-{}.txt", rand::random::<u64>()));
    std::fs::write(&file, format!("early-bird\n\n{too_long}\n")).unwrap();
    sale.cli(&["token", &a, "--users", file.to_str().unwrap()])
        .await
        .fails_with(1, &["line 3", "66 bytes"]);
    std::fs::remove_file(&file).ok();
    let early: Option<String> = sale
        .redis
        .conn()
        .get(sale.redis.keys().token(sale.activity, "early-bird"))
        .await
        .unwrap();
    assert_eq!(early, None, "a refused file issues no token at all");
    let listed = sale.cli(&["blacklist", "list", "--json"]).await;
    assert_eq!(listed.ok().json(), json!([]));

    // The longest valid ids go all the way: token, purchase, a real consumer, MySQL.
    let longest = ["é".repeat(32), "😀".repeat(16), "x".repeat(64), "用户".repeat(10)];
    for user in &longest {
        assert!(user.len() <= 64);
        let issued = sale
            .post_json("/api/v1/token", &json!({"activity_id": sale.activity, "user_id": user}))
            .await;
        assert_eq!(issued.0, 200, "{issued:?}");
        let bought = sale.buy(p, user, 1, issued.1["token"].as_str().unwrap()).await;
        assert_eq!(bought.0, 200, "{bought:?}");
        assert_eq!(bought.1["status"], "queued");
    }
    sale.cli(&["consumer", "--once"]).await.ok();
    let persisted: Vec<String> = sqlx::query_scalar("SELECT CAST(user_id AS CHAR) FROM orders ORDER BY id")
        .fetch_all(sale.db.pool())
        .await
        .unwrap();
    assert_eq!(persisted, longest.to_vec());
    let dead: usize = sale
        .redis
        .conn()
        .xlen(sale.redis.keys().dlq(sale.activity))
        .await
        .unwrap();
    assert_eq!(dead, 0);

    // The column enforces the same byte limit.
    let refused = sqlx::query("INSERT INTO blacklist (user_id) VALUES (?)")
        .bind(&too_long)
        .execute(sale.db.pool())
        .await;
    assert!(refused.is_err(), "MySQL accepted a 66-byte user id");
    sale.finish().await;
}

/// Queues one purchase of `product` by `user` in Redis (as the buy endpoint does).
async fn reserve_one(app: &TestApp, activity: u64, product: u64, user: &str) {
    let token = format!("tok-{user}");
    let () = app
        .redis
        .conn()
        .set(app.redis.keys().token(activity, user), &token)
        .await
        .unwrap();
    let verdicts = buy::reserve(
        &app.redis,
        activity,
        &[Purchase {
            product_id: product,
            user_id: user.into(),
            quantity: 1,
            token,
        }],
    )
    .await
    .unwrap();
    assert_eq!(verdicts[0].outcome, Outcome::Ok, "{verdicts:?}");
}

#[tokio::test]
async fn deletes_wait_until_every_reservation_is_persisted_or_replayed() {
    let app = spawn_app().await;
    let (activity, products) = app.online_activity().await;
    let (a, phone, case) = (activity.id.to_string(), products[0].id, products[1].id.to_string());
    reserve_one(&app, activity.id, phone, "u1").await;
    app.cli(&["stop", &a]).await.ok();
    let before = app.snapshot().await;
    app.cli(&["product", "delete", &case])
        .await
        .fails_with(1, &["refused", "1 reservations not yet persisted"]);
    app.cli(&["activity", "delete", &a])
        .await
        .fails_with(1, &["refused", "1 reservations not yet persisted"]);
    assert_eq!(app.snapshot().await, before, "a refused delete changes nothing");

    app.cli(&["consumer", "--once"]).await.ok();
    assert_eq!(app.count("orders").await, 1);
    // A dead-lettered reservation still waits for `consumer dlq replay`.
    let dlq = app.redis.keys().dlq(activity.id);
    let () = app
        .redis
        .conn()
        .xadd(&dlq, "*", &[("user", "u2"), ("dlq_error", "mysql down")])
        .await
        .unwrap();
    app.cli(&["product", "delete", &case])
        .await
        .fails_with(1, &["1 dead-lettered reservations"]);
    let () = app.redis.conn().del(&dlq).await.unwrap();
    app.cli(&["product", "delete", &case]).await.ok();
    assert_eq!(app.count("products").await, 1);
    app.cli(&["activity", "delete", &a])
        .await
        .fails_with(1, &["has 1 orders"]);
}

#[tokio::test]
async fn an_online_window_is_frozen_and_a_stopped_one_reaches_redis_on_start() {
    let app = spawn_app().await;
    let (activity, _) = app.online_activity().await;
    let a = activity.id.to_string();
    let cut = activity.end_at - Duration::minutes(30);
    let before = app.snapshot().await;
    app.cli(&["activity", "update", &a, "--end", &rfc3339(cut)])
        .await
        .fails_with(1, &["refused", "online", "seckill stop"]);
    app.cli(&[
        "activity",
        "update",
        &a,
        "--start",
        &rfc3339(activity.start_at + Duration::minutes(5)),
    ])
    .await
    .fails_with(1, &["refused", "online"]);
    assert_eq!(app.snapshot().await, before);
    app.cli(&["activity", "update", &a, "--name", "renamed"]).await.ok();
    assert_eq!(app.activity(activity.id).await.name, "renamed");

    app.cli(&["stop", &a]).await.ok();
    app.cli(&["activity", "update", &a, "--end", &rfc3339(cut)]).await.ok();
    app.cli(&["start", &a]).await.ok();
    assert_eq!(
        app.activity_hash(activity.id).await["end_ms"],
        cut.timestamp_millis().to_string(),
        "Redis sells in the new window"
    );
    assert_eq!(app.activity(activity.id).await.end_at, cut);
}

#[tokio::test]
async fn user_ids_compare_exactly_in_mysql_as_in_redis() {
    let app = spawn_app().await;
    let (activity, _) = app.online_activity().await;
    let barred = app.redis.keys().blacklist(activity.id);
    app.cli(&["blacklist", "add", "Mallory"]).await.ok();
    let out = app.cli(&["blacklist", "remove", "mallory"]).await;
    assert!(
        out.ok().stdout.contains("mallory was not blacklisted"),
        "{}",
        out.stdout
    );
    let listed = app.cli(&["blacklist", "list", "--json"]).await.ok().json();
    assert_eq!(
        listed,
        json!([{"user_id": "Mallory", "reason": "", "created_at": listed[0]["created_at"]}])
    );
    let members: Vec<String> = app.redis.conn().smembers(&barred).await.unwrap();
    assert_eq!(members, vec!["Mallory".to_string()]);

    let out = app.cli(&["blacklist", "add", "mallory"]).await;
    assert!(out.ok().stdout.contains("blacklisted mallory"), "{}", out.stdout);
    let listed = app.cli(&["blacklist", "list", "--json"]).await.ok().json();
    let mut ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["Mallory", "mallory"]);

    // Every user-id column, present and future, compares bytes.
    let columns: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR), CAST(collation_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND column_name = 'user_id' ORDER BY table_name",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let tables: Vec<&str> = columns.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        tables.contains(&"orders") && tables.contains(&"blacklist"),
        "{columns:?}"
    );
    for (table, collation) in &columns {
        assert_eq!(collation.as_deref(), Some("utf8mb4_bin"), "{table}.user_id");
    }
}

#[tokio::test]
async fn preheating_counts_ids_differing_only_in_case_as_two_users() {
    let app = spawn_app().await;
    let (activity, products) = app.online_activity().await;
    let (a, phone) = (activity.id.to_string(), products[0].id);
    reserve_one(&app, activity.id, phone, "Bob").await;
    reserve_one(&app, activity.id, phone, "bob").await;
    app.cli(&["consumer", "--once"]).await.ok();
    assert_eq!(app.count("orders").await, 2);
    app.cli(&["stop", &a]).await.ok();
    app.cli(&["hot", &a]).await.ok();
    // Folded together, one of them would hold 2 units in Redis and the other none (free to
    // buy past the per-user limit).
    let bought = app.redis_hash(&app.redis.keys().bought(activity.id, phone)).await;
    assert_eq!(bought.get("Bob").map(String::as_str), Some("1"), "{bought:?}");
    assert_eq!(bought.get("bob").map(String::as_str), Some("1"), "{bought:?}");
}

#[tokio::test]
async fn numeric_date_and_price_flags_are_checked_by_clap_naming_the_flag_and_range() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    app.hot(activity.id).await;
    let (a, p) = (activity.id.to_string(), products[0].id.to_string());
    let end = rfc3339(activity.end_at);
    let before = app.snapshot().await;
    let product_add = |extra: &[&'static str]| {
        let mut args = vec!["product", "add", "--activity", a.as_str(), "--name", "x"];
        args.extend_from_slice(extra);
        args
    };
    let price_range = "0 to 9999999999.99";
    // (arguments, what stderr must name)
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec![
                "activity",
                "create",
                "--name",
                "x",
                "--start",
                "0001-01-01T00:00:00Z",
                "--end",
                &end,
            ],
            vec!["--start", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"],
        ),
        (
            vec![
                "activity",
                "create",
                "--name",
                "x",
                "--start",
                "2026-01-01T00:00:00Z",
                "--end",
                "9999-12-31T23:59:59-05:00",
            ],
            vec!["--end", "9999-12-31T23:59:59Z"],
        ),
        (
            vec!["activity", "update", &a, "--end", "0001-01-01T00:00:00Z"],
            vec!["--end", "1970-01-01T00:00:00Z"],
        ),
        (
            product_add(&["--price", "1e3", "--stock", "5"]),
            vec!["--price", price_range],
        ),
        (
            product_add(&["--price", "-1", "--stock", "5"]),
            vec!["--price", price_range],
        ),
        (
            product_add(&["--price", "1.999", "--stock", "5"]),
            vec!["--price", "two decimals"],
        ),
        (
            product_add(&["--price", "10000000000", "--stock", "5"]),
            vec!["--price", price_range],
        ),
        (product_add(&["--price", " 1", "--stock", "5"]), vec!["--price"]),
        (product_add(&["--price", "0x10", "--stock", "5"]), vec!["--price"]),
        (
            product_add(&["--price", "1", "--stock", "-5"]),
            vec!["--stock", "0..=4294967295"],
        ),
        (
            product_add(&["--price", "1", "--stock", "5000000000"]),
            vec!["--stock", "0..=4294967295"],
        ),
        (
            product_add(&["--price", "1", "--stock", "5", "--limit-per-user", "0"]),
            vec!["--limit-per-user", "1..=4294967295"],
        ),
        (
            product_add(&["--price", "1", "--stock", "5", "--max-per-order", "0"]),
            vec!["--max-per-order", "1..=4294967295"],
        ),
        (vec!["product", "update", &p, "--price", "1E2"], vec!["--price"]),
        (
            vec!["product", "update", &p, "--limit-per-user", "0"],
            vec!["--limit-per-user"],
        ),
        (
            vec!["token", &a, "--user", "u1", "--ttl", "18446744073709551615"],
            vec!["--ttl", "1..=31536000"],
        ),
        (
            vec!["token", &a, "--user", "u1", "--ttl", "0"],
            vec!["--ttl", "1..=31536000"],
        ),
        (
            vec!["token", &a, "--range", "5-1"],
            vec!["--range", "FIRST must not exceed LAST"],
        ),
        (vec!["token", &a, "--range", "1-20000000"], vec!["--range", "10000000"]),
        (vec!["token", &a, "--range", "1-x"], vec!["--range", "FIRST-LAST"]),
        (
            vec!["order", "list", "--activity", &a, "--limit", "0"],
            vec!["--limit", "1..="],
        ),
        (
            vec!["order", "list", "--activity", &a, "--status", "lost"],
            vec!["--status", "pending"],
        ),
        (
            vec!["order", "expire", "--older-than", "100000d"],
            vec!["--older-than", "3650"],
        ),
        (vec!["status", &a, "--interval", "0s"], vec!["--interval"]),
        (
            vec!["consumer", "--once", "--batch", "0"],
            vec!["--batch", "1..=100000"],
        ),
        (vec!["bench", "--spawn", "--stock", "0"], vec!["--stock", "1..="]),
        (vec!["bench", "--spawn", "--users", "0"], vec!["--users", "1..="]),
        (vec!["bench", "--spawn", "--requests", "0"], vec!["--requests", "1..="]),
        (
            vec!["bench", "--spawn", "--concurrency", "0"],
            vec!["--concurrency", "1..="],
        ),
        (
            vec!["bench", "--spawn", "--limit-per-user", "0"],
            vec!["--limit-per-user", "1..="],
        ),
        (
            vec!["bench", "--spawn", "--consumers", "100000"],
            vec!["--consumers", "0..="],
        ),
    ];
    for (args, needles) in cases {
        let out = app.cli(&args).await;
        assert_eq!(out.code, 2, "{args:?}:\n{}", out.stderr);
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "{args:?}: stderr lacks {needle:?}:\n{}",
                out.stderr
            );
        }
    }
    assert_eq!(app.snapshot().await, before, "a refused command changes nothing");

    // The edges themselves are accepted.
    app.cli(&product_add(&["--price", "9999999999.99", "--stock", "4294967295"]))
        .await
        .ok();
    app.cli(&product_add(&["--price", "0", "--stock", "0"])).await.ok();
    let start = "1970-01-01T00:00:00Z";
    app.cli(&[
        "activity",
        "create",
        "--name",
        "edge",
        "--start",
        start,
        "--end",
        "9999-12-31T23:59:59Z",
    ])
    .await
    .ok();
    let issued = app.cli(&["token", &a, "--user", "u1", "--ttl", "31536000"]).await;
    assert!(issued.ok().stdout.starts_with("u1,"), "{}", issued.stdout);
}

#[tokio::test]
async fn a_missing_config_file_is_a_usage_error() {
    let app = spawn_app().await;
    let missing = app.workdir.join("missing.yaml").display().to_string();
    app.cli(&["--config", &missing, "activity", "list"])
        .await
        .fails_with(2, &["--config", &missing, "no such file"]);
    let value: Value = app.cli(&["activity", "list", "--json"]).await.ok().json();
    assert_eq!(value, json!([]));
}
