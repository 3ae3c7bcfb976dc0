//! Gateway test rig: an echo upstream, a gateway built from TOML on a free port, and a
//! browser-like client with a cookie jar that follows redirects by hand.

use std::net::SocketAddr;
use std::path::Path;

use axum::http::HeaderMap;
use axum::routing::any;
use axum::Router;
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use loopgate::config;
use loopgate::emulator::{ClientSpec, Emulator, EmulatorConfig, EmulatorHandle};
use loopgate::server::GatewayHandle;

use super::{finish_login, http, open_login_page, LoginPage};

pub const SECRET_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="; // 32 × 'A'
pub const SECRET_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="; // 32 × 'B'

/// A port for a listener the test configures by number (pingora cannot report the port
/// it bound to 0). Chosen below the kernel's ephemeral range, so no outgoing connection
/// and no `bind(0)` elsewhere can take it between now and the bind; never the same port
/// twice in one test binary. Falls back to `bind(0)` when the range leaves no room.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10_000;
    if ephemeral_low > LOW + 1_000 {
        let span = u64::from(ephemeral_low - LOW);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..1_000 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let port = LOW + (h.finish() % span) as u16;
            if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed.push(port);
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An upstream that answers every request with a JSON echo of what it received.
pub struct Echo {
    pub addr: SocketAddr,
}

async fn echo(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> axum::Json<Value> {
    let mut h = serde_json::Map::new();
    for (k, v) in headers.iter() {
        let entry = h.entry(k.as_str().to_string()).or_insert_with(|| json!([]));
        entry
            .as_array_mut()
            .unwrap()
            .push(json!(String::from_utf8_lossy(v.as_bytes())));
    }
    axum::Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": h,
    }))
}

pub async fn echo_upstream() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(any(echo)))
            .await
            .unwrap();
    });
    Echo { addr }
}

/// The first value of header `name` in an echo body.
/// The Prometheus text of the admin listener at `admin` (`host:port`).
pub async fn scrape(admin: impl std::fmt::Display) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("the admin listener answers")
        .text()
        .await
        .expect("a metrics body")
}

pub fn echoed<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body["headers"][name][0].as_str()
}

/// Options for one gateway under test.
pub struct Setup {
    pub port: u16,
    /// The admin listener's port (`/metrics`, `/healthz`, `/readyz`).
    pub admin_port: u16,
    pub public_url: String,
    pub secrets: Vec<&'static str>,
    pub client_id: Option<String>,
    pub registration_file: Option<String>,
    /// Extra TOML appended (more routes).
    pub extra: String,
    /// Extra keys for the `[server]`, `[loopwise]` and `[session]` tables.
    pub server_extra: String,
    pub loopwise_extra: String,
    pub session_extra: String,
    pub app: SocketAddr,
    pub issuer: String,
}

impl Setup {
    pub fn new(issuer: &str, app: SocketAddr) -> Setup {
        let port = free_port();
        Setup {
            port,
            admin_port: free_port(),
            public_url: format!("http://127.0.0.1:{port}"),
            secrets: vec![SECRET_A],
            client_id: Some(super::CLIENT.into()),
            registration_file: None,
            extra: String::new(),
            server_extra: String::new(),
            loopwise_extra: String::new(),
            session_extra: String::new(),
            app,
            issuer: issuer.to_string(),
        }
    }

    pub fn callback(&self) -> String {
        format!("{}/oauth2/callback", self.public_url)
    }

