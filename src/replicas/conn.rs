//! One multiplexed, self-reconnecting connection to `[redis]`, with the configured key
//! prefix and a deadline on every command (a command that misses it counts as Redis
//! being unavailable, never as an answer).

use std::sync::Arc;
use std::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo};

use crate::config::RedisConfig;
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
    #[error("redis.url: {0}")]
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
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: std::time::Duration,
    metrics: Arc<Metrics>,
}

impl Redis {
    /// Prepares the connection without opening it: it opens on the first command, on the
    /// runtime that serves requests (a connection must not belong to the short-lived
    /// start-up runtime), and reopens by itself after Redis comes back.
    pub(crate) fn new(cfg: &RedisConfig, metrics: Arc<Metrics>) -> Result<Redis, RedisSetupError> {
        let mut info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(RedisSetupError::Url)?;
        if let Some(pw) = &cfg.password {
            let settings = info.redis_settings().clone().set_password(pw.expose());
            info = info.set_redis_settings(settings);
        }
        let client = match &cfg.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| RedisSetupError::Ca {
                    path: path.clone(),
                    source,
                })?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(RedisSetupError::Client)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1);
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(RedisSetupError::Client)?;
        Ok(Redis {
            conn,
            prefix: cfg.key_prefix.as_str().into(),
            timeout: cfg.timeout,
            metrics,
        })
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
        let mut conn = self.conn.clone();
        let outcome = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        let m = &self.metrics;
        m.redis_duration
            .with_label_values(&[command])
            .observe(started.elapsed().as_secs_f64());
        let (result, label) = match outcome {
            Ok(Ok(v)) => (Ok(v), "ok"),
            Ok(Err(e)) => (Err(RedisError::Command(e)), "error"),
            Err(_) => (Err(RedisError::Timeout(self.timeout)), "timeout"),
        };
        m.redis_commands.with_label_values(&[command, label]).inc();
        result
    }

    /// `PING`: whether Redis answers now (`/readyz`).
    pub(crate) async fn ping(&self) -> Result<(), RedisError> {
        let pong: String = self.query("ping", &redis::cmd("PING")).await?;
        debug_assert_eq!(pong, "PONG");
        Ok(())
    }
}
