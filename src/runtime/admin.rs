//! The admin listener (`server.admin_listen`), separate from the proxy: `/metrics`
//! (Prometheus text), `/healthz` (alive), `/readyz` (ready to take traffic, or why not),
//! and the operator's `/sessions` (see `admin_sessions`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;

use crate::proxy::current::Generation;
use crate::runtime::admin_sessions::{self, AdminReply};
use crate::runtime::live::Live;

/// Why the gateway is not ready, if it is not (empty: ready).
pub(crate) async fn readiness(generation: &Generation) -> Vec<String> {
    let gw = &generation.gateway;
    let mut reasons = Vec::new();
    if gw.shared.draining.load(Ordering::Relaxed) {
        reasons.push("shutting down".to_string());
    }
    if gw.shared.signals_pending.load(Ordering::Relaxed) {
        reasons.push("starting: signal handlers not installed yet".to_string());
    }
    // Ready while one school can sign users in: one school's outage must not take every
    // replica out of the load balancer (its routes answer 503 on their own).
    let pending: Vec<(String, String)> = gw
        .schools
        .iter()
        .filter_map(|s| s.client.pending_reason().map(|why| (s.id.clone(), why)))
        .collect();
    if pending.len() == gw.schools.len() {
        for (school, why) in pending {
            if gw.schools.len() == 1 {
                reasons.push(format!("loopwise metadata: not loaded ({why})"));
            } else {
                reasons.push(format!("loopwise metadata of {school}: not loaded ({why})"));
            }
        }
    }
    if let Err(e) = gw.shared.store.health().await {
        reasons.push(format!("session store: unreachable ({e})"));
    }
    if let Err(e) = gw.shared.replay.health().await {
        reasons.push(format!(
            "login replay guard ({}): unreachable ({e})",
            gw.shared.replay.kind()
        ));
    }
    for route in gw.routes.iter() {
        if let Some(pool) = generation.pools.of(route) {
            if !pool.backends().iter().any(|(_, healthy)| *healthy) {
                reasons.push(format!("route {}: no healthy backend", route.config.name));
            }
        }
    }
    reasons
}

/// Each school's state for a ready `/readyz`: one line for the only school, as before
/// schools had names; with several, one per school, so a school that is down while
/// another keeps the gateway ready is visible.
fn school_lines(gw: &crate::gateway::Gateway) -> String {
    if gw.schools.len() == 1 {
        return "loopwise metadata: loaded\n".to_string();
    }
    gw.schools
        .iter()
        .map(|s| match s.client.pending_reason() {
            None => format!("loopwise metadata of {}: loaded\n", s.id),
            Some(why) => format!("loopwise metadata of {}: not loaded ({why})\n", s.id),
        })
        .collect()
}

/// Sets the gauges that are read rather than counted, then renders everything.
pub(crate) fn render_metrics(generation: &Generation) -> String {
    let gw = &generation.gateway;
    let m = &gw.shared.metrics;
    m.token_cache_entries
        .set(gw.token_cache().entry_count() as i64);
    // Only the schools of the current config (a reload may have removed one).
    m.school_ready.reset();
    for school in gw.schools.iter() {
        m.school_ready
            .with_label_values(&[school.id.as_str()])
            .set(i64::from(school.client.pending_reason().is_none()));
    }
    for route in gw.routes.iter() {
        let backends = generation.pools.of(route).map(|p| p.backends());
        for (addr, healthy) in backends.unwrap_or_default() {
            m.backend_healthy
                .with_label_values(&[route.config.name.as_str(), &addr.to_string()])
                .set(i64::from(healthy));
        }
    }
    m.render()
}

/// Serves `/metrics`, `/healthz` and `/readyz`. A pingora listening service, so a graceful
/// binary upgrade hands its socket to the new process along with the proxy's.
pub(crate) struct AdminApp {
    pub live: Arc<Live>,
}

