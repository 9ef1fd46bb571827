//! The HTTP side of `seckill serve`: the listeners, served either by tasks of the calling
//! runtime (`http.threads: 0`, the default) or by OS threads of their own, one per listener,
//! each running a single-threaded Tokio runtime (`http.threads: N`).
//!
//! On the calling runtime a buy goes from its socket to the group-commit batcher, to Redis
//! and back without a hand-off between threads: the batcher, the Redis connection and the
//! connections are tasks of the same workers. With threads of their own, the handlers still
//! reach Redis through the shared state (the batchers and the Redis connection run on the
//! runtime that created the `AppState`), so every batch wakes a thread each way; on a small
//! machine shared with the load and with Redis those wake-ups cost more than they spare
//! (README, Benchmarks, has the figures).
//!
//! Each listener's accept loop serves its connections with hyper's HTTP/1 server, within
//! the process's [`ConnectionLimits`]: the connection cap, and a header-read timeout kept by
//! the loop's `Watchdog` (axum's `serve` has none, so silent and slow clients were kept
//! forever).

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, oneshot, watch};
use tower::{Service, ServiceExt as _};

use super::connections::{ConnectionLimits, CutReason, JsonRefusals};
use crate::error::{Error, Result};

/// Pending connections the kernel holds per listener before refusing more.
const BACKLOG: i32 = 1024;

/// `count` listeners on `addr` (at least one; a port of 0 picks one free port for all of
/// them). With more than one, they share the port through `SO_REUSEPORT` and the kernel
/// spreads new connections over them.
pub fn bind(addr: &str, count: usize) -> Result<Vec<StdListener>> {
    let count = count.max(1);
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

/// Serves `service` (the API: `api::Api`) on every listener, with `own_threads` each on a
/// thread of its own, without as tasks of the calling runtime, within `limits` (connection
/// cap, header-read timeout), until `shutdown` completes (or this future is dropped); then
/// every listener stops accepting and finishes its in-flight requests, and this returns once
/// all have. A thread that fails stops the others; its error is returned. With `with_peer`,
/// every request carries its peer's address as `ConnectInfo<SocketAddr>` (without, requests
/// get no extension: it would cost each an allocation).
pub async fn serve<S>(
    listeners: Vec<StdListener>,
    service: S,
    limits: ConnectionLimits,
    with_peer: bool,
    own_threads: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    // Dropping the sender (this future dropped) stops the listeners as well as sending does.
    let (stop, stopped) = watch::channel(false);
    // Each listener's thread or task reports here when it ends.
    let (done_tx, mut done) = mpsc::unbounded_channel::<Result<()>>();
    let mut running = 0;
    for (n, listener) in listeners.into_iter().enumerate() {
        let (service, stopped, done_tx, limits) = (service.clone(), stopped.clone(), done_tx.clone(), limits.clone());
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let served = serve_listener(listener, addr.clone(), service, limits, with_peer, stopped);
        if !own_threads {
            // A task of the calling runtime, beside group commit and the Redis connection;
            // not aborted when this future is dropped, so it stops the way a thread does.
            tokio::spawn(async move {
                let _ = done_tx.send(served.await);
            });
            running += 1;
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name(format!("seckill-http-{n}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| Error::Io { path: addr, source })
                    .and_then(|runtime| runtime.block_on(served));
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

/// Serves `listener`, at `addr` (see [`accept_loop`]), on the runtime that polls the
/// returned future: the thread's own, or the calling one.
async fn serve_listener<S>(
    listener: StdListener,
    addr: String,
    service: S,
    limits: ConnectionLimits,
    with_peer: bool,
    stopped: watch::Receiver<bool>,
) -> Result<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| Error::Io { path: addr, source })?;
    accept_loop(listener, service, limits, with_peer, stopped).await;
    Ok(())
}

/// Accepts connections on `listener` and serves each on a task of its own until `stopped`
/// turns true (or its sender is gone); then stops accepting, lets every connection finish
/// its request in flight, and returns once all are closed. Meanwhile a watchdog cuts the
/// connections whose request head is late (see [`HeadWatch`]).
async fn accept_loop<S>(
    listener: tokio::net::TcpListener,
    service: S,
    limits: ConnectionLimits,
    with_peer: bool,
    mut stopped: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut http = http1::Builder::new();
    // Head and body written in one buffer, as axum's server did: for answers this small,
    // cheaper than vectored writes. No timer: the watchdog below does hyper's header-read
    // timeout (without a timer hyper's own is off).
    http.writev(false);
    let http = Arc::new(http);
    // Every connection task holds a clone; the channel closes once the last one is done.
    let (open_tx, mut all_closed) = mpsc::channel::<()>(1);
    let mut watchdog = Watchdog::new(limits.clone());
    let mut ticks = tokio::time::interval(watchdog.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = ticks.tick() => {
                watchdog.check();
                continue;
            }
            () = stop_requested(&mut stopped) => break,
        };
        let Some(open) = limits.try_open() else {
            limits.refuse(stream);
            continue;
        };
        let (head, signals) = watchdog.watch();
        let peer = with_peer.then_some(peer);
        let connection = serve_connection(stream, peer, service.clone(), http.clone(), head, signals);
        let open_tx = open_tx.clone();
        tokio::spawn(async move {
            connection.await;
            drop((open, open_tx));
        });
    }
    drop((listener, open_tx));
    // Stopping lets requests in flight finish, but a head that never completes must not
    // hold the shutdown: the watchdog keeps cutting until the last connection is closed.
    watchdog.stop_all();
    loop {
        tokio::select! {
            _ = all_closed.recv() => return,
            _ = ticks.tick() => watchdog.check(),
        }
    }
}

/// Serves one connection until it closes: at once on [`Signal::Cut`] (the head was late) or
/// when the watchdog is gone, after the request in flight (if any) on [`Signal::Stop`].
/// `peer`, when given, goes with every request as `ConnectInfo`.
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    peer: Option<SocketAddr>,
    service: S,
    http: Arc<http1::Builder>,
    head: Arc<HeadWatch>,
    mut signals: oneshot::Receiver<Signal>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        // hyper calls the service once the head is complete.
        head.serving();
        let head = head.clone();
        let mut request = request.map(Body::new);
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let answer = service.clone().oneshot(request);
        async move {
            let response = answer.await;
            head.waiting();
            response
        }
    });
    let connection = http.serve_connection(JsonRefusals::new(TokioIo::new(stream)), service);
    tokio::pin!(connection);
    // Polled on every wake-up of the connection: a oneshot is cheap to poll.
    let served = loop {
        tokio::select! {
            biased;
            served = connection.as_mut() => break served,
            signal = &mut signals => match signal {
                Ok(Signal::Stop(next)) => {
                    signals = next;
                    connection.as_mut().graceful_shutdown();
                }
                Ok(Signal::Cut) | Err(_) => return,
            },
        }
    };
    if let Err(e) = served {
        tracing::trace!(error = %e, "connection closed");
    }
}

