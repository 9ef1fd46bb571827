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
//!
//! Each thread accepts its own connections and serves them with hyper's HTTP/1 server,
//! within the process's [`ConnectionLimits`]: a header-read timeout (which axum's `serve`
//! cannot set, so silent and slow clients were kept forever) and the connection cap.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, oneshot, watch};
use tower::{Service, ServiceExt as _};

use super::connections::{ConnectionLimits, CutReason, JsonRefusals};
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

/// Serves `service` (the API: [`super::hot_path::Api`]) on every listener, each on a thread
/// of its own, within `limits` (connection cap, header-read timeout), until `shutdown`
/// completes (or this future is dropped); then every thread stops accepting and finishes
/// its in-flight requests, and this returns once all have. A thread that fails stops the
/// others; its error is returned.
pub async fn serve<S>(
    listeners: Vec<StdListener>,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    // Dropping the sender (this future dropped) stops the threads as well as sending does.
    let (stop, stopped) = watch::channel(false);
    let (done_tx, mut done) = mpsc::unbounded_channel::<Result<()>>();
    let mut running = 0;
    for (n, listener) in listeners.into_iter().enumerate() {
        let (service, stopped, done_tx, limits) = (service.clone(), stopped.clone(), done_tx.clone(), limits.clone());
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
                            accept_loop(listener, service, limits, stopped).await;
                            Ok(())
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

/// Accepts connections on `listener` and serves each on a task of its own until `stopped`
/// turns true (or its sender is gone); then stops accepting, lets every connection finish
/// its request in flight, and returns once all are closed.
async fn accept_loop<S>(
    listener: tokio::net::TcpListener,
    service: S,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut http = http1::Builder::new();
    // Without a timer hyper silently ignores the header-read timeout. Head and body written
    // in one buffer, as axum's server did: for answers this small, cheaper than vectored.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .writev(false);
    let http = Arc::new(http);
    // Every connection task holds a clone; the channel closes once the last one is done.
    let (open_tx, mut all_closed) = mpsc::channel::<()>(1);
    // One stop signal per connection, all dropped (which signals them) on stop: a closed
    // oneshot is cheap to poll, and the connection task polls it on every wake-up. Senders
    // of finished connections are pruned whenever the list has doubled.
    let mut stops: Vec<oneshot::Sender<()>> = Vec::new();
    let mut prune_at = 64;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => break,
        };
        let Some(open) = limits.try_open() else {
            limits.refuse(stream);
            continue;
        };
        if stops.len() >= prune_at {
            stops.retain(|stop| !stop.is_closed());
            prune_at = (stops.len() * 2).max(64);
        }
        let (stop, stop_requested) = oneshot::channel();
        stops.push(stop);
        let connection = serve_connection(stream, service.clone(), http.clone(), limits.clone(), stop_requested);
        let open_tx = open_tx.clone();
        tokio::spawn(async move {
            connection.await;
            drop((open, open_tx));
        });
    }
    drop((listener, open_tx, stops));
    let _ = all_closed.recv().await;
}

/// Serves one connection until it closes; once `stop_requested` completes (its sender
/// dropped), finishes the request in flight (if any) and closes.
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    service: S,
    http: Arc<http1::Builder>,
    limits: ConnectionLimits,
    stop_requested: oneshot::Receiver<()>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        service.clone().oneshot(request.map(Body::new))
    });
    let connection = http.serve_connection(JsonRefusals::new(TokioIo::new(stream)), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        biased;
        served = connection.as_mut() => served,
        _ = stop_requested => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        if e.is_timeout() {
            limits.cut(CutReason::HeaderTimeout);
        }
        tracing::trace!(error = %e, "connection closed");
    }
}

/// Completes once `stopped` turns true or its sender is gone.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// After a failed accept: a connection the client gave up on is skipped; anything else
/// (out of file descriptors, mostly) is logged and waited out briefly, since retrying at
/// once would spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
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
