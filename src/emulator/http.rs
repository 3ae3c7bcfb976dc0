//! The emulator's HTTP surface: axum handlers that translate requests into `Store`
//! calls and results into responses. No decisions are made here.
//!
//! Longer than 500 lines on purpose: one short handler per Loopwise endpoint plus the
//! extractors and error mapping they share; the decisions they translate are split by
//! endpoint in `store/`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::{ErrorCode, OAuthError};
use super::pages;
use super::params::{Params, MAX_QUERY_LEN};
use super::stats::Counters;
use super::store::{AuthorizeError, Effects, RegistrationRequest, Store};
use super::users::{self, DemoUser};
use crate::oauth::scope;

/// Largest request body read; larger ones get 413 `invalid_request`.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// A clock tests can move forward (expiry without sleeping).
#[derive(Debug, Default)]
pub(super) struct Clock {
    offset: AtomicU64,
}

impl Clock {
    pub(super) fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        real + self.offset.load(Ordering::Relaxed)
    }

    pub(super) fn advance(&self, secs: u64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

pub(super) struct Shared {
    pub store: Mutex<Store>,
    pub counters: Counters,
    pub clock: Clock,
    pub auto_user: Option<&'static DemoUser>,
    /// How long the token endpoint waits before answering (ms): a slow school.
    pub token_delay_ms: AtomicU64,
}

impl Shared {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, e: OAuthError) -> Response {
        self.counters.error(e.code.as_str());
        e.into_response()
    }

    fn effects(&self, fx: Effects) {
        self.counters.event("family_revoked", fx.families_revoked);
        self.counters.event("token_revoked", fx.tokens_revoked);
    }
}

type S = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/oauth/discovery/keys", get(jwks))
        .route("/api/oauth/register", post(register))
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/authorize/login", post(login))
        .route("/oauth/authorize/consent", post(consent))
        .route("/api/oauth/token", post(token))
        .route("/api/oauth/revoke", post(revoke))
        .route("/api/oauth/userinfo", get(userinfo))
        .route("/api/v1/me", get(api_me))
        .route("/api/v1/courses", get(api_courses))
        .route("/__emulator/stats", get(stats))
        .route("/__emulator/reset", post(reset))
        .route("/__emulator/revoke_user", post(revoke_user))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), front_limits))
        .with_state(shared)
}

/// Loopwise's front servers refuse over-long URLs and parameters before any endpoint runs,
/// so neither a page nor a redirect carrying the value comes back: a query string over
/// [`MAX_QUERY_LEN`] bytes gets 414, a query parameter over the parameter limit 400, both
/// `invalid_request` JSON. (Form bodies get the same parameter limit from [`form`].)
async fn front_limits(State(sh): S, req: Request, next: Next) -> Response {
    let query = req.uri().query().unwrap_or_default();
    if query.len() > MAX_QUERY_LEN {
        return sh.fail(
            OAuthError::invalid_request(format!("query string longer than {MAX_QUERY_LEN} bytes"))
                .with_status(StatusCode::URI_TOO_LONG),
        );
    }
    if let Err(e) = Params::parse(query.as_bytes()).check_lengths() {
        return sh.fail(e);
    }
    next.run(req).await
}

async fn not_found() -> Response {
    OAuthError::new(ErrorCode::NotFound, "no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    OAuthError::invalid_request("method not allowed for this endpoint")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
        .into_response()
}

async fn metadata(State(sh): S) -> Response {
    sh.counters.endpoint("metadata");
    Json(metadata_document(&sh)).into_response()
}

/// OpenID Connect Discovery: the same document, served only when `--openid` is on.
async fn openid_configuration(State(sh): S) -> Response {
    if sh.store().settings().openid.is_none() {
        return not_found().await;
    }
    sh.counters.endpoint("openid_configuration");
    Json(metadata_document(&sh)).into_response()
}

/// The ID-token keys (`jwks_uri`), only when `--openid` is on.
async fn jwks(State(sh): S) -> Response {
    let Some(key) = sh.store().settings().openid.clone() else {
        return not_found().await;
    };
    sh.counters.endpoint("jwks");
    Json(key.jwks()).into_response()
}

/// RFC 8414 metadata, with OpenID Connect Discovery's members when `--openid` is on.
fn metadata_document(sh: &Shared) -> serde_json::Value {
    let store = sh.store();
    let settings = store.settings();
    let issuer = &settings.issuer;
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/api/oauth/token"),
        "revocation_endpoint": format!("{issuer}/api/oauth/revoke"),
        "registration_endpoint": format!("{issuer}/api/oauth/register"),
        "userinfo_endpoint": format!("{issuer}/api/oauth/userinfo"),
        "scopes_supported": scope::LOOPWISE_SCOPES,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post"],
    });
    if settings.openid.is_some() {
        doc["jwks_uri"] = json!(format!("{issuer}/oauth/discovery/keys"));
        doc["subject_types_supported"] = json!(["public"]);
        doc["id_token_signing_alg_values_supported"] = json!(["ES256"]);
        doc["claims_supported"] = json!([
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "name",
            "email",
            "email_verified"
        ]);
    }
    doc
}

