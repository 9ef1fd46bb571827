//! The signal that ends a long-running command (`serve`, `consumer`, `scheduler`): ctrl-c, or SIGTERM
//! (what `systemctl stop` and `kill` send).

/// Completes on ctrl-c or SIGTERM. Where SIGTERM cannot be watched, ctrl-c alone ends it.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing the work in flight");
}
