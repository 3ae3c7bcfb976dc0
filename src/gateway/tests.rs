//! The gateway's decisions and their rendering, on a gateway built from a config in
//! process: no listener, Loopwise unreachable (a decision that needs it must say so),
//! Bearer tokens validated locally (HS256).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;

use super::denial::{Credential, Granted, TokenProblem};
use super::*;
use crate::metrics::Metrics;
use crate::oauth::http::{HttpClient, HttpRequest, HttpResponse, TransportError};
use crate::oauth::Metadata;
use crate::session::Identity;

const NOW: u64 = 1_900_000_000;
const JWT_SECRET: &str = "unit-test-jwt-secret-of-reasonable-length";
const SESSION_SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Loopwise is down for every call.
struct Down;

#[async_trait]
impl HttpClient for Down {
    async fn execute(&self, _req: HttpRequest) -> Result<HttpResponse, TransportError> {
        Err(TransportError("connection refused".into()))
    }
}

fn gateway() -> Gateway {
    let toml = r#"
[server]
listen = "127.0.0.1:8080"
public_url = "https://gw.test"

[loopwise]
issuer = "https://lw.test"
client_id = "cid"
jwt_secret = { env = "JWT" }

[session]
secrets = [{ env = "SECRET" }]

[[routes]]
name = "public"
path = "/public/"
upstream = "http://127.0.0.1:9000"
auth = "public"

[[routes]]
name = "admin"
path = "/admin/"
upstream = "http://127.0.0.1:9000"
auth = "login"
roles = ["admin"]

[[routes]]
name = "api"
path = "/api/"
upstream = "http://127.0.0.1:9000"
auth = "api"
scopes = ["courses:write"]

[[routes]]
name = "app"
path = "/"
upstream = "http://127.0.0.1:9000"
auth = "login"
skip_auth_methods = ["OPTIONS"]
"#;
    let env = |k: &str| match k {
        "JWT" => Some(JWT_SECRET.to_string()),
        "SECRET" => Some(SESSION_SECRET.to_string()),
        _ => None,
    };
    let config = crate::config::parse(toml, Path::new("."), &env).expect("valid config");
    let routes = RouteTable::new(&config.routes);
    let loopwise = LoopwiseClient::new(
        Arc::new(Down),
        Metadata::fixture(),
        "cid".into(),
        None,
        "https://gw.test/oauth2/callback".into(),
    );
    let shared = Shared::local(Arc::new(Metrics::new()), Duration::from_secs(30));
    Gateway::new(
        Arc::new(shared),
        Arc::new(config),
        routes,
        crate::oauth::Schools::single(loopwise),
    )
}

fn route(gw: &Gateway, name: &str) -> Arc<crate::routes::Route> {
    gw.routes
        .iter()
        .find(|r| r.config.name == name)
        .expect("route")
        .clone()
}

fn view<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        method,
        host: Some("gw.test"),
        peer: None,
        path,
        query: None,
        headers,
    }
}

fn navigation() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept", HeaderValue::from_static("text/html"));
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    h
}

fn session(roles: &[&str], access_expires_at: u64) -> Session {
    Session {
        sid: "sid-1".into(),
        issuer_id: crate::oauth::DEFAULT_SCHOOL.into(),
        identity: Identity {
            sub: "ada".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        },
        scope: "read".into(),
        access_token: "session-at".into(),
        refresh_token: Some("session-rt".into()),
        access_expires_at,
        access_issued_at: NOW - 60,
        created_at: NOW - 60,
        expires_at: NOW + 86_400,
        origin: None,
        id_token: None,
    }
}

/// `headers` carrying `session`'s cookies as the gateway set them.
async fn with_session(gw: &Gateway, s: &Session, mut headers: HeaderMap) -> HeaderMap {
    let set = gw.session_cookies(s, &HeaderMap::new(), NOW).await.unwrap();
    let pairs: Vec<&str> = set.iter().map(|c| c.split(';').next().unwrap()).collect();
    headers.insert("cookie", pairs.join("; ").parse().unwrap());
    headers
}