async fn read_body(body: Body) -> Result<Bytes, OAuthError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        OAuthError::invalid_request(format!("request body larger than {MAX_BODY} bytes"))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    })
}

fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// A form body, strictly parsed (RFC 6749 §3.2: form-encoded, no repeated parameters).
async fn form(headers: &HeaderMap, body: Body) -> Result<Params, OAuthError> {
    if !has_content_type(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(&read_body(body).await?);
    params.check()?;
    Ok(params)
}

async fn register(State(sh): S, headers: HeaderMap, body: Body) -> Response {
    sh.counters.endpoint("register");
    let result = async {
        let meta = |d: &str| OAuthError::new(ErrorCode::InvalidClientMetadata, d);
        if !has_content_type(&headers, "application/json") {
            return Err(meta("body must be application/json"));
        }
        let bytes = read_body(body).await?;
        let req: RegistrationRequest = serde_json::from_slice(&bytes)
            .map_err(|e| meta(&format!("body is not valid client metadata JSON: {e}")))?;
        let now = sh.clock.now();
        sh.store().register(req, now)
    }
    .await;
    match result {
        Ok(resp) => {
            sh.counters.event("client_registered", 1);
            tracing::info!(client_id = %resp.client_id, "client registered");
            let mut r = (StatusCode::CREATED, Json(resp)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => sh.fail(e),
    }
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Each pending authorization has its own cookie, so several tabs can sign in at once.
/// The id comes from a form, so only its first 16 token characters are used (a
/// multi-byte character must not split, and the name must stay a valid cookie name).
fn binding_cookie_name(request_id: &str) -> String {
    let short: String = request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(16)
        .collect();
    format!("lw_authz_{short}")
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn authorize(State(sh): S, RawQuery(query): RawQuery) -> Response {
    sh.counters.endpoint("authorize");
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let now = sh.clock.now();
    let begun = sh.store().begin_authorize(&params, now);
    let req = match begun {
        Ok(req) => req,
        Err(AuthorizeError::Page(e)) => {
            sh.counters.error(e.code.as_str());
            return html(StatusCode::BAD_REQUEST, pages::error(&e));
        }
        Err(AuthorizeError::Redirect(location, e)) => {
            sh.counters.error(e.code.as_str());
            return redirect(StatusCode::FOUND, &location);
        }
    };
    if let Some(user) = sh.auto_user {
        let location = sh.store().auto_approve(&req, user.sub, now);
        sh.counters.event("code_issued", 1);
        return redirect(StatusCode::FOUND, &location);
    }
    let mut r = html(StatusCode::OK, pages::login(&req));
    let cookie = format!(
        "{}={}; Path=/oauth/authorize; Max-Age=600; HttpOnly; SameSite=Lax",
        binding_cookie_name(&req.id),
        req.csrf
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Reads a login/consent form and checks it came from the browser that saw the page.
async fn page_form(
    headers: &HeaderMap,
    body: Body,
) -> Result<(Params, String, String), OAuthError> {
    let params = form(headers, body).await?;
    let id = params.require("request_id")?.to_string();
    let csrf = params.require("csrf")?.to_string();
    if cookie_value(headers, &binding_cookie_name(&id)) != Some(csrf.as_str()) {
        return Err(OAuthError::invalid_request(
            "the form does not belong to this browser (CSRF check failed)",
        ));
    }
    Ok((params, id, csrf))
}

async fn login(State(sh): S, headers: HeaderMap, body: Body) -> Response {
    sh.counters.endpoint("login");
    let result = async {
        let (params, id, csrf) = page_form(&headers, body).await?;
        let user = params.require("user")?.to_string();
        let now = sh.clock.now();
        sh.store().login(&id, &csrf, &user, now)
    }
    .await;
    match result {
        Ok(req) => {
            let name = req
                .user
                .as_deref()
                .and_then(users::find)
                .map(|u| u.name)
                .unwrap_or("");
            html(StatusCode::OK, pages::consent(&req, name))
        }
        Err(e) => {
            sh.counters.error(e.code.as_str());
            html(StatusCode::BAD_REQUEST, pages::error(&e))
        }
    }
}

async fn consent(State(sh): S, headers: HeaderMap, body: Body) -> Response {
    sh.counters.endpoint("consent");
    let result = async {
        let (params, id, csrf) = page_form(&headers, body).await?;
        let approve = match params.require("decision")? {
            "approve" => true,
            "deny" => false,
            _ => {
                return Err(OAuthError::invalid_request(
                    "decision must be approve or deny",
                ))
            }
        };
        let now = sh.clock.now();
        let location = sh.store().decide(&id, &csrf, approve, now)?;
        Ok((id, approve, location))
    }
    .await;
    match result {
        Ok((id, approve, location)) => {
            if approve {
                sh.counters.event("code_issued", 1);
            } else {
                sh.counters.error(ErrorCode::AccessDenied.as_str());
            }
            let mut r = redirect(StatusCode::SEE_OTHER, &location);
            let clear = format!(
                "{}=; Path=/oauth/authorize; Max-Age=0; HttpOnly; SameSite=Lax",
                binding_cookie_name(&id)
            );
            if let Ok(v) = HeaderValue::from_str(&clear) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            sh.counters.error(e.code.as_str());
            html(StatusCode::BAD_REQUEST, pages::error(&e))
        }
    }
}

async fn token(State(sh): S, headers: HeaderMap, body: Body) -> Response {
    sh.counters.endpoint("token");
    let delay = sh.token_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        // Before the grant is looked at: a caller that gives up meanwhile spends nothing.
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let params = match form(&headers, body).await {
        Ok(p) => p,
        Err(e) => {
            sh.counters.grant("unknown", e.code.as_str());
            return sh.fail(e);
        }
    };
    let grant = match params.get("grant_type") {
        Some(g @ ("authorization_code" | "refresh_token")) => g,
        Some(_) => "unsupported",
        None => "missing",
    };
    let now = sh.clock.now();
    let result = {
        let mut store = sh.store();
        match store.authenticate_client(&params) {
            Err(e) => Err((e, Effects::default())),
            Ok(client) => {
                let client_id = client.id.clone();
                let allowed = client.grant_types.iter().any(|g| g == grant);
                match grant {
                    "missing" => Err((
                        OAuthError::invalid_request("missing parameter `grant_type`"),
                        Effects::default(),
                    )),
                    "unsupported" => Err((
                        OAuthError::new(
                            ErrorCode::UnsupportedGrantType,
                            "only authorization_code and refresh_token are supported",
                        ),
                        Effects::default(),
                    )),
                    _ if !allowed => Err((
                        OAuthError::new(
                            ErrorCode::UnauthorizedClient,
                            "client is not registered for this grant type",
                        ),
                        Effects::default(),
                    )),
                    "authorization_code" => store.exchange_code(&client_id, &params, now),
                    _ => store.refresh(&client_id, &params, now),
                }
            }
        }
    };
    match result {
        Ok((resp, fx)) => {
            sh.effects(fx);
            sh.counters.grant(grant, "ok");
            sh.counters
                .event("id_token_issued", u64::from(resp.id_token.is_some()));
            let mut r = Json(resp).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            r
        }
        Err((e, fx)) => {
            sh.effects(fx);
            sh.counters.grant(grant, e.code.as_str());
            sh.fail(e)
        }
    }
}

async fn revoke(State(sh): S, headers: HeaderMap, body: Body) -> Response {
    sh.counters.endpoint("revoke");
    let result = async {
        let params = form(&headers, body).await?;
        let token = params.require("token")?.to_string();
        let now = sh.clock.now();
        let mut store = sh.store();
        let client_id = store.authenticate_client(&params)?.id.clone();
        Ok(store.revoke(&client_id, &token, now))
    }
    .await;
    match result {
        // RFC 7009 §2.2: 200 whether or not the token was known.
        Ok(fx) => {
            sh.effects(fx);
            StatusCode::OK.into_response()
        }
        Err(e) => sh.fail(e),
    }
}

/// The Bearer token of a request (RFC 6750 §2.1); exactly one Authorization header.
fn bearer(headers: &HeaderMap) -> Result<&str, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| OAuthError::invalid_token("missing bearer token"))?;
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_token("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(OAuthError::invalid_token(
            "Authorization is not a Bearer token",
        )),
    }
}

fn authenticated(sh: &Shared, headers: &HeaderMap) -> Result<super::store::TokenInfo, OAuthError> {
    let token = bearer(headers)?;
    let now = sh.clock.now();
    sh.store().authenticate_bearer(token, now)
}

async fn userinfo(State(sh): S, headers: HeaderMap) -> Response {
    sh.counters.endpoint("userinfo");
    match authenticated(&sh, &headers) {
        Ok(info) => {
            let school = sh.store().settings().school_id;
            let u = info.user;
            Json(json!({
                "sub": u.sub,
                "name": u.name,
                "email": u.email,
                "email_verified": u.email_verified,
                "org_id": school,
                "roles": u.roles,
            }))
            .into_response()
        }
        Err(e) => sh.fail(e),
    }
}

/// Resource API guard: valid token holding one of `any_of`.
fn resource(
    sh: &Shared,
    headers: &HeaderMap,
    any_of: &[&str],
) -> Result<super::store::TokenInfo, OAuthError> {
    let info = authenticated(sh, headers)?;
    if !any_of.iter().any(|s| info.scopes.iter().any(|g| g == s)) {
        let mut e = OAuthError::new(
            ErrorCode::InsufficientScope,
            format!("this endpoint needs scope {}", any_of.join(" or ")),
        );
        e.scope = Some(any_of[0].to_string());
        return Err(e);
    }
    Ok(info)
}

async fn api_me(State(sh): S, headers: HeaderMap) -> Response {
    sh.counters.endpoint("api_me");
    match resource(&sh, &headers, &["read"]) {
        Ok(info) => {
            let school = sh.store().settings().school_id;
            Json(json!({
                "sub": info.user.sub,
                "name": info.user.name,
                "email": info.user.email,
                "roles": info.user.roles,
                "school_id": school,
                "scope": scope::join(&info.scopes),
                "client_id": info.client_id,
            }))
            .into_response()
        }
        Err(e) => sh.fail(e),
    }
}

async fn api_courses(State(sh): S, headers: HeaderMap) -> Response {
    sh.counters.endpoint("api_courses");
    match resource(&sh, &headers, &["courses:read", "read"]) {
        Ok(_) => Json(json!({
            "courses": [
                {"id": 101, "title": "Analytical Engines 101", "students": 24},
                {"id": 102, "title": "Compilers for Everyone", "students": 31},
                {"id": 103, "title": "Computable Numbers", "students": 17},
            ]
        }))
        .into_response(),
        Err(e) => sh.fail(e),
    }
}

async fn stats(State(sh): S) -> Response {
    Json(sh.counters.snapshot()).into_response()
}

/// `POST /__emulator/revoke_user?sub=ada`: revoke every grant of a user.
async fn revoke_user(State(sh): S, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    match params.require("sub") {
        Ok(sub) => {
            let n = sh.store().revoke_user(sub);
            sh.counters.event("family_revoked", n);
            Json(json!({ "revoked": n })).into_response()
        }
        Err(e) => sh.fail(e),
    }
}

async fn reset(State(sh): S) -> Response {
    sh.counters.reset();
    StatusCode::NO_CONTENT.into_response()
}
