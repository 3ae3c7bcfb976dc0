//! The admin listener (`server.admin_listen`), separate from the proxy: `/metrics`
//! (Prometheus text), `/healthz` (alive) and `/readyz` (ready to take traffic, or why not).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::gateway::Gateway;
use crate::reload::Live;

/// Why the gateway is not ready, if it is not (empty: ready).
pub fn readiness(gw: &Gateway) -> Vec<String> {
    let mut reasons = Vec::new();
    if gw.draining.load(Ordering::Relaxed) {
        reasons.push("shutting down".to_string());
    }
    for route in gw.routes.iter() {
        if route.pool.is_some() {
            let backends = route.backends();
            if !backends.iter().any(|(_, healthy)| *healthy) {
                reasons.push(format!("route {}: no healthy backend", route.config.name));
            }
        }
    }
    reasons
}

/// Sets the gauges that are read rather than counted, then renders everything.
pub fn render_metrics(gw: &Gateway) -> String {
    let m = &gw.metrics;
    m.token_cache_entries
        .set(gw.token_cache().entry_count() as i64);
    for route in gw.routes.iter() {
        for (addr, healthy) in route.backends() {
            m.backend_healthy
                .with_label_values(&[route.config.name.as_str(), &addr.to_string()])
                .set(i64::from(healthy));
        }
    }
    m.render()
}

async fn metrics(State(live): State<Arc<Live>>) -> Response {
    let gw = live.current();
    // moka counts lazily; settle pending bookkeeping so the entry gauge is current.
    gw.token_cache().sync().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&gw),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(live): State<Arc<Live>>) -> Response {
    let gw = live.current();
    let reasons = readiness(&gw);
    if reasons.is_empty() {
        (
            StatusCode::OK,
            "ready\nloopwise metadata: loaded\nsession store: reachable\n",
        )
            .into_response()
    } else {
        let body = format!("not ready\n{}\n", reasons.join("\n"));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(live)
}

/// Runs inside pingora: the admin router on the listener bound at start-up, the backend
/// pools of the current config, and (for `loopgate run`) reload on `SIGHUP`.
pub struct AdminService {
    pub live: Arc<Live>,
    pub listener: Mutex<Option<std::net::TcpListener>>,
    pub reload_on_sighup: bool,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.live.start_pools();
        if self.reload_on_sighup {
            tokio::spawn(self.live.clone().reload_on_sighup());
        }
        let Some(std_listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        let gw = self.live.current();
        // Readiness turns false as soon as a graceful shutdown starts; the listener keeps
        // answering (503 on /readyz) until the process is gone.
        tokio::spawn(async move {
            let _ = shutdown.changed().await;
            gw.draining.store(true, Ordering::Relaxed);
        });
        if let Err(e) = axum::serve(listener, router(self.live.clone())).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    }
}
