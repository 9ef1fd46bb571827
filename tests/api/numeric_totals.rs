//! Buyers whose user id is a number below `redis.numeric_user_ids_below` keep their totals in
//! the product's totals array (src/totals.rs): a batch of them raises every total with one
//! BITFIELD and takes back the refused ones; every other buyer keeps a field of the bought
//! hash. Each batch here is decided in one call on one sale and one call per purchase on
//! another (as group_commit.rs does with named buyers), and everything must come out the same;
//! and release, reconcile and `hot` find each total where it lives.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use seckill::buy::{self, Purchase};
use seckill::ops::{lifecycle, order, reconcile};

use crate::group_commit::{one_product_cases, run, same_verdicts, state};
use crate::helpers::{spec, ProductSpec, TestApp};

/// Numbered buyers below this keep their totals in the array.
const BELOW: u64 = 1000;

fn numbered(products: Vec<ProductSpec>) -> crate::helpers::AppBuilder {
    TestApp::builder()
        .tune(|c| c.redis.numeric_user_ids_below = BELOW)
        .sale(products)
}

/// The letters of group_commit.rs's buyers as numbers, so the same cases run on the array.
fn number(user: &str) -> &'static str {
    match user {
        "a" => "1",
        "b" => "2",
        "c" => "3",
        "d" => "4",
        "e" => "5",
        "f" => "6",
        "g" => "7",
        "r" => "18",
        "s" => "19",
        "w" => "23",
        "x" => "24",
        "y" => "25",
        "z" => "26",
        other => panic!("no number for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_buyers_batches_match_one_by_one_and_keep_their_totals_in_the_array() {
    for (n, (product, before, batch, expected)) in one_product_cases().into_iter().enumerate() {
        let before: Vec<(&str, u32)> = before.iter().map(|(u, q)| (number(u), *q)).collect();
        let batch: Vec<(&str, u32)> = batch.iter().map(|(u, q)| (number(u), *q)).collect();
        let batched = numbered(vec![product.clone()]).build().await;
        let single = numbered(vec![product]).build().await;
        let a = run(&batched, 0, &before, &batch, true).await;
        let b = run(&single, 0, &before, &batch, false).await;
        assert_eq!(a, b, "case {n}: batched against one by one");
        assert_eq!(a.iter().map(|o| o.0).collect::<Vec<_>>(), expected, "case {n}");
        let (totals, counters) = state(&batched, 0).await;
        assert_eq!(
            (totals.clone(), counters),
            state(&single, 0).await,
            "case {n}: totals and counters"
        );
        let (hashed, array) = batched.totals_apart(batched.activity, batched.product).await;
        assert!(hashed.is_empty(), "case {n}: no numbered buyer in the hash: {hashed:?}");
        assert_eq!(array, totals, "case {n}");
        batched.finish().await;
        single.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_numbered_and_named_buyers_matches_one_by_one() {
    // Limit 3 a buyer, at most 3 an order.
    let plan: Vec<(usize, &str, u32)> = vec![
        (0, "1", 1),
        (0, "alice", 1),
        (0, "007", 1), // a leading zero: not a number here, kept in the hash
        (0, "1", 1),
        (0, "1000", 2), // the bound itself: in the hash
        (0, "999", 1),
        (0, "1", 1),
        (0, "1", 1), // over 1's limit
        (0, "2", 3),
        (0, "2", 1),   // over 2's limit
        (0, "bob", 0), // bad quantity
        (0, "3", 4),   // over the most an order may ask
        (0, "3", 1),
    ];
    let batched = numbered(vec![spec(30, 3, 3)]).build().await;
    let single = numbered(vec![spec(30, 3, 3)]).build().await;
    let codes = [
        "ok",
        "ok",
        "ok",
        "ok",
        "ok",
        "ok",
        "ok",
        "limit_exceeded",
        "ok",
        "limit_exceeded",
        "bad_request",
        "limit_exceeded",
        "ok",
    ];
    same_verdicts(&batched, &single, &plan, &codes).await;
    assert_eq!(state(&batched, 0).await, state(&single, 0).await);
    let held =
        |pairs: &[(&str, i64)]| -> HashMap<String, i64> { pairs.iter().map(|(u, n)| (u.to_string(), *n)).collect() };
    for sale in [&batched, &single] {
        let (hashed, array) = sale.totals_apart(sale.activity, sale.product).await;
        assert_eq!(array, held(&[("1", 3), ("999", 1), ("2", 3), ("3", 1)]));
        assert_eq!(hashed, held(&[("alice", 1), ("007", 1), ("1000", 2)]));
    }
    batched.finish().await;
    single.finish().await;

    // Numbered buyers only, one unit each (one BITFIELD raises them all): a blacklisted buyer
    // and one past the stock are taken back.
    let batched = numbered(vec![spec(3, 1, 1)]).build().await;
    let single = numbered(vec![spec(3, 1, 1)]).build().await;
    for sale in [&batched, &single] {
        seckill::ops::blacklist::add(&sale.db, &sale.redis, "4", "bot")
            .await
            .unwrap();
    }
    let plan = [("1", 1), ("4", 1), ("2", 1), ("3", 1), ("5", 1)];
    let a = run(&batched, 0, &[], &plan, true).await;
    assert_eq!(a, run(&single, 0, &[], &plan, false).await);
    assert_eq!(
        a.iter().map(|o| o.0).collect::<Vec<_>>(),
        ["ok", "blacklisted", "ok", "ok", "sold_out"]
    );
    for sale in [&batched, &single] {
        let (hashed, array) = sale.totals_apart(sale.activity, sale.product).await;
        assert!(hashed.is_empty(), "{hashed:?}");
        assert_eq!(array, held(&[("1", 1), ("2", 1), ("3", 1)]), "4 and 5 taken back");
    }
    batched.finish().await;
    single.finish().await;
}

/// A batch of one unit each whose first buyer is numbered tries the array with only a quick
/// test of each id (its length against the bound's, and not "0"), leaving the rest of the rule
/// to BITFIELD's parsing of `#<id>`: every id here passes the quick test yet must keep its
/// total in the hash, and the batch must come out as one by one, with nothing of the refused
/// BITFIELD left in the array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_only_look_numbered_keep_their_totals_in_the_hash() {
    let odd = [
        "007", "0", "-5", "+5", "1e3", "5.0", "0x1", "abc", "a", "-", "9a", "1000", "99x", "10000",
    ];
    for user in odd {
        let plan = [("11", 1), (user, 1), ("12", 1)];
        let batched = numbered(vec![spec(10, 1, 1)]).build().await;
        let single = numbered(vec![spec(10, 1, 1)]).build().await;
        let a = run(&batched, 0, &[], &plan, true).await;
        assert_eq!(a, run(&single, 0, &[], &plan, false).await, "{user:?}");
        assert!(a.iter().all(|o| o.0 == "ok"), "{user:?}: {a:?}");
        for sale in [&batched, &single] {
            let (hashed, array) = sale.totals_apart(sale.activity, sale.product).await;
            assert_eq!(
                array,
                HashMap::from([("11".to_string(), 1), ("12".to_string(), 1)]),
                "{user:?}"
            );
            assert_eq!(hashed, HashMap::from([(user.to_string(), 1)]), "{user:?}");
        }
        batched.finish().await;
        single.finish().await;
    }

    // Named buyers only, and a numbered buyer after a named first one.
    for plan in [
        [("alice", 1), ("bob", 1), ("7", 1)],
        [("alice", 1), ("bob", 1), ("carol", 1)],
    ] {
        let batched = numbered(vec![spec(10, 1, 1)]).build().await;
        let single = numbered(vec![spec(10, 1, 1)]).build().await;
        let a = run(&batched, 0, &[], &plan, true).await;
        assert_eq!(a, run(&single, 0, &[], &plan, false).await, "{plan:?}");
        assert!(a.iter().all(|o| o.0 == "ok"), "{plan:?}: {a:?}");
        let (hashed, array) = batched.totals_apart(batched.activity, batched.product).await;
        let numbered_ones = plan.iter().filter(|(u, _)| u.parse::<u32>().is_ok()).count();
        assert_eq!(
            (hashed.len(), array.len()),
            (3 - numbered_ones, numbered_ones),
            "{plan:?}"
        );
        batched.finish().await;
        single.finish().await;
    }
}

/// A product hash whose `max_per_order` is below 1 (the catalog never writes one; a hand edit
/// could) refuses every numbered buyer as over the limit and leaves no unit in the array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_per_order_below_one_refuses_numbered_buyers_and_takes_their_units_back() {
    let sale = numbered(vec![spec(10, 1, 1)]).build().await;
    let product_key = sale.redis.keys().product(sale.activity, sale.product);
    let _: () = sale.redis.conn().hset(product_key, "max_per_order", 0).await.unwrap();
    let verdicts = run(&sale, 0, &[], &[("1", 1), ("2", 1)], true).await;
    assert!(verdicts.iter().all(|o| o.0 == "limit_exceeded"), "{verdicts:?}");
    assert_eq!(sale.totals(sale.activity, sale.product).await, HashMap::new());
    sale.finish().await;
}

/// A batch of one product whose buyers are all numbered below the client's bound passes each
/// id as its offset (`#<id>`), and its entry names them `buyer_numbers`; when the product was
/// stamped with a lower bound (an older `hot`, another config), the script takes the `#` off
/// again and the ids past the product's bound keep their totals in the hash, as one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_ids_go_as_offsets_and_a_lower_stamped_bound_sends_the_rest_to_the_hash() {
    let last_entry = |sale: &TestApp| {
        let stream = sale.redis.keys().orders_stream(sale.activity);
        let redis = sale.redis.clone();
        async move {
            let all = seckill::reservation::read_all(&redis, &stream).await.unwrap();
            let names: Vec<String> = all.last().unwrap().fields.iter().map(|(k, _)| k.clone()).collect();
            (names, all.last().unwrap().clone())
        }
    };
    let batched = numbered(vec![spec(10, 1, 1)]).build().await;
    let single = numbered(vec![spec(10, 1, 1)]).build().await;
    let first = [("1", 1), ("2", 1)];
    assert_eq!(
        run(&batched, 0, &[], &first, true).await,
        run(&single, 0, &[], &first, false).await
    );
    let (names, entry) = last_entry(&batched).await;
    assert!(names.contains(&"buyer_numbers".to_string()), "{names:?}");
    assert_eq!(entry.get("buyer_numbers"), Some("#1 #2"));

    for sale in [&batched, &single] {
        let _: () = sale
            .redis
            .conn()
            .hset(sale.redis.keys().product(sale.activity, sale.product), "ids_below", 10)
            .await
            .unwrap();
    }
    let second = [("3", 1), ("50", 1), ("500", 1), ("1", 1)];
    let a = run(&batched, 0, &[], &second, true).await;
    assert_eq!(a, run(&single, 0, &[], &second, false).await);
    assert_eq!(
        a.iter().map(|o| o.0).collect::<Vec<_>>(),
        ["ok", "ok", "ok", "limit_exceeded"]
    );
    let (names, entry) = last_entry(&batched).await;
    assert!(names.contains(&"buyers".to_string()), "{names:?}");
    assert_eq!(entry.get("buyers"), Some("3 50 500"));
    let held =
        |pairs: &[(&str, i64)]| -> HashMap<String, i64> { pairs.iter().map(|(u, n)| (u.to_string(), *n)).collect() };
    for sale in [&batched, &single] {
        let (hashed, array) = sale.totals_apart(sale.activity, sale.product).await;
        assert_eq!(array, held(&[("1", 1), ("2", 1), ("3", 1)]));
        assert_eq!(hashed, held(&[("50", 1), ("500", 1)]));
    }
    assert_eq!(state(&batched, 0).await, state(&single, 0).await);
    batched.finish().await;
    single.finish().await;
}