/// Tick value of a [`HeadWatch`] whose connection is serving a request.
const SERVING: u32 = u32::MAX;

/// Since when one connection has been waiting for a request head, in ticks of its thread's
/// [`Watchdog`]: from its opening, then from each answer on; [`SERVING`] from the moment
/// hyper has a complete head until the answer is ready.
struct HeadWatch {
    now: Arc<AtomicU32>,
    waiting_since: AtomicU32,
}

impl HeadWatch {
    fn serving(&self) {
        self.waiting_since.store(SERVING, Ordering::Relaxed);
    }

    fn waiting(&self) {
        self.waiting_since
            .store(self.now.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// What the watchdog tells a connection's task.
enum Signal {
    /// Finish the request in flight, then close; later signals come on the receiver given.
    Stop(oneshot::Receiver<Signal>),
    /// Close now.
    Cut,
}

/// One watched connection: its head watch and the way to signal its task (closed once the
/// task is done).
struct Watched {
    head: Arc<HeadWatch>,
    signal: Option<oneshot::Sender<Signal>>,
}

/// The header-read timeout of one HTTP thread's connections, on a coarse clock: every tick
/// (a tenth of the timeout, within 10..=250 ms) it cuts the connections that have waited
/// longer than the timeout for a request head, so a head is cut between the timeout and a
/// tick after it. hyper's own header-read timeout arms, allocates and drops a timer for
/// every request, a cost that showed in every answer (README, Benchmarks); this costs two
/// stores per request and one pass over the connections per tick.
struct Watchdog {
    limits: ConnectionLimits,
    tick: Duration,
    patience: u32,
    now: Arc<AtomicU32>,
    watched: Vec<Watched>,
}

impl Watchdog {
    fn new(limits: ConnectionLimits) -> Watchdog {
        let timeout = limits.header_read_timeout();
        let tick = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
        // A connection's wait starts somewhere within a tick: one tick more, so it is never
        // cut before the timeout.
        let patience = timeout.as_nanos().div_ceil(tick.as_nanos()) + 1;
        Watchdog {
            limits,
            tick,
            patience: u32::try_from(patience).unwrap_or(u32::MAX - 1),
            now: Arc::new(AtomicU32::new(0)),
            watched: Vec::new(),
        }
    }

    /// A new connection to watch: its head watch (waiting from now) and its signals.
    fn watch(&mut self) -> (Arc<HeadWatch>, oneshot::Receiver<Signal>) {
        let head = Arc::new(HeadWatch {
            now: self.now.clone(),
            waiting_since: AtomicU32::new(self.now.load(Ordering::Relaxed)),
        });
        let (signal, signals) = oneshot::channel();
        self.watched.push(Watched {
            head: head.clone(),
            signal: Some(signal),
        });
        (head, signals)
    }

    /// One tick: cuts the late heads, forgets closed connections.
    fn check(&mut self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let (patience, limits) = (self.patience, &self.limits);
        self.watched.retain_mut(|w| {
            let Some(signal) = w.signal.take_if(|signal| !signal.is_closed()) else {
                return false;
            };
            let since = w.head.waiting_since.load(Ordering::Relaxed);
            if since != SERVING && now.wrapping_sub(since) >= patience {
                // The connection task, polling the receiver, drops the connection.
                let _ = signal.send(Signal::Cut);
                limits.cut(CutReason::HeaderTimeout);
                return false;
            }
            w.signal = Some(signal);
            true
        });
    }

    /// Asks every connection to stop after its request in flight.
    fn stop_all(&mut self) {
        for w in &mut self.watched {
            if let Some(signal) = w.signal.take() {
                let (next, signals) = oneshot::channel();
                if signal.send(Signal::Stop(signals)).is_ok() {
                    w.signal = Some(next);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::Counter;

    fn watchdog(timeout_ms: u64) -> Watchdog {
        let limits = ConnectionLimits::new(
            10,
            Duration::from_millis(timeout_ms),
            Counter::noop(),
            [Counter::noop(), Counter::noop()],
        );
        Watchdog::new(limits)
    }

    #[test]
    fn late_heads_are_cut_after_the_timeout_and_never_before() {
        // 100 ms: ticks of 10 ms, so a head is cut on the 11th tick after its wait began.
        let mut dog = watchdog(100);
        assert_eq!((dog.tick, dog.patience), (Duration::from_millis(10), 11));
        let (waiting, mut waiting_signals) = dog.watch();
        let (serving, mut serving_signals) = dog.watch();
        serving.serving();
        for _ in 0..10 {
            dog.check();
        }
        assert!(waiting_signals.try_recv().is_err(), "cut before the timeout");
        dog.check();
        assert!(matches!(waiting_signals.try_recv(), Ok(Signal::Cut)));
        // A connection serving a request is not timed; its next wait starts from its answer.
        for _ in 0..20 {
            dog.check();
        }
        assert!(serving_signals.try_recv().is_err());
        serving.waiting();
        for _ in 0..11 {
            dog.check();
        }
        assert!(matches!(serving_signals.try_recv(), Ok(Signal::Cut)));
        drop(waiting);
        assert!(dog.watched.is_empty(), "cut connections are forgotten");
    }

    #[test]
    fn stop_reaches_every_connection_and_a_closed_one_is_forgotten() {
        let mut dog = watchdog(10_000);
        let (_open, mut signals) = dog.watch();
        let (_gone, gone_signals) = dog.watch();
        drop(gone_signals);
        dog.check();
        assert_eq!(dog.watched.len(), 1);
        dog.stop_all();
        let Ok(Signal::Stop(mut next)) = signals.try_recv() else {
            panic!("no stop signal");
        };
        // A stopping connection can still be cut.
        for _ in 0..dog.patience {
            dog.check();
        }
        assert!(matches!(next.try_recv(), Ok(Signal::Cut)));
    }
}
