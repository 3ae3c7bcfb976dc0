//! Start-up: discover Loopwise, register if needed, resolve routes — everything that
//! needs the network before the gateway can serve — and the background retry that loads
//! Loopwise metadata later when it was unreachable at start-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, LoopwiseConfig};
use crate::gateway::{Gateway, Shared};
use crate::oauth::client::Resolved;
use crate::oauth::{
    client, registration, HttpClient, LoopwiseClient, ReqwestClient, School, Schools,
};
use crate::proxy::current::Generation;
use crate::proxy::pools::Pools;
use crate::routes::RouteTable;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load Loopwise metadata from {issuer}: {source}")]
    Discovery {
        issuer: String,
        source: crate::oauth::LoopwiseError,
    },
    #[error("{0}")]
    Registration(#[from] registration::RegistrationError),
    #[error("{0}")]
    Routes(#[from] crate::proxy::pools::ResolveError),
    #[error("{0}")]
    HttpClient(#[from] crate::oauth::http::HttpClientError),
    #[error("cannot start a runtime or thread: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the gateway thread stopped during start-up")]
    ThreadStopped,
    #[error("{0}")]
    Redis(#[from] crate::replicas::RedisSetupError),
    #[error("the gateway did not start listening on {0} within 10s")]
    NotListening(SocketAddr),
    #[error("server.tls: {0}")]
    Tls(String),
    #[error("graceful upgrade: {0}")]
    Upgrade(String),
    #[error("no school is configured")]
    NoSchools,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Everything that needs the network before serving: metadata, registration, DNS.
/// Runs on a short-lived runtime with its own HTTP client; the request-path client is a
/// different one, so no connection outlives the runtime that opened it.
pub(crate) async fn prepare(config: Config) -> Result<Generation, StartError> {
    prepare_with(config, false).await
}

/// [`prepare`], for a process that takes its listening sockets over from a running one
/// (`--upgrade`): those addresses are in use by design, so they are not probed.
pub(crate) async fn prepare_with(config: Config, upgrade: bool) -> Result<Generation, StartError> {
    if !upgrade {
        // Fail early and clearly if a port is taken (pingora would panic in a task).
        for addr in [config.server.listen, config.server.admin_listen] {
            std::net::TcpListener::bind(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
        }
    } else if let Some(dir) = config.server.upgrade_sock.parent() {
        if !dir.is_dir() {
            return Err(StartError::Upgrade(format!(
                "server.upgrade_sock: directory `{}` does not exist",
                dir.display()
            )));
        }
    }
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let schools = schools_or_pending(&config, metrics.clone()).await?;
    let pools = Pools::build(&config.routes).await?;
    let routes = RouteTable::new(&config.routes);
    let mut shared = Shared::local(metrics.clone(), config.session.refresh_grace);
    if let Some(rc) = &config.redis {
        let redis = crate::replicas::Redis::new(rc, metrics.clone())?;
        let redis_for_store = redis.clone();
        // One subscription per replica hears the others' sign-outs, revokes and refreshes.
        let changes = Arc::new(crate::replicas::Invalidations::new(redis.clone()));
        shared = shared
            .with_replay(Arc::new(crate::replicas::RedisReplayGuard::new(
                redis.clone(),
            )))
            .with_ended(Arc::new(crate::replicas::RedisEndedSessions::new(
                redis.clone(),
                changes.clone(),
            )))
            .with_refresh(Arc::new(crate::replicas::RedisRefresher::new(
                redis,
                config.session.refresh_grace,
                config
                    .schools
                    .iter()
                    .map(|s| s.timeout)
                    .max()
                    .unwrap_or(Duration::from_secs(10)),
                metrics,
            )));
        if config.session.store == crate::config::SessionStoreKind::Redis {
            shared = shared.with_store(Arc::new(crate::replicas::RedisSessionStore::new(
                redis_for_store,
                &config.session.secrets,
                changes,
            )));
        }
        tracing::info!(key_prefix = %rc.key_prefix, store = ?config.session.store, "login states, refreshes and sign-outs are shared by the replicas (redis)");
    }
    let shared = Arc::new(shared);
    shared.set_admin_addr(config.server.admin_listen);
    let gateway = Gateway::new(shared, Arc::new(config), routes, schools);
    Ok(Generation::new(Arc::new(gateway), pools))
}

/// A school's metadata and client id (configured, or registered dynamically and
/// stored), fetched with `http`.
async fn resolve(
    config: &Config,
    lw: &LoopwiseConfig,
    http: &dyn HttpClient,
) -> Result<Resolved, StartError> {
    let metadata = discover_with_retry(http, &lw.issuer).await?;
    let client_id = match &lw.client_id {
        Some(id) => id.clone(),
        None => {
            let r = registration::ensure(
                http,
                &metadata,
                &lw.client_name,
                &config.server.callback_url(),
                &lw.registration_file,
                unix_now(),
            )
            .await?;
            tracing::info!(school = %lw.name, client_id = %r.client_id, file = %lw.registration_file.display(), "using dynamically registered client");
            r.client_id
        }
    };
    Ok(Resolved {
        metadata,
        client_id,
    })
}

/// Whether a start-up failure may clear up by itself (Loopwise down or overloaded), as
/// opposed to a configuration problem.
fn transient(e: &StartError) -> bool {
    let lw = match e {
        StartError::Discovery { source, .. } => source,
        StartError::Registration(registration::RegistrationError::Loopwise(e)) => e,
        _ => return false,
    };
    matches!(
        lw,
        crate::oauth::LoopwiseError::Unreachable(_) | crate::oauth::LoopwiseError::Unavailable(_)
    )
}

/// A throw-away HTTP client for discovery and registration, so no pooled connection
/// outlives the runtime that opened it.
fn startup_http(lw: &LoopwiseConfig) -> Result<ReqwestClient, StartError> {
    ReqwestClient::new(lw.timeout, lw.ca_file.as_deref()).map_err(StartError::from)
}

/// The metered client for the request path.
fn request_http(
    lw: &LoopwiseConfig,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Arc<dyn HttpClient>, StartError> {
    Ok(Arc::new(crate::oauth::metered::MeteredClient {
        inner: Arc::new(
            ReqwestClient::new(lw.timeout, lw.ca_file.as_deref()).map_err(StartError::from)?,
        ),
        metrics,
        school: lw.name.clone(),
    }))
}

/// A school's client with its metadata and client id loaded; fails if the school cannot
/// be reached (a reload keeps the running config then).
pub(crate) async fn loopwise_client(
    config: &Config,
    lw: &LoopwiseConfig,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<LoopwiseClient, StartError> {
    let resolved = resolve(config, lw, &startup_http(lw)?).await?;
    Ok(LoopwiseClient::new(
        request_http(lw, metrics)?,
        resolved.metadata,
        resolved.client_id,
        lw.client_secret.clone(),
        config.server.callback_url(),
    ))
}

/// One school of the registry, with its client.
pub(crate) fn school(lw: &LoopwiseConfig, client: LoopwiseClient) -> School {
    School {
        id: lw.name.clone(),
        display_name: lw.display_name.clone(),
        client: {
            let c = client.with_options(lw.claims.clone(), lw.authorize_params.clone());
            match lw.client_id {
                Some(_) => c,
                // A client that registered itself can register again (see `reregister`).
                None => c.with_registration(crate::oauth::client::RegistrationSpec::new(
                    lw.registration_file.clone(),
                    lw.client_name.clone(),
                )),
            }
        },
    }
}

/// Every school's client, each pending while its school is unreachable (see
/// [`loopwise_client_or_pending`]).
async fn schools_or_pending(
    config: &Config,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Schools, StartError> {
    let mut all = Vec::new();
    for lw in &config.schools {
        let client = loopwise_client_or_pending(config, lw, metrics.clone()).await?;
        all.push(school(lw, client));
    }
    Schools::new(all).ok_or(StartError::NoSchools)
}

/// Like [`loopwise_client`], but when Loopwise is unreachable the client starts pending
/// (see [`resolve_in_background`]): sessions whose tokens are still valid keep working
/// across a restart during a Loopwise outage, and `/readyz` says what is missing.
pub(crate) async fn loopwise_client_or_pending(
    config: &Config,
    lw: &LoopwiseConfig,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<LoopwiseClient, StartError> {
    match loopwise_client(config, lw, metrics.clone()).await {
        Ok(c) => Ok(c),
        Err(e) if transient(&e) => {
            tracing::warn!(school = %lw.name, error = %e, "starting without Loopwise metadata; retrying in the background (logins and refreshes get 503 until then)");
            Ok(LoopwiseClient::pending(
                request_http(lw, metrics)?,
                lw.issuer.clone(),
                lw.client_secret.clone(),
                config.server.callback_url(),
                e.to_string(),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Retries discovery (and registration) for a pending client with backoff (1 s to 30 s)
/// until it succeeds or fails for a reason only a config change can fix.
pub(crate) async fn resolve_in_background(
    config: Arc<Config>,
    school: String,
    client: LoopwiseClient,
) {
    let Some(lw) = config.school(&school) else {
        return;
    };
    let mut delay = Duration::from_secs(1);
    while client.pending_reason().is_some() {
        tokio::time::sleep(delay).await;
        let outcome = match startup_http(lw) {
            Ok(http) => resolve(&config, lw, &http).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(r) => {
                tracing::info!(school = %lw.name, issuer = %lw.issuer, client_id = %r.client_id, "Loopwise metadata loaded");
                client.resolve(r);
            }
            Err(e) if transient(&e) => {
                tracing::warn!(school = %lw.name, error = %e, retry_in = ?delay, "Loopwise metadata still not available");
                client.set_pending_reason(e.to_string());
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(school = %lw.name, error = %e, "cannot load Loopwise metadata; fix the config and reload");
                client.set_pending_reason(e.to_string());
                return;
            }
        }
    }
}

/// A few quick retries cover Loopwise (or the emulator) still starting up.
async fn discover_with_retry(
    http: &dyn HttpClient,
    issuer: &str,
) -> Result<client::Metadata, StartError> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client::discover(http, issuer).await {
            Ok(m) => return Ok(m),
            Err(e) if attempt < 4 && !matches!(e, crate::oauth::LoopwiseError::Malformed(_)) => {
                tracing::warn!(error = %e, attempt, "Loopwise metadata not available yet; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(source) => {
                return Err(StartError::Discovery {
                    issuer: issuer.to_string(),
                    source,
                })
            }
        }
    }
}