/// `hot` keeps a product whose per-buyer limit is above what the array can count in its
/// bought hash, numbered buyers too, so the limit holds as set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_past_what_the_array_counts_keeps_numbered_buyers_in_the_hash() {
    let most = seckill::totals::TOTAL_MAX;
    let sale = numbered(vec![spec(10, most as u32 + 10, 10), spec(10, most as u32, 10)])
        .build()
        .await;
    let (high, at_most) = (sale.products[0], sale.products[1]);
    let stamped = |hash: HashMap<String, String>| hash.get("ids_below").cloned();
    let high_bound = stamped(sale.product_hash(sale.activity, high).await);
    assert!(
        matches!(high_bound.as_deref(), None | Some("0")),
        "no bound: {high_bound:?}"
    );
    assert_eq!(
        stamped(sale.product_hash(sale.activity, at_most).await).as_deref(),
        Some("1000"),
        "a limit the array can count keeps the bound"
    );
    let _: () = sale
        .redis
        .conn()
        .hset(sale.redis.keys().bought(sale.activity, high), "5", most)
        .await
        .unwrap();
    let bought = run(&sale, 0, &[], &[("5", 1), ("6", 1)], true).await;
    assert!(bought.iter().all(|o| o.0 == "ok"), "{bought:?}");
    let (hashed, array) = sale.totals_apart(sale.activity, high).await;
    assert_eq!(hashed.get("5"), Some(&(most as i64 + 1)), "past 65,535 in the hash");
    assert_eq!(hashed.get("6"), Some(&1));
    assert!(array.is_empty(), "{array:?}");
    sale.finish().await;
}