impl AdminApp {
    /// The reply for one admin request: pure routing over the live gateway.
    pub(crate) async fn reply(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        authorization: Option<&str>,
    ) -> AdminReply {
        let generation = self.live.generation();
        let gw = &generation.gateway;
        if path == "/sessions" || path == "/sessions/revoke" {
            let now = gw.shared.clock.now();
            return admin_sessions::reply(gw, method, path, query, authorization, now).await;
        }
        if method != Method::GET && method != Method::HEAD {
            return AdminReply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match path {
            "/metrics" => {
                // moka counts lazily; settle pending bookkeeping so the entry gauge is current.
                gw.token_cache().sync().await;
                let mut r = AdminReply::text(StatusCode::OK, render_metrics(&generation));
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r
            }
            "/healthz" => {
                AdminReply::text(StatusCode::OK, format!("ok\npid {}\n", std::process::id()))
            }
            "/readyz" => {
                let reasons = readiness(&generation).await;
                if reasons.is_empty() {
                    AdminReply::text(
                        StatusCode::OK,
                        format!(
                            "ready\n{}session store: reachable\n",
                            school_lines(&generation.gateway)
                        ),
                    )
                } else {
                    AdminReply::text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready\n{}\n", reasons.join("\n")),
                    )
                }
            }
            _ => AdminReply::text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz or /sessions?sub=\n",
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().map(str::to_string);
        let authorization = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let r = self
            .reply(&method, &path, query.as_deref(), authorization.as_deref())
            .await;
        let body = if method == Method::HEAD {
            Vec::new()
        } else {
            r.body.into_bytes()
        };
        let mut resp = Response::builder()
            .status(r.status)
            .header(header::CONTENT_TYPE, r.content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::CACHE_CONTROL, "no-store");
        if r.challenge {
            resp = resp.header(header::WWW_AUTHENTICATE, "Bearer realm=\"loopgate-admin\"");
        }
        resp.body(body).unwrap_or_default()
    }
}

/// The admin listener as a pingora service on `server.admin_listen`.
pub(crate) fn service(live: Arc<Live>, listen: &str) -> Service<AdminApp> {
    let mut svc = Service::new("admin".into(), AdminApp { live });
    svc.add_tcp(listen);
    // Scrapes and probes are light; one thread keeps them off the proxy's runtimes.
    svc.threads = Some(1);
    svc
}

/// Runs inside pingora: the backend pools of the current config, the retry of Loopwise
/// discovery when start-up had to go without it, the check that schools still know the
/// clients that registered themselves, and (for `loopgate run`) reload on `SIGHUP`.
pub(crate) struct PoolsService {
    pub live: Arc<Live>,
    pub reload_on_sighup: bool,
}

#[async_trait]
impl BackgroundService for PoolsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.live.start_pools();
        let gw = self.live.current();
        for school in gw.schools.iter() {
            if school.client.pending_reason().is_some() {
                tokio::spawn(crate::runtime::bootstrap::resolve_in_background(
                    gw.config.clone(),
                    school.id.clone(),
                    school.client.clone(),
                ));
            }
        }
        if self.reload_on_sighup {
            tokio::spawn(self.live.clone().reload_on_sighup());
        }
        tokio::spawn(check_registrations(self.live.clone()));
        // The spawned tasks live on this service's runtime; keep it until shutdown.
        let _ = shutdown.changed().await;
    }
}

/// Every `registration_check` (of the current config, so a reload changes it), asks the
/// schools whether they still know the clients that registered themselves.
async fn check_registrations(live: Arc<Live>) {
    loop {
        let every = live.current().registration_check_every();
        // With nothing to check, look again later: a reload may add a school.
        tokio::time::sleep(every.unwrap_or(Duration::from_secs(60))).await;
        if every.is_some() {
            let gw = live.current();
            gw.check_registrations(gw.shared.clock.now()).await;
        }
    }
}
