//! Shared helpers for integration tests: an HTTP client that never follows redirects,
//! and a driver for the emulator's login and consent pages.
#![allow(dead_code)]

pub mod gw;
pub mod oidc;
pub mod raw;
pub mod redis;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

use loopgate::emulator::{ClientSpec, Emulator, EmulatorConfig, EmulatorHandle};
use loopgate::oauth::pkce;

pub const REDIRECT: &str = "http://127.0.0.1:9/oauth2/callback";
pub const CLIENT: &str = "test-app";

/// A client that shows redirects instead of following them.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

/// An emulator with one public client (`CLIENT` → `REDIRECT`) and a known JWT secret.
pub async fn emulator() -> EmulatorHandle {
    emulator_with(|_| {}).await
}

pub async fn emulator_with(f: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    let mut cfg = EmulatorConfig {
        jwt_secret: Some("test-jwt-secret-of-reasonable-length".into()),
        clients: vec![ClientSpec {
            id: CLIENT.into(),
            secret: None,
            redirect_uri: REDIRECT.into(),
        }],
        ..EmulatorConfig::default()
    };
    f(&mut cfg);
    Emulator::start(cfg).await.expect("emulator starts")
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let v = pkce::Verifier::generate();
    Pkce {
        challenge: v.challenge(),
        verifier: v.secret().to_string(),
    }
}

/// An authorize URL; `extra` pairs are appended (and may repeat or override nothing).
pub fn authorize_url(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    format!("{base}/oauth/authorize?{}", ser.finish())
}

/// The standard, valid authorize parameters for `CLIENT`.
pub fn standard_authorize(base: &str, challenge: &str, scope: &str, state: &str) -> String {
    authorize_url(
        base,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", state),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
}

/// The value of `<input ... name="NAME" value="VALUE">` in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_string()
}

pub fn location(headers: &HeaderMap) -> String {
    headers
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let u = url::Url::parse(url).expect("absolute URL");
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `name=value` part of the first Set-Cookie.
pub fn set_cookie_pair(headers: &HeaderMap) -> String {
    headers
        .get(SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// A login page that has been shown: the binding cookie and the form fields.
pub struct LoginPage {
    pub cookie: String,
    pub request_id: String,
    pub csrf: String,
}

pub async fn open_login_page(http: &reqwest::Client, url: &str) -> LoginPage {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "login page expected");
    let cookie = set_cookie_pair(r.headers());
    let html = r.text().await.unwrap();
    assert!(html.contains("Sign in to Loopwise"));
    LoginPage {
        cookie,
        request_id: hidden(&html, "request_id"),
        csrf: hidden(&html, "csrf"),
    }
}

/// Picks `user` on the login page and answers the consent page; returns the redirect.
pub async fn finish_login(
    http: &reqwest::Client,
    base: &str,
    page: &LoginPage,
    user: &str,
    approve: bool,
) -> String {
    let r = http
        .post(format!("{base}/oauth/authorize/login"))
        .header("cookie", &page.cookie)
        .form(&[
            ("request_id", page.request_id.as_str()),
            ("csrf", page.csrf.as_str()),
            ("user", user),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "consent page expected");
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"approve\""), "consent page: {html}");
    let r = http
        .post(format!("{base}/oauth/authorize/consent"))
        .header("cookie", &page.cookie)
        .form(&[
            ("request_id", page.request_id.as_str()),
            ("csrf", page.csrf.as_str()),
            ("decision", if approve { "approve" } else { "deny" }),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    location(r.headers())
}

/// Full browser-style login as `user`; returns the authorization code.
pub async fn get_code(
    http: &reqwest::Client,
    base: &str,
    p: &Pkce,
    scope: &str,
    user: &str,
) -> String {
    let page = open_login_page(http, &standard_authorize(base, &p.challenge, scope, "st-1")).await;
    let back = finish_login(http, base, &page, user, true).await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-1"));
    query_param(&back, "code").expect("code in redirect")
}

/// POSTs a form to the token endpoint; returns status and JSON body.
pub async fn token(
    http: &reqwest::Client,
    base: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    post_form(http, &format!("{base}/api/oauth/token"), form).await
}

pub async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = http.post(url).form(form).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

/// Exchanges `code` for tokens as `CLIENT`; panics unless it succeeds.
pub async fn exchange(http: &reqwest::Client, base: &str, code: &str, verifier: &str) -> Value {
    let (status, body) = token(
        http,
        base,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub async fn refresh(
    http: &reqwest::Client,
    base: &str,
    refresh_token: &str,
) -> (StatusCode, Value) {
    token(
        http,
        base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT),
        ],
    )
    .await
}

/// GETs `path` with a Bearer token; returns status, WWW-Authenticate and JSON body.
pub async fn bearer_get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> (StatusCode, Option<String>, Value) {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, challenge, r.json().await.unwrap_or(Value::Null))
}

/// Full login + code exchange as `user` with `scope`: the token response.
pub async fn tokens_for(http: &reqwest::Client, base: &str, scope: &str, user: &str) -> Value {
    let p = pkce();
    let code = get_code(http, base, &p, scope, user).await;
    exchange(http, base, &code, &p.verifier).await
}