/// A product hash stamped with a bound whatever its limit (by hand, or by a `hot` from before
/// the rule above) still never wraps a total in the array: the purchase is refused instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_past_what_the_array_holds_is_refused_as_over_the_limit() {
    let sale = numbered(vec![spec(10, 100_000, 10)]).build().await;
    let keys = sale.redis.keys();
    let mut conn = sale.redis.conn();
    let most = seckill::totals::TOTAL_MAX;
    let _: () = conn
        .hset(keys.product(sale.activity, sale.product), "ids_below", BELOW)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("BITFIELD")
        .arg(keys.totals(sale.activity, sale.product))
        .arg("SET")
        .arg(seckill::totals::TOTAL_TYPE)
        .arg("#5")
        .arg(most)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = conn
        .hset(keys.bought(sale.activity, sale.product), "alice", most)
        .await
        .unwrap();
    // A usual batch (one BITFIELD raising every total), then an unusual one (the general
    // loop), then a named buyer at the same total, whose hash holds more.
    let one = run(&sale, 0, &[], &[("5", 1), ("6", 1)], true).await;
    let two = run(&sale, 0, &[], &[("5", 2)], true).await;
    let named = run(&sale, 0, &[], &[("alice", 1)], true).await;
    let codes = |o: &crate::group_commit::Outcomes| o.iter().map(|o| o.0).collect::<Vec<&str>>();
    assert_eq!(codes(&one), ["limit_exceeded", "ok"]);
    assert_eq!(codes(&two), ["limit_exceeded"]);
    assert_eq!(codes(&named), ["ok"]);
    let (hashed, array) = sale.totals_apart(sale.activity, sale.product).await;
    assert_eq!(array.get("5"), Some(&(most as i64)), "unchanged");
    assert_eq!(array.get("6"), Some(&1));
    assert_eq!(hashed.get("alice"), Some(&(most as i64 + 1)));
    sale.finish().await;
}

