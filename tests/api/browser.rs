//! The buyer page in a real browser: headless Chromium driven over WebDriver (`fantoccini`)
//! through a `chromedriver` this test starts on a spare port and stops by its process group
//! (`chromium.rs`).
//! `scripts/setup.sh --with-browser` (run by `scripts/test.sh`) installs Debian's `chromium`
//! and `chromium-driver`.
//!
//! One browser serves every case, one after the other (starting Chromium costs more than
//! any case), against one server whose buy requests are counted in its metrics. The page's
//! clock is skewed by +60 s before its script runs (Chrome DevTools'
//! `Page.addScriptToEvaluateOnNewDocument`), for every case: nothing may depend on it.

use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use seckill::ops::catalog::{self, NewActivity};

use crate::chromium::{open_browser, start_driver, Cdp};
use crate::helpers::{spec, ProductSpec, TestApp};

/// How far ahead of the real time the page's `Date` runs.
const SKEW_MS: i64 = 60_000;

/// Runs `script` in the page and returns its value.
async fn js(client: &Client, script: &str, args: Vec<Value>) -> Value {
    client.execute(script, args).await.expect("script")
}

/// Waits up to `secs` for `script` to return something other than null/false; returns it.
async fn eventually(client: &Client, secs: u64, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let value = js(client, script, vec![]).await;
        if !(value.is_null() || value == false) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the element `id`.
async fn text(client: &Client, id: &str) -> String {
    client.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// Buy requests the server has answered, by its metrics.
async fn buy_requests(app: &TestApp) -> u64 {
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("seckill_requests_total{route=\"/api/v1/buy\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Opens the sale page for `user` and waits until it shows the products.
async fn open_page(client: &Client, app: &TestApp, activity: u64, user: &str) {
    client.goto(&format!("{}/sale/{activity}", app.base)).await.unwrap();
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("button.buy"))
        .await
        .expect("the page shows its products");
    let input = client.find(Locator::Id("user")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(user).await.unwrap();
}

/// Waits for the page's message to contain `needle`; returns it.
async fn message_with(client: &Client, needle: &str) -> String {
    let script = format!(
        "const t = document.getElementById('message').textContent; return t.includes({}) ? t : null;",
        json!(needle)
    );
    eventually(client, 10, &format!("a message with {needle:?}"), &script)
        .await
        .as_str()
        .unwrap()
        .to_string()
}

/// Redis's clock, the server's, in ms.
async fn redis_ms(app: &TestApp) -> i64 {
    let mut conn = app.redis.conn();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    secs * 1000 + micros / 1000
}

#[tokio::test]
async fn buyer_page_in_headless_chromium() {
    let driver = start_driver().await;
    let client = open_browser(&driver).await;
    let skew = format!(
        "(() => {{ const real = Date.now.bind(Date); const R = Date; const skewed = () => real() + {SKEW_MS};
           window.Date = class extends R {{ constructor(...a) {{ if (a.length === 0) super(skewed()); else super(...a); }}
             static now() {{ return skewed(); }} }}; }})();"
    );
    client
        .issue_cmd(Cdp {
            cmd: "Page.addScriptToEvaluateOnNewDocument",
            params: json!({ "source": skew }),
        })
        .await
        .expect("the skew is installed");

    let app = TestApp::builder().pipeline().serve().build().await;
    // Opens 3 to 4 s from now (a whole second: DATETIME(3) keeps it, the countdown shows 00:03).
    let start = (Utc::now() + chrono::Duration::seconds(4))
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let activity = catalog::create_activity(
        &app.db,
        &NewActivity {
            name: "11.11 flash sale".into(),
            start_at: start,
            end_at: start + chrono::Duration::hours(1),
            hot: Default::default(),
        },
    )
    .await
    .unwrap()
    .id;
    let named = |name: &str, price: &'static str, stock: u32| ProductSpec {
        name: name.into(),
        price,
        ..spec(stock, 1, 1)
    };
    let phone = app.add_product(activity, named("Phone", "4999.00", 5)).await.id;
    let gone = app.add_product(activity, named("Earbuds", "199.90", 0)).await.id;
    let last = app.add_product(activity, named("Watch", "1299.00", 1)).await.id;
    app.go_online(activity).await;
    let start_ms: i64 = app.activity_hash(activity).await["start_ms"].parse().unwrap();

    // ---- before the start: disabled, counting down ~3 s, whatever the page's clock says
    open_page(&client, &app, activity, "early").await;
    let page_clock = js(&client, "return Date.now();", vec![]).await.as_i64().unwrap();
    assert!(
        page_clock - redis_ms(&app).await > SKEW_MS - 5_000,
        "the page's clock is skewed"
    );
    let button = format!("buy-{phone}");
    let before = js(
        &client,
        "return [document.getElementById(arguments[0]).disabled, Number(document.getElementById('countdown').dataset.remainingMs), document.getElementById('countdown').textContent];",
        vec![json!(button)],
    )
    .await;
    assert_eq!(before[0], true, "disabled before the start: {before}");
    let remaining = before[1].as_f64().unwrap();
    assert!((1500.0..=4000.0).contains(&remaining), "countdown {before}");
    assert!(before[2].as_str().unwrap().starts_with("Opens in 00:0"), "{before}");
    let gone_text = text(&client, &format!("product-{gone}")).await;
    assert!(
        gone_text.contains("Sold out"),
        "a product without stock shows sold out: {gone_text}"
    );
    assert_eq!(
        js(
            &client,
            "return document.getElementById(arguments[0]).disabled;",
            vec![json!(format!("buy-{gone}"))]
        )
        .await,
        true
    );

    // ---- the button enables within 300 ms of the start by the server's clock (never before)
    let watch = r#"
        const done = arguments[arguments.length - 1];
        const b = document.getElementById(arguments[0]);
        const measure = (enabled) => {
            const sent = performance.now();
            fetch('/api/v1/time', {cache: 'no-store'}).then(r => r.json()).then(j =>
                done({server: j.server_time_ms, sent, received: performance.now(), enabled}));
        };
        if (!b.disabled) { measure(performance.now()); return; }
        new MutationObserver((_, o) => { if (!b.disabled) { o.disconnect(); measure(performance.now()); } })
            .observe(b, {attributes: true, attributeFilter: ['disabled']});
    "#;
    let seen = client.execute_async(watch, vec![json!(button)]).await.unwrap();
    let f = |k: &str| seen[k].as_f64().unwrap();
    // The server read its clock about halfway through the round trip.
    let enabled_at = f("server") - ((f("sent") + f("received")) / 2.0 - f("enabled"));
    let late = enabled_at - start_ms as f64;
    assert!(
        (-50.0..=300.0).contains(&late),
        "enabled {late:.0} ms after the start by server time: {seen}"
    );

    // ---- a double click sends one request; the winner sees the order, then "persisted"
    let requests = buy_requests(&app).await;
    let element = client.find(Locator::Id(&button)).await.unwrap();
    let double_click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: element.clone(),
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    client.perform_actions(double_click).await.unwrap();
    let won = message_with(&client, "You got it").await;
    let (status, result) = app
        .get(&format!("/api/v1/activities/{activity}/result?user_id=early"))
        .await;
    assert!(status.is_success(), "{result}");
    let order_no = result["orders"][0]["order_no"].as_str().unwrap().to_string();
    assert!(won.contains(&order_no), "{won} names {order_no}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(buy_requests(&app).await - requests, 1, "a double click is one request");
    assert_eq!(
        js(
            &client,
            "return document.getElementById(arguments[0]).disabled;",
            vec![json!(button)]
        )
        .await,
        true,
        "disabled after queued"
    );
    app.drain().await;
    let persisted = eventually(
        &client,
        15,
        "the order shown as persisted",
        "const o = document.querySelector('#result .order'); return o && o.dataset.status === 'pending' ? o.textContent : null;",
    )
    .await;
    let persisted = persisted.as_str().unwrap();
    assert!(
        persisted.contains(&order_no) && persisted.contains("persisted"),
        "{persisted}"
    );

    let png = client.screenshot().await.unwrap();
    let shot = driver.dir.join("buyer-page.png");
    std::fs::write(&shot, &png).unwrap();
    let saved = std::fs::read(&shot).unwrap();
    assert!(saved.len() > 1000, "a screenshot of {} bytes", saved.len());
    assert_eq!(&saved[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    if let Some(copy) = std::env::var_os("SECKILL_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, copy).unwrap();
    }

    // ---- ten rapid clicks send one request
    open_page(&client, &app, activity, "rapid").await;
    eventually(
        &client,
        5,
        "the button enabled",
        &format!("return !document.getElementById('{button}').disabled;"),
    )
    .await;
    let requests = buy_requests(&app).await;
    js(
        &client,
        "const b = document.getElementById(arguments[0]);
         for (let i = 0; i < 10; i++) { b.click(); b.dispatchEvent(new MouseEvent('click', {bubbles: true})); }",
        vec![json!(button)],
    )
    .await;
    message_with(&client, "You got it").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(buy_requests(&app).await - requests, 1, "ten clicks are one request");

    // ---- a second buy by the same buyer shows the limit
    open_page(&client, &app, activity, "early").await;
    eventually(
        &client,
        5,
        "the button enabled",
        &format!("return !document.getElementById('{button}').disabled;"),
    )
    .await;
    client.find(Locator::Id(&button)).await.unwrap().click().await.unwrap();
    message_with(&client, "reached the limit").await;

    // ---- a buy whose answer is lost: the page asks for the result and finds the order
    open_page(&client, &app, activity, "lost").await;
    eventually(
        &client,
        5,
        "the button enabled",
        &format!("return !document.getElementById('{button}').disabled;"),
    )
    .await;
    // The request reaches the server; its answer never reaches the page.
    js(
        &client,
        "const real = window.fetch;
         window.fetch = (url, options) => url === '/api/v1/buy'
             ? real(url, options).then(() => { throw new TypeError('connection lost'); })
             : real(url, options);",
        vec![],
    )
    .await;
    client.find(Locator::Id(&button)).await.unwrap().click().await.unwrap();
    message_with(&client, "checking whether your purchase went through").await;
    let found = message_with(&client, "You got it! Order").await;
    let (_, result) = app
        .get(&format!("/api/v1/activities/{activity}/result?user_id=lost"))
        .await;
    let lost_order = result["orders"][0]["order_no"].as_str().unwrap();
    assert!(found.contains(lost_order), "{found}: {result}");
    assert_eq!(
        js(
            &client,
            "return document.getElementById(arguments[0]).disabled;",
            vec![json!(button)]
        )
        .await,
        true,
        "no second try once the result shows the order"
    );

    // ---- a product sold out after the page loaded: the answer says so in plain words
    open_page(&client, &app, activity, "late").await;
    let last_button = format!("buy-{last}");
    eventually(
        &client,
        5,
        "the last unit offered",
        &format!("return !document.getElementById('{last_button}').disabled;"),
    )
    .await;
    let token = seckill::ops::token::register(&app.redis, &app.signer, activity, &["other".to_string()], 600, |_| {})
        .await
        .unwrap()
        .remove(0)
        .token;
    let (status, body) = app.buy(last, "other", 1, &token).await;
    assert!(status.is_success(), "{body}");
    let clicked = js(
        &client,
        "const b = document.getElementById(arguments[0]); if (b.disabled) return 'refreshed'; b.click(); return 'clicked';",
        vec![json!(last_button)],
    )
    .await;
    if clicked == "clicked" {
        message_with(&client, "Sold out").await;
    }
    eventually(
        &client,
        10,
        "the product shown sold out",
        &format!("return document.querySelector('#product-{last} .remaining').textContent === 'Sold out';"),
    )
    .await;

    // ---- the operator's degrade switch: the page says what the operator said
    open_page(&client, &app, activity, "calm").await;
    app.cli(&[
        "degrade",
        &activity.to_string(),
        "on",
        "--message",
        "Back in five minutes",
    ])
    .await
    .ok();
    // Every serve reads the switches every 400 ms.
    tokio::time::sleep(Duration::from_millis(900)).await;
    eventually(
        &client,
        5,
        "the button enabled",
        &format!("return !document.getElementById('{button}').disabled;"),
    )
    .await;
    client.find(Locator::Id(&button)).await.unwrap().click().await.unwrap();
    message_with(&client, "Back in five minutes").await;
    app.finish().await;

    // ---- auth.mode jwt: the JWT from the URL fragment, kept for the next visit
    jwt_buyer(&client).await;
    client.close().await.unwrap();
}

/// The HS256 secret of the JWT-mode server.
const JWT_SECRET: &str = "browser-jwt-test-secret-0123456789abcdef";

async fn jwt_buyer(client: &Client) {
    let app = TestApp::builder()
        .sale(vec![spec(5, 1, 1)])
        .tune(|c| {
            c.auth.mode = seckill::config::AuthMode::Jwt;
            c.auth.jwt_secret = JWT_SECRET.into();
        })
        .serve()
        .build()
        .await;
    let now = Utc::now().timestamp();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": now + 3600, "iat": now}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let page = format!("{}/sale/{}", app.base, app.activity);
    client.goto(&format!("{page}#jwt={jwt}")).await.unwrap();
    eventually(
        client,
        10,
        "signed in from the fragment",
        "return document.getElementById('identity').textContent === 'Signed in as alice';",
    )
    .await;
    let state = js(
        client,
        "return [location.hash, localStorage.getItem('seckill.jwt'), document.getElementById('who').hidden];",
        vec![],
    )
    .await;
    assert_eq!(
        state,
        json!(["", jwt, true]),
        "the JWT leaves the address bar for storage; no user id input"
    );

    // The next visit, without the fragment, buys as alice.
    client.goto(&page).await.unwrap();
    eventually(
        client,
        10,
        "signed in from storage",
        "return document.getElementById('identity').textContent === 'Signed in as alice';",
    )
    .await;
    let button = format!("buy-{}", app.product);
    eventually(
        client,
        5,
        "the button enabled",
        &format!("return !document.getElementById('{button}').disabled;"),
    )
    .await;
    client.find(Locator::Id(&button)).await.unwrap().click().await.unwrap();
    let won = message_with(client, "You got it").await;
    let (_, orders) = app
        .get(&format!("/api/v1/orders/{}", won.split(' ').nth(4).unwrap()))
        .await;
    assert_eq!(orders["user_id"], "alice", "{won}: {orders}");
    app.finish().await;
}
