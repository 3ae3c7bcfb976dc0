//! pingora glue: translates between pingora's `ProxyHttp` callbacks and the gateway's
//! decisions. No policy is decided here.

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
use crate::gateway::{BearerAuth, Gateway, RequestView, SessionAuth};
use crate::session::Identity;

/// Who a request is, once authenticated: injected upstream.
pub struct Authenticated {
    pub identity: Identity,
    pub scope: String,
    /// The Bearer token sent upstream: the session's, or the API client's own.
    pub token: String,
}

/// Per-request state shared across pingora's phases.
#[derive(Default)]
pub struct Ctx {
    route: Option<Arc<Route>>,
    auth: Option<Authenticated>,
    /// Path and query to send upstream (normalised, prefix-stripped when configured).
    upstream_uri: String,
    navigation: bool,
    /// Cookies to set on the response (e.g. a refreshed session).
    set_cookies: Vec<String>,
    started: Option<Instant>,
    outcome: &'static str,
}

pub struct LoopgateProxy {
    pub gateway: Arc<Gateway>,
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

/// 401 for a missing or bad Bearer token (RFC 6750 §3).
fn invalid_token(message: &str) -> Reply {
    Reply::json(
        401,
        serde_json::json!({"error": "invalid_token", "error_description": message}),
    )
    .header(
        "www-authenticate",
        "Bearer realm=\"loopgate\", error=\"invalid_token\"",
    )
}

fn loopwise_down(navigation: bool) -> Reply {
    Reply::error(
        503,
        navigation,
        "loopwise_unreachable",
        "Loopwise is unreachable, so your sign-in cannot be renewed right now. Please try again in a moment.",
    )
    .header("retry-after", "5")
}

impl LoopgateProxy {
    /// Bearer authentication (`api` routes, and `login` routes with `accept_bearer`).
    async fn bearer(&self, headers: &http::HeaderMap, now: u64, ctx: &mut Ctx) -> Option<Reply> {
        match self.gateway.authenticate_bearer(headers, now).await {
            BearerAuth::Valid(info, _lookup) => {
                ctx.outcome = "bearer";
                let token = crate::gateway::bearer_token(headers)
                    .and_then(Result::ok)
                    .unwrap_or_default()
                    .to_string();
                ctx.auth = Some(Authenticated {
                    identity: info.identity,
                    scope: info.scope,
                    token,
                });
                None
            }
            BearerAuth::Missing => {
                ctx.outcome = "unauthorized";
                Some(invalid_token("a Bearer token is required"))
            }
            BearerAuth::Invalid => {
                ctx.outcome = "unauthorized";
                Some(invalid_token("the Bearer token is invalid or expired"))
            }
            BearerAuth::Unavailable => {
                ctx.outcome = "loopwise_unavailable";
                Some(loopwise_down(false))
            }
        }
    }

    /// Decides what to do with a request; `Some(reply)` ends it here.
    async fn decide(&self, session: &PSession, ctx: &mut Ctx) -> Option<Reply> {
        let gw = &self.gateway;
        let now = gw.clock.now();
        let req = session.req_header();
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
        let view = RequestView {
            method: &req.method,
            path: &norm,
            query: req.uri.query(),
            headers: &req.headers,
        };
        if path::under_prefix(&norm, &gw.config.server.prefix) {
            ctx.outcome = "endpoint";
            return Some(gw.endpoint(&view, now).await);
        }
        let Some(route) = gw.routes.find(&norm) else {
            ctx.outcome = "no_route";
            return Some(Reply::error(404, ctx.navigation, "not_found", "Not found"));
        };
        let upstream_path = if route.config.strip_prefix {
            path::strip(&norm, &route.config.path)
        } else {
            norm.clone()
        };
        ctx.upstream_uri = match req.uri.query() {
            Some(q) => format!("{upstream_path}?{q}"),
            None => upstream_path,
        };
        ctx.route = Some(route.clone());
        match route.config.auth {
            AuthKind::Public => {
                ctx.outcome = "public";
                None
            }
            AuthKind::Api => self.bearer(&req.headers, now, ctx).await,
            AuthKind::Login => {
                if route.config.accept_bearer
                    && req.headers.contains_key(http::header::AUTHORIZATION)
                {
                    return self.bearer(&req.headers, now, ctx).await;
                }
                match gw.authenticate_session(&req.headers, now).await {
                    SessionAuth::Active {
                        session,
                        set_cookies,
                    } => {
                        ctx.outcome = "session";
                        ctx.set_cookies = set_cookies;
                        let session = *session;
                        ctx.auth = Some(Authenticated {
                            identity: session.identity,
                            scope: session.scope,
                            token: session.access_token,
                        });
                        None
                    }
                    SessionAuth::Anonymous => {
                        ctx.outcome = if ctx.navigation {
                            "login_redirect"
                        } else {
                            "unauthorized"
                        };
                        Some(gw.challenge(&view, now))
                    }
                    SessionAuth::Ended { clear } => {
                        ctx.outcome = if ctx.navigation {
                            "login_redirect"
                        } else {
                            "unauthorized"
                        };
                        Some(gw.challenge(&view, now).cookies(clear))
                    }
                    SessionAuth::LoopwiseDown => {
                        ctx.outcome = "loopwise_unavailable";
                        Some(loopwise_down(ctx.navigation))
                    }
                }
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
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let up = &route.config.upstream;
        let mut peer = HttpPeer::new(route.addr, up.tls, up.host.clone());
        peer.options.connection_timeout = Some(route.config.connect_timeout);
        peer.options.total_connection_timeout =
            Some(route.config.connect_timeout + Duration::from_secs(5));
        peer.options.read_timeout = Some(route.config.read_timeout);
        peer.options.ca = route.ca.clone();
        // pingora's connection reuse ignores the CA: keep each route's connections apart so
        // a route with weaker trust never reuses a connection verified under another's.
        peer.group_key = route.group_key;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut PSession,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let gw = &self.gateway;
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
            upstream.insert_header("host", route.config.upstream.authority())?;
        }
        // Until trusted proxies are configurable, forwarded headers are always our own.
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", addr.ip().to_string())?;
        }
        let proto = if gw.config.server.secure {
            "https"
        } else {
            "http"
        };
        upstream.insert_header("x-forwarded-proto", proto)?;
        if let Some(h) = original_host {
            upstream.insert_header("x-forwarded-host", h)?;
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
        let upstream_cookies: Vec<String> = resp
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let is_ours = |c: &String| {
            let name = c.split('=').next().unwrap_or("").trim();
            self.gateway.is_our_cookie(name)
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
            .map(|s| s.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        tracing::info!(
            target: "loopgate::access",
            method = %req.method,
            path = %req.uri.path(),
            route = ctx.route.as_ref().map(|r| r.config.name.as_str()).unwrap_or("-"),
            status,
            duration_ms = format!("{elapsed:.2}"),
            auth = ctx.outcome,
            sub = ctx.auth.as_ref().map(|a| headers::sanitize(&a.identity.sub)).unwrap_or_default(),
            error = e.map(|e| e.etype().as_str()).unwrap_or(""),
            "request"
        );
    }
}
