//! One multiplexed, self-reconnecting connection to `[redis]` (a server, a Sentinel-watched
//! master or a Cluster), with the configured key
//! prefix and a deadline on every command (a command that misses it counts as Redis
//! being unavailable, never as an answer).

use std::sync::Arc;
use std::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo};

use crate::config::{RedisConfig, RedisTarget};
use crate::metrics::Metrics;

/// Why Redis could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Why the connection could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("redis: a node url: {0}")]
    Url(redis::RedisError),
    #[error("redis.ca_file: cannot read {}: {source}", path.display())]
    Ca {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("redis: {0}")]
    Client(redis::RedisError),
}

/// A handle on the shared Redis; cheap to clone.
#[derive(Clone)]
pub(crate) struct Redis {
    backend: Arc<Backend>,
    prefix: Arc<str>,
    timeout: std::time::Duration,
    metrics: Arc<Metrics>,
}

/// How commands reach the data: each variant reconnects by itself.
enum Backend {
    /// One server: redis-rs reconnects to it.
    Single {
        conn: ConnectionManager,
        client: redis::Client,
    },
    /// A Cluster: the connection follows slot moves and failovers once open. `nodes`
    /// reach the seeds one by one (for pub/sub, which a Cluster broadcasts).
    Cluster {
        client: redis::cluster::ClusterClient,
        conn: Reopening<redis::cluster_async::ClusterConnection>,
        nodes: Vec<redis::Client>,
    },
    /// A Sentinel-watched master: asked for again whenever its connection breaks, so a
    /// failover is followed.
    Sentinel {
        client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
        config: redis::AsyncConnectionConfig,
        conn: Reopening<redis::aio::MultiplexedConnection>,
    },
}

/// A connection opened on first use and again after it was dropped. Opening happens on
/// the runtime that serves requests, never at start-up.
struct Reopening<C> {
    current: std::sync::Mutex<Option<C>>,
    opening: tokio::sync::Mutex<()>,
}

impl<C: Clone> Reopening<C> {
    fn new() -> Self {
        Reopening {
            current: std::sync::Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    fn get_now(&self) -> Option<C> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn get<F>(&self, open: F) -> redis::RedisResult<C>
    where
        F: std::future::Future<Output = redis::RedisResult<C>>,
    {
        if let Some(c) = self.get_now() {
            return Ok(c);
        }
        let _one_at_a_time = self.opening.lock().await;
        if let Some(c) = self.get_now() {
            return Ok(c);
        }
        let c = open.await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn drop_current(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Backend {
    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Backend::Single { conn, .. } => cmd.query_async(&mut conn.clone()).await,
            Backend::Cluster { client, conn, .. } => {
                let mut c = conn.get(client.get_async_connection()).await?;
                cmd.query_async(&mut c).await
            }
            Backend::Sentinel {
                client,
                config,
                conn,
            } => {
                let open = async {
                    let master = client.lock().await.async_get_client().await?;
                    master
                        .get_multiplexed_async_connection_with_config(config)
                        .await
                };
                let mut c = conn.get(open).await?;
                let result = cmd.query_async(&mut c).await;
                if let Err(e) = &result {
                    // A dropped connection or a demoted master: ask the Sentinels again.
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_timeout()
                        || e.code() == Some("READONLY")
                    {
                        conn.drop_current();
                    }
                }
                result
            }
        }
    }

    /// A connection of its own for `SUBSCRIBE`.
    async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match self {
            Backend::Single { client, .. } => client.get_async_pubsub().await,
            Backend::Cluster { nodes, .. } => {
                let mut last = None;
                for n in nodes {
                    match n.get_async_pubsub().await {
                        Ok(p) => return Ok(p),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Client, "no cluster node"))
                }))
            }
            Backend::Sentinel { client, .. } => {
                let master = client.lock().await.async_get_client().await?;
                master.get_async_pubsub().await
            }
        }
    }

    /// Forgets a connection whose command missed the deadline (it may hang on a
    /// paused server); the next command opens one afresh.
    fn timed_out(&self) {
        if let Backend::Sentinel { conn, .. } = self {
            conn.drop_current();
        }
    }
}

