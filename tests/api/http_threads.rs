//! `seckill serve` with several HTTP threads: listeners sharing one port, and the promises
//! holding when buyers arrive on all of them at once.

use std::collections::HashSet;
use std::sync::Arc;

use seckill::server;

use crate::buy_support::{spec, Options, Sale};

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
async fn three_http_threads_sell_exactly_the_stock() {
    let sale = Arc::new(
        Sale::start(Options {
            products: vec![spec(50, 1, 1)],
            tune: |config| config.http.threads = 3,
            ..Options::default()
        })
        .await,
    );
    // 600 requests at once open many connections, which the kernel spreads over the three
    // listeners.
    let users: Vec<String> = (0..600).map(|i| format!("t{i}")).collect();
    let product = sale.product();
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
