//! One payment window: `payment.timeout` is what `order expire` (the shipped expire timer)
//! uses when `--older-than` is not given.

use crate::helpers::{phone, users, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_expire_defaults_to_the_payment_timeout() {
    let app = TestApp::builder()
        .pipeline()
        .tune(|c| c.payment.timeout = std::time::Duration::from_secs(1))
        .sale(vec![phone(10, 1)])
        .build()
        .await;
    app.reserve(users("p", 2), 1).await;
    app.drain().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The app's config file says `payment.timeout: 1s`; no --older-than given.
    let (code, out) = app.run(&["order", "expire", "--json"]);
    assert_eq!(code, 0, "{out}");
    let expired: i64 = app
        .scalar("SELECT COUNT(*) FROM orders WHERE activity_id = ? AND status = 'expired'")
        .await;
    assert_eq!(expired, 2, "{out}");
}
