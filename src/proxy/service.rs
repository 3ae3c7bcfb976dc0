//! pingora glue: translates between pingora's `ProxyHttp` callbacks and the gateway's
//! decisions. No policy is decided here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session as PSession};

use super::headers;
use super::path;
use super::respond::Reply;
use super::routes::Route;
use crate::config::AuthKind;
use crate::gateway::{Authenticated, Decision, Gateway, RequestView};

/// Per-request state shared across pingora's phases.
#[derive(Default)]
pub struct Ctx {
    route: Option<Arc<Route>>,
    auth: Option<Authenticated>,
    /// Path and query to send upstream (normalised; prefix stripped or rewritten).
    upstream_uri: String,
    navigation: bool,
    /// Cookies to set on the response (e.g. a refreshed session).
    set_cookies: Vec<String>,
    started: Option<Instant>,
    outcome: &'static str,
    /// The backend of the current attempt, its `Host`, and backends already tried.
    backend: Option<SocketAddr>,
    upstream_authority: Option<String>,
    tried: Vec<SocketAddr>,
    retried: bool,
    upstream_started: Option<Instant>,
    upstream_status: u16,
    /// The gateway snapshot this request uses from start to end (a reload may swap in
    /// another for later requests).
    gw: Option<Arc<Gateway>>,
    /// From the client's `X-Request-Id` when sane, else generated; sent upstream and logged.
    request_id: String,
}

/// The client's `X-Request-Id` if it is short and printable, else a fresh random one.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            crate::random::bytes::<16>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
}

pub struct LoopgateProxy {
    pub live: Arc<crate::reload::Live>,
}

/// Writes a gateway-made response: always with `Content-Length`, so the connection can be
/// kept alive (pingora's `respond_error` would close it).
pub async fn write_reply(session: &mut PSession, reply: Reply) -> Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    for (k, v) in reply.headers {
        resp.append_header(k, v)?;
    }
    resp.insert_header("content-length", reply.body.len().to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD || reply.body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// The request's host: `Host` (HTTP/1.1) or the URI authority (HTTP/2).
pub fn request_host(req: &RequestHeader) -> Option<String> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .and_then(crate::policy::host::normalize_host)
}

/// Methods safe to send to a second backend after a connection failure.
fn idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    )
}

impl LoopgateProxy {
    fn gw(&self, ctx: &Ctx) -> Arc<Gateway> {
        ctx.gw.clone().unwrap_or_else(|| self.live.current())
    }