fn bearer(scope: &str) -> HeaderMap {
    let claims = json!({"iss": "https://lw.test", "sub": "api-client", "scope": scope,
                        "iat": NOW - 10, "exp": NOW + 600});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn public_routes_and_skipped_methods_pass_without_credentials() {
    let gw = gateway();
    let h = HeaderMap::new();
    let d = gw
        .authorize(
            &route(&gw, "public"),
            &view(&Method::GET, "/public/x", &h),
            NOW,
        )
        .await;
    assert!(matches!(
        d,
        Decision::Allow {
            auth: None,
            granted: Granted::Public,
            ..
        }
    ));
    let d = gw
        .authorize(&route(&gw, "app"), &view(&Method::OPTIONS, "/x", &h), NOW)
        .await;
    assert!(matches!(
        d,
        Decision::Allow {
            auth: None,
            granted: Granted::SkipAuth,
            ..
        }
    ));
    let d = gw
        .authorize(&route(&gw, "app"), &view(&Method::GET, "/x", &h), NOW)
        .await;
    assert!(matches!(d, Decision::Deny { .. }), "GET is not skipped");
}

#[tokio::test]
async fn no_session_means_login_for_a_browser_and_401_for_a_script() {
    let gw = gateway();
    let nav = navigation();
    let v = view(&Method::GET, "/page", &nav);
    let Decision::Deny { denial, audience } = gw.authorize(&route(&gw, "app"), &v, NOW).await
    else {
        panic!("anonymous request allowed");
    };
    assert!(matches!(denial, Denial::LoginRequired { .. }));
    assert_eq!(audience, Audience::Browser);
    let reply = gw.render(denial, audience, &v, NOW);
    assert_eq!(reply.status, 302);
    let location = header(&reply, "location").unwrap();
    assert!(
        location.starts_with("https://lw.test/oauth/authorize?"),
        "{location}"
    );
    assert!(location.contains("code_challenge_method=S256"));
    assert!(
        header(&reply, "set-cookie").is_some(),
        "the login state cookie"
    );

    let xhr = HeaderMap::new();
    let v = view(&Method::GET, "/data.json", &xhr);
    let Decision::Deny { denial, audience } = gw.authorize(&route(&gw, "app"), &v, NOW).await
    else {
        panic!("anonymous request allowed");
    };
    assert_eq!(audience, Audience::Api);
    let reply = gw.render(denial, audience, &v, NOW);
    assert_eq!(reply.status, 401);
    assert!(
        header(&reply, "location").is_none(),
        "never a redirect for a script"
    );
    assert!(header(&reply, "www-authenticate").is_some());
}

#[tokio::test]
async fn a_session_is_forwarded_with_its_token_and_checked_against_the_route() {
    let gw = gateway();
    let headers = with_session(&gw, &session(&["teacher"], NOW + 600), navigation()).await;
    let v = view(&Method::GET, "/page", &headers);
    let Decision::Allow {
        auth: Some(auth),
        granted,
        ..
    } = gw.authorize(&route(&gw, "app"), &v, NOW).await
    else {
        panic!("session refused");
    };
    assert_eq!(granted, Granted::Session);
    assert_eq!(
        (auth.identity.sub.as_str(), auth.token.as_str()),
        ("ada", "session-at")
    );

    let v = view(&Method::GET, "/admin/x", &headers);
    let Decision::Deny { denial, audience } = gw.authorize(&route(&gw, "admin"), &v, NOW).await
    else {
        panic!("a teacher passed an admin route");
    };
    let Denial::Forbidden {
        missing,
        via: Credential::Session { identity, .. },
    } = &denial
    else {
        panic!("{denial:?}");
    };
    assert_eq!(identity.sub, "ada");
    assert_eq!(missing.roles, ["admin"], "{missing:?}");
    assert!(missing.scopes.is_empty());
    assert_eq!(gw.render(denial, audience, &v, NOW).status, 403);
}

#[tokio::test]
async fn an_expired_token_with_loopwise_down_is_unavailable_not_a_logout() {
    let gw = gateway();
    let headers = with_session(&gw, &session(&[], NOW - 1), navigation()).await;
    let v = view(&Method::GET, "/page", &headers);
    let Decision::Deny { denial, audience } = gw.authorize(&route(&gw, "app"), &v, NOW).await
    else {
        panic!("an expired access token was forwarded");
    };
    assert!(matches!(denial, Denial::LoopwiseUnavailable), "{denial:?}");
    let reply = gw.render(denial, audience, &v, NOW);
    assert_eq!(reply.status, 503);
    assert!(
        !reply
            .headers
            .iter()
            .any(|(k, v)| *k == "set-cookie" && v.contains("Max-Age=0")),
        "the session cookie is kept"
    );
}

#[tokio::test]
async fn a_session_of_a_school_the_gateway_does_not_serve_is_no_session() {
    let gw = gateway();
    let mut s = session(&[], NOW + 600);
    s.issuer_id = "elsewhere".into();
    // Sealed by this gateway's keys into the only school's cookie, as a cookie made
    // before a school was removed would be.
    let name = gw
        .session_cookie_name(crate::oauth::DEFAULT_SCHOOL)
        .unwrap()
        .to_string();
    let payload = gw.shared.store.save(&s, None).await.unwrap();
    let sealed = gw.session_keys.seal(&name, &payload);
    let mut headers = navigation();
    headers.insert("cookie", format!("{name}={sealed}").parse().unwrap());
    let v = view(&Method::GET, "/page", &headers);
    let d = gw.authorize(&route(&gw, "app"), &v, NOW).await;
    assert!(
        matches!(
            d,
            Decision::Deny {
                denial: Denial::LoginRequired { .. },
                ..
            }
        ),
        "{d:?}"
    );
}

#[tokio::test]
async fn bearer_tokens_on_api_routes() {
    let gw = gateway();
    let api = route(&gw, "api");
    let h = bearer("read courses:write");
    let v = view(&Method::POST, "/api/x", &h);
    let Decision::Allow {
        auth: Some(auth),
        granted,
        ..
    } = gw.authorize(&api, &v, NOW).await
    else {
        panic!("valid token refused");
    };
    assert_eq!(granted, Granted::Bearer);
    assert_eq!(auth.identity.sub, "api-client");
    assert!(
        auth.token.starts_with("ey"),
        "the client's own token goes upstream"
    );

    let h = bearer("read");
    let v = view(&Method::POST, "/api/x", &h);
    let Decision::Deny { denial, audience } = gw.authorize(&api, &v, NOW).await else {
        panic!("token without the scope allowed");
    };
    assert!(matches!(
        denial,
        Denial::Forbidden {
            via: Credential::Bearer,
            ..
        }
    ));
    let reply = gw.render(denial, audience, &v, NOW);
    assert_eq!(reply.status, 403);
    assert!(header(&reply, "www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));

    let none = HeaderMap::new();
    let d = gw
        .authorize(&api, &view(&Method::GET, "/api/x", &none), NOW)
        .await;
    assert!(matches!(
        d,
        Decision::Deny {
            denial: Denial::InvalidToken(TokenProblem::Missing),
            audience: Audience::Api
        }
    ));
    let mut forged = bearer("courses:write");
    let value = forged["authorization"].to_str().unwrap().to_string();
    forged.insert("authorization", format!("{value}x").parse().unwrap());
    let d = gw
        .authorize(&api, &view(&Method::GET, "/api/x", &forged), NOW)
        .await;
    assert!(matches!(
        d,
        Decision::Deny {
            denial: Denial::InvalidToken(TokenProblem::Invalid),
            ..
        }
    ));
    // A navigation with a Bearer still gets JSON, never a login redirect.
    let mut nav = navigation();
    nav.insert("authorization", HeaderValue::from_static("Bearer nope"));
    let d = gw
        .authorize(&api, &view(&Method::GET, "/api/x", &nav), NOW)
        .await;
    assert!(matches!(
        d,
        Decision::Deny {
            audience: Audience::Api,
            ..
        }
    ));
}
