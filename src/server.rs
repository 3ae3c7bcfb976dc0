//! The entry to a running gateway: build the pingora server around the live gateway and
//! run it, for `loopgate run` (until a signal) or on a thread (`loopgate demo`, tests).
//! Start-up itself is [`crate::runtime::bootstrap`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::proxy::service::LoopgateProxy;
pub use crate::runtime::bootstrap::StartError;
use crate::runtime::bootstrap::{prepare, prepare_with};
use crate::runtime::live::{Live, ReloadError};

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
        Arc::new(crate::runtime::admin::PoolsService {
            live: live.clone(),
            reload_on_sighup,
        }),
    ));
    server.add_service(crate::runtime::admin::service(
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
                pingora::proxy::http_proxy(
                    &server.configuration,
                    LoopgateProxy {
                        current: live.handle(),
                    },
                ),
                limits,
                gateway.shared.metrics.clone(),
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
        None => svc.add_listener(
            pingora::listeners::ListenerConfig::tcp(listen).l4_buffer(PLAIN_LISTENER_BUFFERS),
        ),
    }
    server.add_service(svc);
    Ok(server)
}

/// Socket buffering of the plain-HTTP listener: no read buffer. pingora's default (a 64 KB
/// read buffer per connection, for TLS's 16 KB record reads) made an idle keep-alive
/// connection cost ~108 KB of RSS; without it ~43 KB, at the same CPU per request, because
/// pingora reads request heads and bodies into buffers of its own anyway
/// (`bench/RESULTS.md`). The write side keeps pingora's MSS-sized buffer, which puts a
/// small response's head and body in one send. The TLS listener keeps pingora's default.
const PLAIN_LISTENER_BUFFERS: pingora::protocols::l4::stream::L4BufferSettings =
    pingora::protocols::l4::stream::L4BufferSettings {
        read: Some(0),
        write: None,
    };

/// Runs the gateway until a signal ends it (see [`crate::runtime::lifecycle`]), reloading
/// `config_path` on SIGHUP — the `loopgate run` path.
pub fn run_blocking(
    config: Config,
    config_path: std::path::PathBuf,
    mode: RunMode,
) -> Result<(), StartError> {
    let successor = crate::runtime::lifecycle::Successor {
        // Resolved now: once an upgrade replaces the file, this path is the new binary.
        exe: std::env::current_exe().map_err(|e| StartError::Upgrade(e.to_string()))?,
        args: std::env::args_os().skip(1).collect(),
        upgrade_sock: config.server.upgrade_sock.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let generation = rt.block_on(prepare_with(config, mode.upgrade))?;
    drop(rt);
    let server_config = &generation.gateway.config.server;
    let addr = server_config.listen;
    let public = server_config.public_url.clone();
    let shutdown_delay = server_config.shutdown_delay;
    // Not ready until the signal handlers are in place (see `Shared::signals_pending`).
    generation
        .gateway
        .shared
        .signals_pending
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let live = Live::new(generation, Some(config_path));
    let server = build_server(live.clone(), true, &mode)?;
    tracing::info!(listen = %addr, public_url = %public, upgrade = mode.upgrade, daemon = mode.daemon, pid = std::process::id(), "Loopgate gateway starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::runtime::lifecycle::Signals {
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
                    .map_err(StartError::Runtime)
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
            .map_err(StartError::Runtime)?;
        let live = ready_rx.await.map_err(|_| StartError::ThreadStopped)??;
        let server = &live.current().config.server;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Wait for the condition itself (both listeners accept), not for a fixed time:
        // the admin listener is a service of its own and may start a moment later. An
        // admin listener on port 0 (`loopgate demo`) has no address to wait for.
        let admin = Some(server.admin_listen).filter(|a| a.port() != 0);
        for addr in std::iter::once(server.listen).chain(admin) {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                if tokio::time::Instant::now() > deadline {
                    return Err(StartError::NotListening(addr));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
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

    /// The gateway serving now with its routes' backend pools (a snapshot).
    pub fn generation(&self) -> Arc<crate::proxy::current::Generation> {
        self.live.generation()
    }

    /// Reloads the config file given to [`start_with_file`](Self::start_with_file).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let live = self.live.clone();
        // Reload builds pools on the gateway's runtime; run it there.
        live.reload().await
    }

    /// The gateway's public URL.
    pub fn url(&self) -> String {
        self.live.current().config.server.public_url.clone()
    }

    /// Stops pingora and waits for its thread to finish and for its listening ports to
    /// be free again (pingora's runtimes may close the listeners a moment after the
    /// thread returns), so a gateway can be started again on the same addresses.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let server = &self.live.current().config.server;
        let addrs: Vec<std::net::SocketAddr> = std::iter::once(server.listen)
            .chain(Some(server.admin_listen).filter(|a| a.port() != 0))
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while addrs
            .iter()
            .any(|a| std::net::TcpListener::bind(a).is_err())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
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
