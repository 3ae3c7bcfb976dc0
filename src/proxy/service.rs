//! pingora glue: translates between pingora's `ProxyHttp` callbacks and the gateway's
//! decisions. No policy is decided here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session as PSession};

use super::current::{Current, Generation};
use crate::gateway::admission::{self, Plan};
use crate::gateway::reply::Reply;
use crate::gateway::upstream::{self, ProxyFailure};
use crate::gateway::{Audience, Authenticated, Decision, Denial, Gateway, RequestView};
use crate::routes::Route;
use crate::wire::headers;
use crate::wire::host::Authority;

/// Per-request state shared across pingora's phases.
#[derive(Default)]
pub(crate) struct Ctx {
    route: Option<Arc<Route>>,
    auth: Option<Authenticated>,
    /// Path and query to send upstream (normalised; prefix stripped or rewritten).
    upstream_uri: String,
    navigation: bool,
    /// Cookies to set on the response (e.g. a refreshed session).
    set_cookies: Vec<String>,
    started: Option<Instant>,
    outcome: &'static str,
    /// The request's checked authority (`None`: an HTTP/1.0 request without `Host`).
    authority: Option<Authority>,
    /// The backend of the current attempt, its `Host`, and backends already tried.
    backend: Option<SocketAddr>,
    upstream_authority: Option<String>,
    tried: Vec<SocketAddr>,
    retried: bool,
    upstream_started: Option<Instant>,
    upstream_status: u16,
    /// The gateway snapshot this request uses from start to end (a reload may swap in
    /// another for later requests).
    generation: Option<Arc<Generation>>,
    /// From the client's `X-Request-Id` when sane, else generated; sent upstream and logged.
    request_id: String,
}

/// The client's `X-Request-Id` when it is a plain token, else a fresh random one (a
/// client-chosen id must not be able to forge log fields).
fn request_id(headers: &http::HeaderMap) -> String {
    headers::client_request_id(headers)
        .map(str::to_string)
        .unwrap_or_else(|| crate::hex::encode(&crate::random::unique()))
}

pub(crate) struct LoopgateProxy {
    pub current: Arc<Current>,
}

