//! Start-up and lifecycle: discover Loopwise, register if needed, resolve routes, then run
//! pingora. Used by `loopgate run`, `loopgate demo` and in-process tests alike.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::oauth::client::Resolved;
use crate::oauth::{client, registration, HttpClient, LoopwiseClient, ReqwestClient};
use crate::proxy::routes::RouteTable;
use crate::proxy::service::LoopgateProxy;
use crate::reload::Live;
use crate::session::CookieStore;

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
    Routes(#[from] crate::proxy::routes::ResolveError),
    #[error("{0}")]
    Http(String),
    #[error("the gateway did not start listening on {0} within 10s")]
    NotListening(SocketAddr),
    #[error("server.tls: {0}")]
    Tls(String),
    #[error("graceful upgrade: {0}")]
    Upgrade(String),
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
pub async fn prepare(config: Config) -> Result<Gateway, StartError> {
    prepare_with(config, false).await
}

/// [`prepare`], for a process that takes its listening sockets over from a running one
/// (`--upgrade`): those addresses are in use by design, so they are not probed.
pub async fn prepare_with(config: Config, upgrade: bool) -> Result<Gateway, StartError> {
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
    let loopwise = loopwise_client_or_pending(&config, metrics.clone()).await?;
    let routes = RouteTable::build(&config.routes).await?;
    let admin = config.server.admin_listen;
    let gateway = Gateway::new(
        Arc::new(config),
        routes,
        loopwise,
        Arc::new(CookieStore),
        metrics,
    );
    gateway.set_admin_addr(admin);
    Ok(gateway)
}

/// Loopwise metadata and the client id (configured, or registered dynamically and
/// stored), fetched with `http`.
async fn resolve(config: &Config, http: &dyn HttpClient) -> Result<Resolved, StartError> {
    let lw = &config.loopwise;
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
            tracing::info!(client_id = %r.client_id, file = %lw.registration_file.display(), "using dynamically registered client");
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
fn startup_http(config: &Config) -> Result<ReqwestClient, StartError> {
    let lw = &config.loopwise;
    ReqwestClient::new(lw.timeout, lw.ca_file.as_deref()).map_err(StartError::Http)
}

/// The metered client for the request path.
fn request_http(
    config: &Config,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Arc<dyn HttpClient>, StartError> {
    let lw = &config.loopwise;
    Ok(Arc::new(crate::oauth::metered::MeteredClient {
        inner: Arc::new(
            ReqwestClient::new(lw.timeout, lw.ca_file.as_deref()).map_err(StartError::Http)?,
        ),
        metrics,
    }))
}

/// A Loopwise client with its metadata and client id loaded; fails if Loopwise cannot
/// be reached (a reload keeps the running config then).
pub async fn loopwise_client(
    config: &Config,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<LoopwiseClient, StartError> {
    let resolved = resolve(config, &startup_http(config)?).await?;
    Ok(LoopwiseClient::new(
        request_http(config, metrics)?,
        resolved.metadata,
        resolved.client_id,
        config.loopwise.client_secret.clone(),
        config.server.callback_url(),
    ))
}

/// Like [`loopwise_client`], but when Loopwise is unreachable the client starts pending
/// (see [`resolve_in_background`]): sessions whose tokens are still valid keep working
/// across a restart during a Loopwise outage, and `/readyz` says what is missing.
pub async fn loopwise_client_or_pending(
    config: &Config,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<LoopwiseClient, StartError> {
    match loopwise_client(config, metrics.clone()).await {
        Ok(c) => Ok(c),
        Err(e) if transient(&e) => {
            tracing::warn!(error = %e, "starting without Loopwise metadata; retrying in the background (logins and refreshes get 503 until then)");
            Ok(LoopwiseClient::pending(
                request_http(config, metrics)?,
                config.loopwise.issuer.clone(),
                config.loopwise.client_secret.clone(),
                config.server.callback_url(),
                e.to_string(),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Retries discovery (and registration) for a pending client with backoff (1 s to 30 s)
/// until it succeeds or fails for a reason only a config change can fix.
pub async fn resolve_in_background(config: Arc<Config>, client: LoopwiseClient) {
    let mut delay = Duration::from_secs(1);
    while client.pending_reason().is_some() {
        tokio::time::sleep(delay).await;
        let outcome = match startup_http(&config) {
            Ok(http) => resolve(&config, &http).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(r) => {
                tracing::info!(issuer = %config.loopwise.issuer, client_id = %r.client_id, "Loopwise metadata loaded");
                client.resolve(r);
            }
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "Loopwise metadata still not available");
                client.set_pending_reason(e.to_string());
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load Loopwise metadata; fix the config and reload");
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

fn pingora_conf(config: &Config, mode: &RunMode) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        daemon: mode.daemon,
        pid_file: config.server.pid_file.to_string_lossy().into_owned(),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        // A daemon stays where it was started, so relative paths keep meaning the same.
        working_directory: std::env::current_dir().ok(),
        // On SIGTERM pingora stops accepting and lets in-flight requests run for the grace
        // period (readiness is already false), then stops the runtimes.
        grace_period_seconds: Some(config.server.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    }
}

/// How `loopgate run` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct RunMode {
    /// Take the listening sockets over from a running Loopgate (`--upgrade`).
    pub upgrade: bool,
    /// Fork into the background and write `server.pid_file` (`--daemon`).
    pub daemon: bool,
}

/// Builds the pingora server for the live gateway.
pub fn build_server(
    live: Arc<Live>,
    reload_on_sighup: bool,
    mode: &RunMode,
) -> Result<Server, StartError> {
    let gateway = live.current();
    let conf = pingora_conf(&gateway.config, mode);
    let listen = gateway.config.server.listen.to_string();
    let opt = pingora::server::configuration::Opt {
        upgrade: mode.upgrade,
        daemon: mode.daemon,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // With --upgrade, this receives the listening sockets from the old process.
    server.bootstrap();
    // The backend pools (DNS refresh, health checks) and SIGHUP.
    server.add_service(pingora::services::background::GenBackgroundService::new(
        "pools".into(),
        Arc::new(crate::admin::PoolsService {
            live: live.clone(),
            reload_on_sighup,
        }),
    ));
    server.add_service(crate::admin::service(
        live.clone(),
        &gateway.config.server.admin_listen.to_string(),
    ));
    let tls = gateway.config.server.tls.clone();
    let live_tls = live.clone();
    let tls_resolver = &live_tls.tls;
    // Limits are read from the live gateway per connection, so a reload applies them.
    let live_limits = live.clone();
    let limits: crate::proxy::guard::LimitsFn =
        Arc::new(move || crate::proxy::guard::Limits::of(&live_limits.current().config.server));
    // Settle outermost: its clean-up delay comes before the guard's and the proxy's.
    let mut svc = pingora::services::listening::Service::new(
        "loopgate".into(),
        crate::proxy::settle::Settle::new(
            crate::proxy::guard::guard(
                pingora::proxy::http_proxy(&server.configuration, LoopgateProxy { live }),
                limits,
                gateway.metrics.clone(),
            ),
            crate::proxy::settle::SETTLE,
        ),
    );
    match tls {
        // TLS on the listener, with HTTP/2 offered by ALPN.
        Some(t) => {
            let (cert, key) = (t.cert_file.to_string_lossy(), t.key_file.to_string_lossy());
            // Checked here (pingora would panic in the listener task), and kept behind a
            // resolver that a reload can swap.
            let initial = crate::proxy::certs::load(&cert, &key).map_err(StartError::Tls)?;
            let resolver = Arc::new(crate::proxy::certs::ReloadableCert::new(initial));
            tls_resolver.set(resolver.clone());
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate(&cert, &key)
                .map_err(|e| StartError::Tls(e.to_string()))?;
            settings.set_cert_resolver(resolver);
            settings.enable_h2();
            svc.add_tls_with_settings(&listen, None, settings);
        }
        None => svc.add_tcp(&listen),
    }
    server.add_service(svc);
    Ok(server)
}

/// Runs the gateway until a signal ends it (see [`crate::lifecycle`]), reloading
/// `config_path` on SIGHUP — the `loopgate run` path.
pub fn run_blocking(
    config: Config,
    config_path: std::path::PathBuf,
    mode: RunMode,
) -> Result<(), StartError> {
    let successor = crate::lifecycle::Successor {
        // Resolved now: once an upgrade replaces the file, this path is the new binary.
        exe: std::env::current_exe().map_err(|e| StartError::Upgrade(e.to_string()))?,
        args: std::env::args_os().skip(1).collect(),
        upgrade_sock: config.server.upgrade_sock.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Http(e.to_string()))?;
    let gateway = rt.block_on(prepare_with(config, mode.upgrade))?;
    drop(rt);
    let addr = gateway.config.server.listen;
    let public = gateway.config.server.public_url.clone();
    let shutdown_delay = gateway.config.server.shutdown_delay;
    let live = Live::new(gateway, Some(config_path));
    let server = build_server(live.clone(), true, &mode)?;
    tracing::info!(listen = %addr, public_url = %public, upgrade = mode.upgrade, daemon = mode.daemon, pid = std::process::id(), "Loopgate gateway starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::lifecycle::Signals {
            live,
            shutdown_delay,
            successor,
        }),
    });
    Ok(())
}

/// Shutdown requested through a channel (tests, `loopgate demo`).
struct ChannelShutdown(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// A gateway running on its own thread, started from async code.
pub struct GatewayHandle {
    live: Arc<Live>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GatewayHandle {
    /// Prepares (discovery, registration), starts pingora, and returns once it accepts
    /// connections.
    pub async fn start(config: Config) -> Result<GatewayHandle, StartError> {
        Self::start_with_file(config, None).await
    }

    /// Like [`start`](Self::start), remembering the config file for [`reload`](Self::reload).
    pub async fn start_with_file(
        config: Config,
        config_path: Option<std::path::PathBuf>,
    ) -> Result<GatewayHandle, StartError> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Arc<Live>, StartError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("loopgate-gateway".into())
            .spawn(move || {
                let prepared = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StartError::Http(e.to_string()))
                    .and_then(|rt| rt.block_on(prepare(config)));
                let live = match prepared {
                    Ok(g) => Live::new(g, config_path),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let server = match build_server(live.clone(), false, &RunMode::default()) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(live));
                server.run(RunArgs {
                    shutdown_signal: Box::new(ChannelShutdown(Mutex::new(Some(stop_rx)))),
                });
            })
            .map_err(|e| StartError::Http(e.to_string()))?;
        let live = ready_rx
            .await
            .map_err(|_| StartError::Http("the gateway thread stopped during start-up".into()))??;
        let addr = live.current().config.server.listen;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Wait for the condition itself (the port accepts), not for a fixed time.
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(StartError::NotListening(addr));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(GatewayHandle {
            live,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The gateway currently serving (a snapshot: a reload swaps in a new one).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.current()
    }

    /// Reloads the config file given to [`start_with_file`](Self::start_with_file).
    pub async fn reload(&self) -> Result<(), crate::reload::ReloadError> {
        let live = self.live.clone();
        // Reload builds pools on the gateway's runtime; run it there.
        live.reload().await
    }

    /// The gateway's public URL.
    pub fn url(&self) -> String {
        self.live.current().config.server.public_url.clone()
    }

    /// Stops pingora and waits for its thread to finish.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