    pub fn toml(&self) -> String {
        let secrets: Vec<String> = self.secrets.iter().map(|s| format!("\"{s}\"")).collect();
        let client = match &self.client_id {
            Some(id) => format!("client_id = \"{id}\""),
            None => String::new(),
        };
        let reg = match &self.registration_file {
            Some(f) => format!("registration_file = \"{f}\""),
            None => String::new(),
        };
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "{public_url}"
threads = 2
admin_listen = "127.0.0.1:{admin_port}"
{server_extra}

[loopwise]
issuer = "{issuer}"
{client}
{reg}
scopes = ["read", "courses:read"]
timeout = "3s"
{loopwise_extra}

[session]
secrets = [{secrets}]
{session_extra}

[[routes]]
name = "app"
path = "/"
upstream = "http://{app}"
auth = "login"

[[routes]]
name = "loopwise-api"
path = "/loopwise/"
upstream = "{issuer}"
strip_prefix = true
preserve_host = false
auth = "login"

[[routes]]
name = "public"
path = "/public"
upstream = "http://{app}"
auth = "public"

[[routes]]
name = "api"
path = "/api"
upstream = "http://{app}"
auth = "api"
{extra}
"#,
            port = self.port,
            admin_port = self.admin_port,
            public_url = self.public_url,
            issuer = self.issuer,
            secrets = secrets.join(", "),
            app = self.app,
            extra = self.extra,
            loopwise_extra = self.loopwise_extra,
            server_extra = self.server_extra,
            session_extra = self.session_extra,
        )
    }

    pub async fn start(&self) -> GatewayHandle {
        let cfg =
            config::parse(&self.toml(), Path::new("."), &|_| None).expect("test config is valid");
        GatewayHandle::start(cfg).await.expect("gateway starts")
    }
}

/// Emulator + echo upstream + gateway, with the gateway's callback registered.
pub struct Rig {
    pub em: EmulatorHandle,
    pub echo: Echo,
    pub setup: Setup,
    pub gw: GatewayHandle,
}

pub async fn rig() -> Rig {
    rig_with(|_| {}, |_| {}).await
}

pub async fn rig_with(
    em_cfg: impl FnOnce(&mut EmulatorConfig),
    setup: impl FnOnce(&mut Setup),
) -> Rig {
    let echo = echo_upstream().await;
    let port = free_port();
    let mut ec = EmulatorConfig {
        jwt_secret: Some("test-jwt-secret-of-reasonable-length".into()),
        ..EmulatorConfig::default()
    };
    em_cfg(&mut ec);
    let em = Emulator::start(ec).await.unwrap();
    let mut s = Setup::new(em.url(), echo.addr);
    s.port = port;
    s.public_url = format!("http://127.0.0.1:{port}");
    setup(&mut s);
    em.add_client(&ClientSpec {
        id: super::CLIENT.into(),
        secret: None,
        redirect_uri: s.callback(),
    });
    // Also the redirect URI `common::tokens_for` uses, so tests can mint API tokens.
    em.add_client(&ClientSpec {
        id: super::CLIENT.into(),
        secret: None,
        redirect_uri: super::REDIRECT.into(),
    });
    let gw = s.start().await;
    Rig {
        em,
        echo,
        setup: s,
        gw,
    }
}

impl Rig {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.setup.port)
    }
}

/// A cookie as a browser keeps it.
#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: String,
    pub raw: String,
}

/// A minimal browser cookie jar for one origin (path-scoped, Max-Age=0 deletes).
#[derive(Debug, Clone, Default)]
pub struct Jar {
    pub cookies: Vec<Cookie>,
}

impl Jar {
    pub fn absorb(&mut self, headers: &reqwest::header::HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let raw = v.to_str().unwrap().to_string();
            let mut parts = raw.split(';');
            let (name, value) = parts.next().unwrap().trim().split_once('=').unwrap();
            let mut path = "/".to_string();
            let mut delete = false;
            for attr in parts {
                let attr = attr.trim();
                if let Some(p) = attr.strip_prefix("Path=") {
                    path = p.to_string();
                }
                if attr == "Max-Age=0" {
                    delete = true;
                }
            }
            self.cookies.retain(|c| !(c.name == name && c.path == path));
            if !delete {
                self.cookies.push(Cookie {
                    name: name.to_string(),
                    value: value.to_string(),
                    path,
                    raw,
                });
            }
        }
    }

    pub fn header_for(&self, path: &str) -> String {
        self.cookies
            .iter()
            .filter(|c| path.starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get(&self, name: &str) -> Option<&Cookie> {
        self.cookies.iter().find(|c| c.name == name)
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|c| c.name != name);
        self.cookies.push(Cookie {
            name: name.into(),
            value: value.into(),
            path: "/".into(),
            raw: String::new(),
        });
    }
}

