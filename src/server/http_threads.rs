//! The HTTP side of `seckill serve`: one OS thread per listener, each running a
//! single-threaded Tokio runtime.
//!
//! Why not the process's multi-threaded runtime: on a small machine shared with the load and
//! with Redis, its workers waking and stealing from one another cost more than the HTTP work
//! itself. Measured on 2 cores (README → Benchmarks): one HTTP thread beside the rest of the
//! process answers sold-out requests about 15 % faster and buys about 8 % faster than two
//! work-stealing workers doing both. The handlers still reach Redis through the shared state:
//! the group-commit batchers and the Redis connection run on the runtime that created the
//! [`AppState`](super::AppState), so a request waits for its verdict there.

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};

use std::convert::Infallible;
use std::future::Future;

use axum::extract::Request;
use axum::response::Response;
use axum::ServiceExt as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};
use tower::Service;

use crate::error::{Error, Result};

/// Pending connections the kernel holds per listener before refusing more.
const BACKLOG: i32 = 1024;

/// `count` listeners on `addr` (a port of 0 picks one free port for all of them). With more
/// than one, they share the port through `SO_REUSEPORT` and the kernel spreads new
/// connections over them.
pub fn bind(addr: &str, count: usize) -> Result<Vec<StdListener>> {
    let io = |source| Error::Io {
        path: addr.to_string(),
        source,
    };
    // Like std's bind: the first resolved address that can be bound (localhost may resolve
    // to ::1 on a machine without IPv6, then to 127.0.0.1).
    let mut last_error = None;
    let mut bound = None;
    for candidate in addr.to_socket_addrs().map_err(io)? {
        match listen(candidate, false) {
            Ok(alone) if count <= 1 => return Ok(vec![alone]),
            Ok(probe) => {
                bound = Some(candidate);
                // Bound once alone (and closed) before the port is shared: another server
                // already on it, with SO_REUSEPORT too, would otherwise get half the load.
                drop(probe);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(first) = bound else {
        return Err(match last_error {
            Some(e) => io(e),
            None => Error::Config(format!("http.bind: {addr} resolves to no address")),
        });
    };
    let mut listeners = Vec::with_capacity(count);
    let mut at = first;
    for _ in 0..count {
        let listener = listen(at, true).map_err(io)?;
        at = listener.local_addr().map_err(io)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr, share_port: bool) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if share_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves `service` (the API: [`super::hot_path::Api`]) on every listener, each on a thread of its own, until `shutdown`
/// completes (or this future is dropped); then every thread stops accepting and finishes
/// its in-flight requests, and this returns once all have. A thread that fails stops the
/// others; its error is returned.
pub async fn serve<S>(listeners: Vec<StdListener>, service: S, shutdown: impl Future<Output = ()>) -> Result<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    // Dropping the sender (this future dropped) stops the threads as well as sending does.
    let (stop, stopped) = watch::channel(false);
    let (done_tx, mut done) = mpsc::unbounded_channel::<Result<()>>();
    let mut running = 0;
    for (n, listener) in listeners.into_iter().enumerate() {
        let (service, mut stopped, done_tx) = (service.clone(), stopped.clone(), done_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("seckill-http-{n}"))
            .spawn(move || {
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let io = |source| Error::Io {
                    path: addr.clone(),
                    source,
                };
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(io)
                    .and_then(|runtime| {
                        runtime.block_on(async {
                            let listener = tokio::net::TcpListener::from_std(listener).map_err(io)?;
                            axum::serve(listener, service.into_make_service())
                                .with_graceful_shutdown(async move {
                                    let _ = stopped.wait_for(|stop| *stop).await;
                                })
                                .await
                                .map_err(io)
                        })
                    });
                let _ = done_tx.send(served);
            });
        match spawned {
            Ok(_) => running += 1,
            Err(source) => {
                let _ = stop.send(true);
                let _ = drain(&mut done, running).await;
                return Err(Error::Io {
                    path: "spawning an HTTP thread".into(),
                    source,
                });
            }
        }
    }
    drop((stopped, done_tx));
    let mut first_failure = tokio::select! {
        () = shutdown => None,
        ended = done.recv() => {
            running -= 1;
            Some(ended.unwrap_or(Ok(())))
        }
    };
    let _ = stop.send(true);
    let rest = drain(&mut done, running).await;
    match first_failure.take() {
        Some(Err(e)) => Err(e),
        _ => rest,
    }
}

/// Waits for `running` threads to report (a thread that panicked reports nothing; its
/// sender is dropped with it); the first error among them.
async fn drain(done: &mut mpsc::UnboundedReceiver<Result<()>>, running: usize) -> Result<()> {
    let mut outcome = Ok(());
    for _ in 0..running {
        match done.recv().await {
            Some(Err(e)) if outcome.is_ok() => outcome = Err(e),
            Some(_) => {}
            None => break,
        }
    }
    outcome
}