/// Writes a gateway-made response: always with `Content-Length`, so the connection can be
/// kept alive (pingora's `respond_error` would close it).
pub(crate) async fn write_reply(session: &mut PSession, reply: Reply) -> Result<()> {
    if reply.close {
        session.set_keepalive(None);
    }
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

/// The TCP peer's address (`None` over a Unix socket).
fn peer_ip(session: &PSession) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

impl LoopgateProxy {
    /// The generation this request started with (a reload mid-request does not change
    /// it), or the serving one for a request that has none yet.
    fn generation(&self, ctx: &Ctx) -> Arc<Generation> {
        ctx.generation
            .clone()
            .unwrap_or_else(|| self.current.load())
    }

    fn gw(&self, ctx: &Ctx) -> Arc<Gateway> {
        self.generation(ctx).gateway.clone()
    }

    /// Decides what to do with a request; `Some(reply)` ends it here. Every decision is
    /// `gateway::admission` / `Gateway::authorize`'s; this only translates.
    async fn decide(&self, session: &PSession, ctx: &mut Ctx) -> Option<Reply> {
        let generation = self.current.load();
        let gw = generation.gateway.clone();
        ctx.generation = Some(generation.clone());
        let now = gw.shared.clock.now();
        let req = session.req_header();
        ctx.request_id = request_id(&req.headers);
        ctx.navigation = crate::policy::navigation::is_navigation(&req.method, &req.headers);
        let audience = Audience::of(ctx.navigation);
        let raw_head = if req.version == http::Version::HTTP_2 {
            bytes::Bytes::new()
        } else {
            session.as_downstream().to_h1_raw()
        };
        let admitted = match admission::admit(admission::Head {
            version: req.version,
            uri: &req.uri,
            headers: &req.headers,
            raw: &raw_head,
        }) {
            Ok(a) => a,
            Err(e) => {
                if e.malformed() == crate::gateway::Malformed::Framing {
                    tracing::info!(error = %e, "refused a request with ambiguous framing");
                } else {
                    tracing::debug!(error = %e, "refused a request at admission");
                }
                let denial = Denial::BadRequest(e.malformed());
                ctx.outcome = denial.label(audience);
                return Some(gw.render_malformed(e.malformed(), audience));
            }
        };
        let host = admitted.authority.as_ref().map(|a| a.host.clone());
        ctx.authority = admitted.authority;
        let norm = admitted.path;
        let view = RequestView {
            method: &req.method,
            host: host.as_deref(),
            peer: peer_ip(session),
            path: &norm.path,
            query: req.uri.query(),
            headers: &req.headers,
        };
        let route = match admission::plan(
            &gw.config.server.prefix,
            &gw.routes,
            view.host,
            &norm,
            view.query,
        ) {
            Plan::Endpoint => {
                ctx.outcome = "endpoint";
                return Some(gw.endpoint(&view, now).await);
            }
            Plan::Deny(denial) => {
                ctx.outcome = denial.label(audience);
                return Some(gw.render(denial, audience, &view, now));
            }
            Plan::Route {
                route,
                upstream_uri,
            } => {
                ctx.upstream_uri = upstream_uri;
                route
            }
        };
        ctx.route = Some(route.clone());
        let decision = match gw.authorize(&route, &view, now).await {
            Decision::Allow { .. } if route.is_policy_only() => Decision::Deny {
                denial: Denial::PolicyOnly,
                audience,
            },
            d => d,
        };
        ctx.outcome = decision.label();
        match decision {
            Decision::Allow {
                auth, set_cookies, ..
            } => {
                ctx.auth = auth;
                ctx.set_cookies = set_cookies;
                None
            }
            Decision::Deny { denial, audience } => Some(gw.render(denial, audience, &view, now)),
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
        let generation = self.generation(ctx);
        let pool = generation
            .pools
            .of(&route)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route without a pool"))?;
        let (addr, up) = pool
            .pick(&ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no backend available"))?;
        let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
        peer.options.connection_timeout = Some(route.config.connect_timeout);
        peer.options.total_connection_timeout =
            Some(route.config.connect_timeout + Duration::from_secs(5));
        peer.options.read_timeout = Some(route.config.read_timeout);
        peer.options.ca = pool.ca.clone();
        // pingora's connection reuse ignores the CA: keep each route's connections apart so
        // a route with weaker trust never reuses a connection verified under another's.
        peer.group_key = pool.group_key;
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
        let generation = self.generation(ctx);
        let backends = ctx.route.as_ref().map_or(0, |r| {
            let known = generation.pools.of(r).map_or(0, |p| p.backends().len());
            r.config.upstreams.len().max(known)
        });
        if let Some(addr) = ctx.backend {
            tracing::warn!(backend = %addr, error = %e, "cannot connect to backend");
            ctx.tried.push(addr);
        }
        if let Some(route) = &ctx.route {
            generation
                .gateway
                .shared
                .metrics
                .upstream_errors
                .with_label_values(&[route.config.name.as_str(), "connect"])
                .inc();
        }
        if upstream::may_retry(&session.req_header().method, ctx.retried, backends) {
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
        let Some(route) = ctx.route.as_ref() else {
            return Ok(());
        };
        let plan = upstream::request_plan(&upstream::Outbound {
            headers: &session.req_header().headers,
            route: &route.config,
            auth: ctx.auth.as_ref(),
            request_id: &ctx.request_id,
            client_authority: ctx.authority.as_ref(),
            upstream_authority: ctx.upstream_authority.as_deref(),
            peer: peer_ip(session),
            secure: gw.config.server.secure,
            trusted: &gw.config.server.trusted_proxies,
            is_ours: &|n| gw.is_our_cookie(n),
        });
        for name in plan.remove {
            upstream.remove_header(&name);
        }
        for (name, value) in plan.set {
            upstream.insert_header(name, value)?;
        }
        for (name, value) in plan.append {
            upstream.append_header(name, value)?;
        }
        let uri: http::Uri = ctx
            .upstream_uri
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream uri"))?;
        upstream.set_uri(uri);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut PSession,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = resp.status.as_u16();
        // An upstream's ambiguous framing is not passed on to the client (nor read on).
        if let Err(e) = crate::wire::framing::response_framing(&resp.headers) {
            tracing::warn!(error = %e, "refused an upstream response with ambiguous framing");
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "ambiguous upstream response framing",
            )
            .into_up());
        }
        if let (Some(route), Some(started)) = (&ctx.route, ctx.upstream_started.take()) {
            self.generation(ctx)
                .meters
                .of(Some(route))
                .upstream_duration
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
        let gw = self.gw(ctx);
        if let Some(kept) = upstream::upstream_set_cookies(&resp.headers, &|n| gw.is_our_cookie(n))
        {
            resp.remove_header("set-cookie");
            for c in kept {
                resp.append_header("set-cookie", c)?;
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
        let failure = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(c), _) => ProxyFailure::Status(*c),
            (_, ErrorSource::Upstream) => ProxyFailure::Upstream,
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => ProxyFailure::ClientGone,
            (_, ErrorSource::Downstream) => ProxyFailure::ClientMalformed,
            _ => ProxyFailure::Internal,
        };
        let (code, reply) = upstream::failure_reply(failure, ctx.navigation);
        if failure == ProxyFailure::Upstream {
            let route = ctx
                .route
                .as_ref()
                .map(|r| r.config.name.as_str())
                .unwrap_or("-");
            tracing::warn!(route, error = %e, "upstream failed");
        }
        if let Some(reply) = reply {
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
        let generation = self.generation(ctx);
        let meters = generation.meters.of(ctx.route.as_deref());
        meters.requests(status).inc();
        meters.duration.observe(elapsed);
        let m = &generation.gateway.shared.metrics;
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
