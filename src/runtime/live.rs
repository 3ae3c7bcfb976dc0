//! The live gateway and its reload (`SIGHUP`): routes, policies, upstreams, session
//! secrets and Loopwise settings swap atomically; a bad new config is refused, logged,
//! and the old one keeps serving.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::{self, ConfigErrors};
use crate::gateway::Gateway;
use crate::proxy::current::{Current, Generation};
use crate::proxy::pools::Pools;
use crate::routes::RouteTable;
use crate::runtime::bootstrap::{loopwise_client, school, StartError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload from")]
    NoConfigFile,
    #[error("the new config is invalid:\n{0}")]
    Config(ConfigErrors),
    #[error("{0}")]
    Start(#[from] StartError),
}

/// The gateway currently serving; each request takes one snapshot and keeps it.
pub struct Live {
    current: Arc<Current>,
    config_path: Option<PathBuf>,
    /// Stops the previous generation's backend pool tasks (DNS refresh, health checks).
    pools_stop: Mutex<Option<watch::Sender<bool>>>,
    reloading: tokio::sync::Mutex<()>,
    /// The TLS listener's certificate, when TLS is on: reloads swap it.
    pub tls: TlsSlot,
}

/// Where the listener's reloadable certificate is kept once the listener is built.
#[derive(Default)]
pub struct TlsSlot(std::sync::OnceLock<Arc<crate::proxy::certs::ReloadableCert>>);

impl TlsSlot {
    pub fn set(&self, r: Arc<crate::proxy::certs::ReloadableCert>) {
        let _ = self.0.set(r);
    }

    fn get(&self) -> Option<&Arc<crate::proxy::certs::ReloadableCert>> {
        self.0.get()
    }
}

impl Live {
    pub fn new(generation: Generation, config_path: Option<PathBuf>) -> Arc<Live> {
        Arc::new(Live {
            current: Arc::new(Current::new(generation)),
            config_path,
            pools_stop: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            tls: TlsSlot::default(),
        })
    }

    /// The gateway serving now (a snapshot).
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load().gateway.clone()
    }

    /// The generation serving now: the gateway and its routes' pools (a snapshot).
    pub fn generation(&self) -> Arc<Generation> {
        self.current.load()
    }

    /// The handle the proxy listener reads the serving gateway from.
    pub fn handle(&self) -> Arc<Current> {
        self.current.clone()
    }

    /// Runs the current generation's backend pools on this runtime, stopping the previous
    /// generation's.
    pub fn start_pools(&self) {
        let (tx, rx) = watch::channel(false);
        let previous = self
            .pools_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(tx);
        if let Some(old) = previous {
            let _ = old.send(true);
        }
        let generation = self.generation();
        for pool in generation.pools.iter() {
            let (pool, rx) = (pool.clone(), rx.clone());
            tokio::spawn(async move { pool.run(rx).await });
        }
    }

    /// Re-reads the config file and swaps the gateway; on any error the old one stays.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.current();
        let result = self.build_next(&old).await;
        let label = if result.is_ok() { "ok" } else { "error" };
        old.shared
            .metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match result {
            Ok(next) => {
                let routes = next.gateway.routes.iter().count();
                self.current.store(next);
                self.start_pools();
                tracing::info!(routes, "config reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; the previous config keeps serving");
                Err(e)
            }
        }
    }

    async fn build_next(&self, old: &Gateway) -> Result<Generation, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let config = config::load(path).map_err(ReloadError::Config)?;
        let s = &config.server;
        let o = &old.config.server;
        if s.listen != o.listen
            || s.admin_listen != o.admin_listen
            || s.threads != o.threads
            || s.tls.is_some() != o.tls.is_some()
        {
            tracing::warn!("listen addresses, threads and TLS take effect only after a restart");
        }
        // A school whose settings did not change keeps its client (and its metadata);
        // an added or changed one must be reachable, or the reload is refused.
        let mut all = Vec::new();
        for lw in &config.schools {
            let kept = old
                .config
                .school(&lw.name)
                .filter(|was| *was == lw && s.callback_url() == o.callback_url())
                .and_then(|_| old.schools.get(&lw.name));
            let client = match kept {
                Some(k) => k.client.clone(),
                None => loopwise_client(&config, lw, old.shared.metrics.clone()).await?,
            };
            all.push(school(lw, client));
        }
        let schools = crate::oauth::Schools::new(all).ok_or(StartError::NoSchools)?;
        let pools = Pools::build(&config.routes)
            .await
            .map_err(StartError::from)?;
        let routes = RouteTable::new(&config.routes);
        // Certificate files are re-read; the new pair is swapped in with the rest.
        let cert = match (&config.server.tls, self.tls.get()) {
            (Some(t), Some(_)) => Some(
                crate::proxy::certs::load(
                    &t.cert_file.to_string_lossy(),
                    &t.key_file.to_string_lossy(),
                )
                .map_err(StartError::Tls)?,
            ),
            _ => None,
        };
        if let (Some(cert), Some(slot)) = (cert, self.tls.get()) {
            slot.replace(cert);
        }
        let gateway = Gateway::new(old.shared.clone(), Arc::new(config), routes, schools);
        Ok(Generation::new(Arc::new(gateway), pools))
    }

    /// Reloads on every `SIGHUP` until the process ends.
    pub async fn reload_on_sighup(self: Arc<Self>) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload is unavailable");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            let _ = self.reload().await;
        }
    }
}
