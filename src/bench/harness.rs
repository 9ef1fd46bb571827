//! What a bench run starts in-process: the HTTP server (`--spawn`) and consumers
//! (`--consumers N`), each stopped through a shutdown future when the run is over.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::consumer::{self, ConsumerOptions};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::redis_client::RedisClient;
use crate::server::{self, AppState};

/// How long stopping the server or a consumer may take before the run goes on without it.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The configuration of a spawned server: the given one with the rate limits off and
/// admission wide enough for every connection. A bench herd comes from one address and a
/// few users per connection; with the production limits it would measure the 429 path.
pub fn relaxed(config: &Config, concurrency: usize) -> Config {
    let mut c = config.clone();
    c.funnel.global_rps = 0;
    c.funnel.per_user_rps = 0;
    c.funnel.max_in_flight = c.funnel.max_in_flight.max(concurrency * 2);
    c
}

/// A server started on 127.0.0.1:0.
pub struct SpawnedServer {
    /// `127.0.0.1:PORT`.
    pub authority: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl SpawnedServer {
    /// Starts serving `config` (see [`relaxed`]).
    pub async fn start(config: Config, redis: RedisClient, db: Db) -> Result<SpawnedServer> {
        let listeners = server::bind("127.0.0.1:0", config.http.threads)?;
        let authority = listeners[0]
            .local_addr()
            .map_err(|source| Error::Io {
                path: "127.0.0.1:0".into(),
                source,
            })?
            .to_string();
        let (stop, mut stopped) = watch::channel(false);
        let state = AppState::new(config, redis, db);
        let task = tokio::spawn(server::run(listeners, state, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Ok(SpawnedServer { authority, stop, task })
    }

    /// Stops accepting, lets in-flight requests finish, and waits (bounded) for that.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(STOP_WAIT, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "bench server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "bench server task failed"),
            Err(_) => tracing::warn!("bench server did not stop in time"),
        }
    }
}

/// Consumers running in this process.
pub struct Consumers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<consumer::ConsumerReport>>>,
}

impl Consumers {
    /// Starts `n` consumers named `bench-PID-I`. Like any consumer of the group they also
    /// persist other activities' reservations under the same key prefix (harmlessly:
    /// persisting is idempotent).
    pub fn start(config: &Config, n: usize) -> Consumers {
        let (stop, _) = watch::channel(false);
        let tasks = (0..n)
            .map(|i| {
                let config = config.clone();
                let opts = ConsumerOptions {
                    name: format!("bench-{}-{i}", std::process::id()),
                    batch: config.consumer.batch,
                    once: false,
                };
                let mut stopped = stop.subscribe();
                tokio::spawn(async move {
                    consumer::run(&config, opts, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
                })
            })
            .collect();
        Consumers { stop, tasks }
    }

    /// Asks every consumer to stop after its batch in hand and waits (bounded) for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            match tokio::time::timeout(STOP_WAIT, task).await {
                Ok(Ok(Ok(report))) => tracing::debug!(?report, "bench consumer stopped"),
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "bench consumer failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "bench consumer task failed"),
                Err(_) => tracing::warn!("bench consumer did not stop in time"),
            }
        }
    }
}