    /// Decides what to do with a request; `Some(reply)` ends it here.
    async fn decide(&self, session: &PSession, ctx: &mut Ctx) -> Option<Reply> {
        let gw = self.live.current();
        ctx.gw = Some(gw.clone());
        let now = gw.clock.now();
        let req = session.req_header();
        ctx.request_id = request_id(&req.headers);
        ctx.navigation = crate::policy::navigation::is_navigation(&req.method, &req.headers);
        let Some(norm) = path::normalize(req.uri.path()) else {
            ctx.outcome = "bad_path";
            return Some(Reply::error(
                400,
                ctx.navigation,
                "bad_request",
                "This address is not valid",
            ));
        };
        let host = request_host(req);
        let view = RequestView {
            method: &req.method,
            host: host.as_deref(),
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            path: &norm,
            query: req.uri.query(),
            headers: &req.headers,
        };
        if path::under_prefix(&norm, &gw.config.server.prefix) {
            ctx.outcome = "endpoint";
            return Some(gw.endpoint(&view, now).await);
        }
        let Some(route) = gw.routes.find(host.as_deref(), &norm) else {
            ctx.outcome = "no_route";
            return Some(Reply::error(404, ctx.navigation, "not_found", "Not found"));
        };
        ctx.route = Some(route.clone());
        let rc = &route.config;
        let upstream_path = match (&rc.rewrite, rc.strip_prefix) {
            (Some(rw), _) => path::rewrite(&norm, &rc.path, rw),
            (None, true) => path::strip(&norm, &rc.path),
            (None, false) => norm.clone(),
        };
        ctx.upstream_uri = match req.uri.query() {
            Some(q) => format!("{upstream_path}?{q}"),
            None => upstream_path,
        };
        match gw.authorize(route, &view, now).await {
            Decision::Allow {
                auth,
                set_cookies,
                outcome,
            } => {
                ctx.outcome = outcome;
                ctx.auth = auth;
                ctx.set_cookies = set_cookies;
                if route.pool.is_none() {
                    ctx.outcome = "policy_only_route";
                    return Some(Reply::error(404, ctx.navigation, "not_found", "Not found"));
                }
                None
            }
            Decision::Deny { reply, outcome } => {
                ctx.outcome = outcome;
                Some(reply)
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for LoopgateProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Some(Instant::now()),
            ..Ctx::default()
        }
    }

    /// pingora calls this for every HTTP/1 request once its header is parsed, because the
    /// header deadline (`proxy::guard`) puts its marker in the connection context.
    fn on_connection_reuse(
        &self,
        _session: &mut PSession,
        _ctx: &mut Ctx,
        prev_ctx: Box<dyn std::any::Any + Send + Sync>,
    ) {
        let _ = super::guard::header_arrived(prev_ctx);
    }

    async fn request_filter(&self, session: &mut PSession, ctx: &mut Ctx) -> Result<bool> {
        match self.decide(session, ctx).await {
            Some(reply) => {
                write_reply(session, reply).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, _session: &mut PSession, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let (addr, up) = route
            .pick(&ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no backend available"))?;
        let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
        peer.options.connection_timeout = Some(route.config.connect_timeout);
        peer.options.total_connection_timeout =
            Some(route.config.connect_timeout + Duration::from_secs(5));
        peer.options.read_timeout = Some(route.config.read_timeout);
        peer.options.ca = route.ca.clone();
        // pingora's connection reuse ignores the CA: keep each route's connections apart so
        // a route with weaker trust never reuses a connection verified under another's.
        peer.group_key = route.group_key;
        ctx.backend = Some(addr);
        ctx.upstream_authority = Some(up.authority());
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut PSession,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Passive failure handling: one retry on another backend, for idempotent requests.
        let backends = ctx
            .route
            .as_ref()
            .map_or(0, |r| r.config.upstreams.len().max(r.backends().len()));
        if let Some(addr) = ctx.backend {
            tracing::warn!(backend = %addr, error = %e, "cannot connect to backend");
            ctx.tried.push(addr);
        }
        if let Some(route) = &ctx.route {
            self.gw(ctx)
                .metrics
                .upstream_errors
                .with_label_values(&[route.config.name.as_str(), "connect"])
                .inc();
        }
        if !ctx.retried && backends > 1 && idempotent(&session.req_header().method) {
            ctx.retried = true;
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut PSession,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let gw = self.gw(ctx);
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        let authenticated_route = route.config.auth != AuthKind::Public;
        let upgrade = headers::is_upgrade(&upstream.headers);
        for name in headers::to_remove(&upstream.headers, authenticated_route) {
            if upgrade && name.eq_ignore_ascii_case("connection") {
                continue;
            }
            upstream.remove_header(&name);
        }
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        let cookie = headers::filtered_cookie(&upstream.headers, &|n| gw.is_our_cookie(n));
        upstream.remove_header("cookie");
        if let Some(c) = cookie {
            upstream.insert_header("cookie", c)?;
        }
        if let Some(a) = &ctx.auth {
            upstream.insert_header("authorization", format!("Bearer {}", a.token))?;
            for (k, v) in headers::identity_headers(&a.identity, &a.scope) {
                upstream.insert_header(k, v)?;
            }
        }
        let original_host = upstream
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| upstream.uri.authority().map(|a| a.to_string()));
        let uri: http::Uri = ctx
            .upstream_uri
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream uri"))?;
        upstream.set_uri(uri);
        if !route.config.preserve_host {
            if let Some(a) = &ctx.upstream_authority {
                upstream.insert_header("host", a.as_str())?;
            }
        }
        // X-Forwarded-*: extended when the peer is a trusted proxy, replaced otherwise.
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = peer.is_some_and(|p| gw.config.server.trusted_proxies.contains(p));
        let keep = |name: &str| -> Option<String> {
            if !trusted {
                return None;
            }
            upstream
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let xff = match (keep("x-forwarded-for"), peer) {
            (Some(chain), Some(p)) => Some(format!("{chain}, {p}")),
            (_, Some(p)) => Some(p.to_string()),
            (chain, None) => chain,
        };
        let proto = keep("x-forwarded-proto").unwrap_or_else(|| {
            if gw.config.server.secure {
                "https"
            } else {
                "http"
            }
            .to_string()
        });
        let fwd_host = keep("x-forwarded-host").or(original_host);
        upstream.remove_header("x-forwarded-for");
        if let Some(x) = xff {
            upstream.insert_header("x-forwarded-for", x)?;
        }
        upstream.insert_header("x-forwarded-proto", proto)?;
        upstream.remove_header("x-forwarded-host");
        if let Some(h) = fwd_host {
            upstream.insert_header("x-forwarded-host", h)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut PSession,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = resp.status.as_u16();
        if let (Some(route), Some(started)) = (&ctx.route, ctx.upstream_started.take()) {
            self.gw(ctx)
                .metrics
                .upstream_duration
                .with_label_values(&[route.config.name.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut PSession,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An upstream must not be able to overwrite the gateway's own cookies.
        let gw = self.gw(ctx);
        let upstream_cookies: Vec<String> = resp
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let is_ours = |c: &String| {
            let name = c.split('=').next().unwrap_or("").trim();
            gw.is_our_cookie(name)
        };
        if upstream_cookies.iter().any(is_ours) {
            resp.remove_header("set-cookie");
            for c in upstream_cookies.iter().filter(|c| !is_ours(c)) {
                resp.append_header("set-cookie", c.as_str())?;
            }
        }
        for c in ctx.set_cookies.drain(..) {
            resp.append_header("set-cookie", c)?;
        }
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut PSession, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        let route = ctx
            .route
            .as_ref()
            .map(|r| r.config.name.as_str())
            .unwrap_or("-");
        if code == 502 {
            tracing::warn!(route, error = %e, "upstream failed");
        }
        if code > 0 {
            let reply = match code {
                502 | 504 => Reply::error(
                    502,
                    ctx.navigation,
                    "bad_gateway",
                    "The application behind the gateway is not responding",
                ),
                400 => Reply::error(400, ctx.navigation, "bad_request", "Bad request"),
                c => Reply::error(c, ctx.navigation, "error", "Something went wrong"),
            };
            let _ = write_reply(session, reply).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut PSession, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let elapsed = ctx
            .started
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let route = ctx
            .route
            .as_ref()
            .map(|r| r.config.name.as_str())
            .unwrap_or("-");
        let gw = self.gw(ctx);
        let m = &gw.metrics;
        m.requests
            .with_label_values(&[route, crate::metrics::status_class(status)])
            .inc();
        m.request_duration
            .with_label_values(&[route])
            .observe(elapsed);
        if !ctx.outcome.is_empty() {
            m.auth_decisions
                .with_label_values(&[route, ctx.outcome])
                .inc();
        }
        if let (Some(e), Some(_)) = (e, ctx.backend) {
            if e.esource() == &ErrorSource::Upstream {
                m.upstream_errors
                    .with_label_values(&[
                        route,
                        if e.etype() == &ErrorType::ReadTimedout {
                            "timeout"
                        } else {
                            "response"
                        },
                    ])
                    .inc();
            }
        }
        tracing::info!(
            target: "loopgate::access",
            request_id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            route,
            status,
            duration_ms = format!("{:.2}", elapsed * 1000.0),
            auth = ctx.outcome,
            upstream = ctx.backend.map(|b| b.to_string()).unwrap_or_default(),
            upstream_status = ctx.upstream_status,
            sub = ctx.auth.as_ref().map(|a| headers::sanitize(&a.identity.sub)).unwrap_or_default(),
            error = e.map(|e| e.etype().as_str()).unwrap_or(""),
            "request"
        );
    }
}