/// A client for one node at `url`, with the configured password and CA.
fn node_client(
    url: &str,
    cfg: &RedisConfig,
    certs: Option<redis::TlsCertificates>,
) -> Result<redis::Client, RedisSetupError> {
    let mut info = url.into_connection_info().map_err(RedisSetupError::Url)?;
    if let Some(pw) = &cfg.password {
        let settings = info.redis_settings().clone().set_password(pw.expose());
        info = info.set_redis_settings(settings);
    }
    match certs {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
    .map_err(RedisSetupError::Client)
}

impl Redis {
    /// Prepares the connection without opening it: it opens on the first command, on the
    /// runtime that serves requests (a connection must not belong to the short-lived
    /// start-up runtime), and reopens by itself after Redis comes back.
    pub(crate) fn new(cfg: &RedisConfig, metrics: Arc<Metrics>) -> Result<Redis, RedisSetupError> {
        let certs = match &cfg.ca_file {
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|source| RedisSetupError::Ca {
                    path: path.clone(),
                    source,
                })?),
            }),
            None => None,
        };
        let backend = match &cfg.target {
            RedisTarget::Url(url) => {
                let client = node_client(url, cfg, certs)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.timeout))
                    .set_response_timeout(Some(cfg.timeout))
                    .set_number_of_retries(1);
                Backend::Single {
                    conn: client
                        .get_connection_manager_lazy(config)
                        .map_err(RedisSetupError::Client)?,
                    client,
                }
            }
            RedisTarget::Cluster(seeds) => {
                let mut builder =
                    redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                        .connection_timeout(cfg.timeout)
                        .response_timeout(cfg.timeout)
                        .retries(1);
                if let Some(pw) = &cfg.password {
                    builder = builder.password(pw.expose());
                }
                if cfg.target.tls() {
                    builder = builder.tls(redis::TlsMode::Secure);
                }
                if let Some(certs) = certs.clone() {
                    builder = builder.certs(certs);
                }
                Backend::Cluster {
                    client: builder.build().map_err(RedisSetupError::Url)?,
                    conn: Reopening::new(),
                    nodes: seeds
                        .iter()
                        .map(|u| node_client(u, cfg, certs.clone()))
                        .collect::<Result<_, _>>()?,
                }
            }
            RedisTarget::Sentinel { master, nodes } => {
                let mut addrs = Vec::with_capacity(nodes.len());
                let mut sentinel_auth = None;
                for n in nodes {
                    let info = n
                        .as_str()
                        .into_connection_info()
                        .map_err(RedisSetupError::Url)?;
                    let s = info.redis_settings();
                    if sentinel_auth.is_none() && s.password().is_some() {
                        sentinel_auth = Some((
                            s.username().map(str::to_owned),
                            s.password().unwrap_or_default().to_owned(),
                        ));
                    }
                    addrs.push(info.addr().clone());
                }
                let mut builder = redis::sentinel::SentinelClientBuilder::new(
                    addrs,
                    master,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(RedisSetupError::Client)?;
                if let Some((user, pw)) = sentinel_auth {
                    if let Some(u) = user {
                        builder = builder.set_client_to_sentinel_username(u);
                    }
                    builder = builder.set_client_to_sentinel_password(pw);
                }
                if let Some(pw) = &cfg.password {
                    builder = builder.set_client_to_redis_password(pw.expose());
                }
                if cfg.target.tls() {
                    builder = builder
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                }
                if let Some(certs) = certs {
                    builder = builder
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs);
                }
                Backend::Sentinel {
                    client: tokio::sync::Mutex::new(
                        builder.build().map_err(RedisSetupError::Client)?,
                    ),
                    config: redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(cfg.timeout))
                        .set_response_timeout(Some(cfg.timeout)),
                    conn: Reopening::new(),
                }
            }
        };
        Ok(Redis {
            backend: Arc::new(backend),
            prefix: cfg.key_prefix.as_str().into(),
            timeout: cfg.timeout,
            metrics,
        })
    }

    /// Where this gateway's metrics go.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `prefix` + `kind:` + the hex of `digest`: every key the gateway uses is named by
    /// a hash (never by the secret or id it stands for) and goes through here.
    pub(crate) fn hashed_key(&self, kind: &str, digest: &[u8]) -> String {
        format!("{}{kind}:{}", self.prefix, crate::hex::encode(digest))
    }

    /// Runs `cmd` (named `command` in the metrics) within the timeout.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.backend.run::<T>(cmd)).await;
        let m = &self.metrics;
        m.redis_duration
            .with_label_values(&[command])
            .observe(started.elapsed().as_secs_f64());
        let (result, label) = match outcome {
            Ok(Ok(v)) => (Ok(v), "ok"),
            Ok(Err(e)) => (Err(RedisError::Command(e)), "error"),
            Err(_) => {
                self.backend.timed_out();
                (Err(RedisError::Timeout(self.timeout)), "timeout")
            }
        };
        m.redis_commands.with_label_values(&[command, label]).inc();
        result
    }

    /// A subscription connection of its own (not bounded by the command timeout: it
    /// waits for messages).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        tokio::time::timeout(self.timeout, self.backend.pubsub())
            .await
            .map_err(|_| RedisError::Timeout(self.timeout))?
            .map_err(RedisError::Command)
    }

    /// `prefix` + `name`: a key or channel that names no secret.
    pub(crate) fn named(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `PING`: whether Redis answers now (`/readyz`).
    pub(crate) async fn ping(&self) -> Result<(), RedisError> {
        let pong: String = self.query("ping", &redis::cmd("PING")).await?;
        debug_assert_eq!(pong, "PONG");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::TestRedis;

    /// The master dies; Sentinel promotes the replica; the same `Redis` handle follows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sentinel_failover_is_followed_without_a_restart() {
        let mut server = TestRedis::sentinel_with_replica().await;
        let redis = server.client();
        let mut set = redis::cmd("SET");
        set.arg("k").arg("before");
        redis.query::<()>("test", &set).await.unwrap();
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(2000);
        assert_eq!(
            redis.query::<i64>("test", &wait).await.unwrap(),
            1,
            "replicated"
        );
        let TestRedis::Sentinel(s) = &mut server else {
            unreachable!()
        };
        s.master.stop();
        let killed = std::time::Instant::now();
        let mut failures = 0;
        let mut after = redis::cmd("SET");
        after.arg("k").arg("after");
        while redis.query::<()>("test", &after).await.is_err() {
            failures += 1;
            assert!(
                killed.elapsed() < std::time::Duration::from_secs(20),
                "never followed the failover"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut get = redis::cmd("GET");
        get.arg("k");
        assert_eq!(redis.query::<String>("test", &get).await.unwrap(), "after");
        eprintln!(
            "sentinel failover followed after {:?} ({failures} failed commands)",
            killed.elapsed()
        );
        assert!(failures > 0, "the master really went away");
    }
}