/// What a response looked like, fully read.
#[derive(Debug)]
pub struct Seen {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    pub fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .unwrap_or_else(|| panic!("no Location; status {} body {}", self.status, self.body))
            .to_str()
            .unwrap()
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

/// A browser talking to the gateway: a jar, and every response it saw.
pub struct Browser {
    pub jar: Jar,
    pub base: String,
    pub seen: Vec<String>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            jar: Jar::default(),
            base: base.trim_end_matches('/').to_string(),
            seen: Vec::new(),
        }
    }

    /// A request to the gateway with the jar's cookies; absorbs Set-Cookie.
    pub async fn request(
        &mut self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Seen {
        let path = path_and_query.split('?').next().unwrap();
        let mut rb = http().request(method, format!("{}{path_and_query}", self.base));
        let cookie = self.jar.header_for(path);
        if !cookie.is_empty() {
            rb = rb.header("cookie", cookie);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        self.jar.absorb(&headers);
        self.seen.push(format!("{status} {headers:?} {body}"));
        Seen {
            status,
            headers,
            body,
        }
    }

    /// A top-level navigation (what a browser sends when following a link).
    pub async fn navigate(&mut self, path: &str) -> Seen {
        self.request(
            reqwest::Method::GET,
            path,
            &[
                ("accept", "text/html,application/xhtml+xml"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
        .await
    }

    /// A `fetch()` from page JavaScript.
    pub async fn xhr(&mut self, path: &str) -> Seen {
        self.request(
            reqwest::Method::GET,
            path,
            &[("accept", "application/json"), ("sec-fetch-mode", "cors")],
        )
        .await
    }

    /// Follows a gateway redirect to Loopwise, signs in as `user` on the emulator's pages,
    /// and returns the callback path (not yet visited).
    pub async fn through_loopwise(
        &mut self,
        authorize_url: &str,
        emulator_base: &str,
        user: &str,
    ) -> String {
        let page: LoginPage = open_login_page(&http(), authorize_url).await;
        let back = finish_login(&http(), emulator_base, &page, user, true).await;
        let u = url::Url::parse(&back).unwrap();
        format!("{}?{}", u.path(), u.query().unwrap_or(""))
    }

    /// A whole login starting from `path`; returns the final response (the redirect to the
    /// original target).
    pub async fn login(&mut self, path: &str, emulator_base: &str, user: &str) -> Seen {
        let start = self.navigate(path).await;
        assert_eq!(start.status, StatusCode::FOUND, "{}", start.body);
        let callback = self
            .through_loopwise(&start.location(), emulator_base, user)
            .await;
        let done = self.navigate(&callback).await;
        assert_eq!(
            done.status,
            StatusCode::FOUND,
            "callback failed: {}",
            done.body
        );
        done
    }
}

/// Sends `GET <path>` byte for byte (reqwest would normalise `\`, `%2e` and `..` the way
/// a browser does, hiding what an attacker's raw client can send). Returns status and body.
pub async fn raw_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A test CA and a server certificate it signed for 127.0.0.1.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub leaf_pem: String,
    pub key_pem: String,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Loopgate test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        leaf_der: leaf.der().to_vec(),
        key_der: leaf_key.serialize_der(),
        leaf_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// An https echo upstream on 127.0.0.1 presenting `pki`'s server certificate.
pub async fn tls_echo_upstream(pki: &TestPki) -> SocketAddr {
    use hyper_util::rt::TokioIo;
    use tokio_rustls::rustls;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(
                pki.leaf_der.clone(),
            )],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let (parts, _) = req.into_parts();
                        let axum::Json(v) = echo(parts.method, parts.uri, parts.headers).await;
                        let mut v = v;
                        v["tls"] = json!(true);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(v.to_string()))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}
