//! Bad input: a clear message naming the problem, exit 1 (refused by the library) or 2
//! (usage, from clap), and nothing changed in MySQL or Redis.

use chrono::Duration;
use rust_decimal::Decimal;
use seckill::ops::catalog::{self, NewActivity, NewProduct, ProductChanges};
use seckill::Error;

use crate::helpers::{future_window, rfc3339, spawn_app};

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    app.hot(activity.id).await;
    let before = app.snapshot().await;
    let missing = (activity.id + 1000).to_string();
    let what = format!("activity {missing} not found");
    for args in [
        vec!["activity", "show", &missing],
        vec!["activity", "update", &missing, "--name", "x"],
        vec!["activity", "delete", &missing],
        vec!["product", "list", "--activity", &missing],
        vec![
            "product",
            "add",
            "--activity",
            &missing,
            "--name",
            "x",
            "--price",
            "1",
            "--stock",
            "1",
        ],
        vec!["hot", &missing],
        vec!["start", &missing],
        vec!["stop", &missing],
        vec!["status", &missing],
        vec!["flush", "-y", &missing],
    ] {
        let out = app.cli(&args).await;
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&what), "{args:?}: {}", out.stderr);
    }
    let missing_product = (products[1].id + 1000).to_string();
    for args in [
        vec!["product", "show", &missing_product],
        vec!["product", "update", &missing_product, "--stock", "1"],
        vec!["product", "delete", &missing_product],
    ] {
        app.cli(&args)
            .await
            .fails_with(1, &[&format!("product {missing_product} not found")]);
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn bad_product_values_are_refused() {
    let app = spawn_app().await;
    let (activity, products) = app.activity_with_products().await;
    let a = activity.id.to_string();
    let p = products[0].id.to_string();
    let before = app.snapshot().await;
    let add = |extra: &[&'static str]| {
        let mut args = vec!["product", "add", "--activity", a.as_str(), "--name", "x"];
        args.extend_from_slice(extra);
        args
    };
    // (arguments, exit code, message)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            add(&["--price", "1", "--stock", "-5"]),
            2,
            "-5 is not in 0..=4294967295",
        ),
        (
            add(&["--price", "-1", "--stock", "5"]),
            2,
            "\"-1\" is not a plain decimal from 0 to 9999999999.99",
        ),
        (add(&["--price", "1.999", "--stock", "5"]), 2, "more than two decimals"),
        (add(&["--price", "abc", "--stock", "5"]), 2, "is not a plain decimal"),
        (
            add(&["--price", "1", "--stock", "5", "--limit-per-user", "0"]),
            2,
            "0 is not in 1..=4294967295",
        ),
        (
            add(&["--price", "1", "--stock", "5", "--max-per-order", "0"]),
            2,
            "0 is not in 1..=4294967295",
        ),
        (
            add(&["--price", "1", "--stock", "5000000000"]),
            2,
            "is not in 0..=4294967295",
        ),
        (
            vec![
                "product",
                "add",
                "--activity",
                &a,
                "--name",
                " ",
                "--price",
                "1",
                "--stock",
                "1",
            ],
            1,
            "name must not be empty",
        ),
        (
            vec!["product", "update", &p, "--stock", "-1"],
            2,
            "-1 is not in 0..=4294967295",
        ),
        (
            vec!["product", "update", &p, "--price", "-0.01"],
            2,
            "is not a plain decimal",
        ),
        (
            vec!["product", "update", &p, "--limit-per-user", "0"],
            2,
            "0 is not in 1..=4294967295",
        ),
        (
            vec!["product", "update", &p, "--max-per-order", "0"],
            2,
            "0 is not in 1..=4294967295",
        ),
    ];
    for (args, code, message) in cases {
        let out = app.cli(&args).await;
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn bad_windows_are_refused() {
    let app = spawn_app().await;
    let activity = app.create_activity(future_window()).await;
    let before = app.snapshot().await;
    let (start, end) = future_window();
    let (s, e) = (rfc3339(start), rfc3339(end));
    app.cli(&["activity", "create", "--name", "x", "--start", &e, "--end", &s])
        .await
        .fails_with(1, &["invalid input", "must be after start"]);
    app.cli(&["activity", "create", "--name", "x", "--start", &s, "--end", &s])
        .await
        .fails_with(1, &["must be after start"]);
    app.cli(&["activity", "create", "--name", "x", "--start", "tomorrow", "--end", &e])
        .await
        .fails_with(2, &["RFC 3339"]);
    app.cli(&["activity", "create", "--name", "", "--start", &s, "--end", &e])
        .await
        .fails_with(1, &["name must not be empty"]);
    let id = activity.id.to_string();
    let early = rfc3339(activity.start_at - Duration::hours(1));
    app.cli(&["activity", "update", &id, "--end", &early])
        .await
        .fails_with(1, &["must be after start"]);
    let late = rfc3339(activity.end_at + Duration::hours(1));
    app.cli(&["activity", "update", &id, "--start", &late])
        .await
        .fails_with(1, &["must be after start"]);
    app.cli(&["activity", "update", &id, "--name", &"n".repeat(129)])
        .await
        .fails_with(1, &["longer than 128"]);
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn the_library_returns_typed_errors() {
    let app = spawn_app().await;
    let (start, end) = future_window();
    let err = catalog::create_activity(
        &app.db,
        &NewActivity {
            name: "x".into(),
            start_at: end,
            end_at: start,
            hot: Default::default(),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    let err = catalog::get_activity(&app.db, 424242).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound(ref what) if what == "activity 424242"),
        "{err:?}"
    );
    let (activity, products) = app.online_activity().await;
    let new = NewProduct {
        activity_id: activity.id,
        name: "y".into(),
        price: Decimal::ONE,
        stock: 1,
        per_user_limit: 1,
        max_per_order: None,
        shards: None,
    };
    assert!(matches!(
        catalog::add_product(&app.db, &new).await.unwrap_err(),
        Error::Refused(_)
    ));
    let changes = ProductChanges {
        stock: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        catalog::update_product(&app.db, products[0].id, &changes)
            .await
            .unwrap_err(),
        Error::Refused(_)
    ));
    assert_eq!(app.count("activities").await, 1);
    assert_eq!(app.count("products").await, 2);
}

#[tokio::test]
async fn a_malformed_config_file_names_the_field_and_line() {
    let app = spawn_app().await;
    let before = app.snapshot().await;
    let path = app.write_file(
        "bad.yaml",
        "database:\n  url: mysql://root@127.0.0.1:3306/x\n  max_connections: lots\n",
    );
    let shown = path.display().to_string();
    app.cli(&["--config", &shown, "activity", "list"])
        .await
        .fails_with(2, &[&shown, "max_connections", "line 3"]);

    let path = app.write_file("typo.yaml", "redis:\n  urll: redis://127.0.0.1:6379\n");
    let shown = path.display().to_string();
    app.cli(&["--config", &shown, "hot", "1"])
        .await
        .fails_with(2, &[&shown, "urll", "line 2"]);

    let path = app.write_file("invalid.yaml", "token:\n  secret: short\n");
    app.cli(&["--config", &path.display().to_string(), "activity", "list"])
        .await
        .fails_with(2, &["token.secret"]);

    let missing = app.workdir.join("missing.yaml").display().to_string();
    app.cli(&["--config", &missing, "activity", "list"])
        .await
        .fails_with(2, &[&missing, "--config", "no such file"]);

    // Without --config a missing ./config.yaml means built-in defaults (plus the env overrides).
    app.cli(&["activity", "list"]).await.ok();
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let app = spawn_app().await;
    app.cli(&["activity", "show", "abc"])
        .await
        .fails_with(2, &["invalid value"]);
    app.cli(&["activity", "create", "--name", "x"])
        .await
        .fails_with(2, &["--start"]);
    app.cli(&["no-such-command"])
        .await
        .fails_with(2, &["unrecognized subcommand"]);
    assert_eq!(app.count("activities").await, 0);
}