/// `hot` stamps the bound on each product it preheats, so every later process reads the one
/// its product was preheated with; and a release, a repair and a `hot` refilling the totals
/// from MySQL all find a numbered buyer's total in the array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_reconcile_and_hot_find_the_numbered_buyers_totals() {
    let sale = TestApp::builder()
        .pipeline()
        .tune(|c| c.redis.numeric_user_ids_below = BELOW)
        .sale(vec![spec(10, 2, 2)])
        .serve()
        .build()
        .await;
    let (activity, product) = (sale.activity, sale.product);
    let product_hash = sale.product_hash(activity, product).await;
    assert_eq!(product_hash.get("ids_below").map(String::as_str), Some("1000"));
    let orders = sale
        .reserve(["5".to_string(), "6".to_string(), "carol".to_string()], 2)
        .await;
    sale.drain().await;
    let expect =
        |pairs: &[(&str, i64)]| -> HashMap<String, i64> { pairs.iter().map(|(u, n)| (u.to_string(), *n)).collect() };
    assert_eq!(
        sale.totals_apart(activity, product).await,
        (expect(&[("carol", 2)]), expect(&[("5", 2), ("6", 2)]))
    );

    // "Did I win?" of a numbered buyer (its total read from the array).
    let (_, mine) = sale
        .get(&format!("/api/v1/activities/{activity}/result?user_id=6"))
        .await;
    assert_eq!(mine["reserved"], true, "{mine}");
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1), "{mine}");

    // A cancelled order's units go back on sale, and its buyer's total down, in the array.
    order::cancel(&sale.db, &sale.redis, &orders[0]).await.unwrap();
    assert_eq!(
        sale.totals_apart(activity, product).await,
        (expect(&[("carol", 2)]), expect(&[("6", 2)]))
    );
    assert_eq!(sale.counters(product).await.0, 6, "two units back on sale");
    let bought = buy::reserve(
        &sale.redis,
        activity,
        &[Purchase {
            product_id: product,
            user_id: "5".into(),
            quantity: 2,
            token: String::new(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(bought[0].outcome.code(), "ok", "5 may buy again");
    sale.drain().await;

    // A total in the array that MySQL's orders do not back is found and mended.
    let mut conn = sale.redis.conn();
    let _: redis::Value = redis::cmd("BITFIELD")
        .arg(sale.redis.keys().totals(activity, product))
        .arg("SET")
        .arg(seckill::totals::TOTAL_TYPE)
        .arg("#7")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let group = sale.config.consumer.group.clone();
    let report = reconcile::reconcile(&sale.db, &sale.redis, &group, activity, Duration::from_secs(60), true)
        .await
        .unwrap();
    assert!(
        report
            .repairs
            .iter()
            .any(|r| r.contains("user 7") && r.contains("1 -> 0")),
        "{:?}",
        report.repairs
    );
    assert!(report.consistent, "{report:?}");
    assert_eq!(
        sale.totals_apart(activity, product).await,
        (expect(&[("carol", 2)]), expect(&[("5", 2), ("6", 2)]))
    );

    // A preheat empties the array and refills it from MySQL's orders.
    lifecycle::stop(&sale.db, &sale.redis, activity, false).await.unwrap();
    sale.hot(activity).await;
    assert_eq!(
        sale.totals_apart(activity, product).await,
        (expect(&[("carol", 2)]), expect(&[("5", 2), ("6", 2)]))
    );
    sale.finish().await;
}
