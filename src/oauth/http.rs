//! The seam between pure OAuth request building/parsing and the network.

use std::time::Duration;

use async_trait::async_trait;

/// An outgoing request, fully built by pure code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn get(url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            method: http::Method::GET,
            url: url.into(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        }
    }

    /// A form POST; `pairs` are encoded with `application/x-www-form-urlencoded`.
    pub fn form(url: impl Into<String>, pairs: &[(&str, &str)]) -> HttpRequest {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            ser.append_pair(k, v);
        }
        HttpRequest {
            method: http::Method::POST,
            url: url.into(),
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: ser.finish().into_bytes(),
        }
    }

    pub fn json(url: impl Into<String>, body: &serde_json::Value) -> HttpRequest {
        HttpRequest {
            method: http::Method::POST,
            url: url.into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("accept".into(), "application/json".into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn bearer(mut self, token: &str) -> HttpRequest {
        self.headers
            .push(("authorization".into(), format!("Bearer {token}")));
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The request never got an HTTP answer (refused, reset, timed out, TLS failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

#[async_trait]
pub trait HttpClient: Send + Sync {
    async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Largest Loopwise response body read (token and userinfo answers are small).
const MAX_RESPONSE: usize = 1024 * 1024;

/// The production client: reqwest with rustls, no redirects followed (an OAuth endpoint
/// that redirects is misconfigured, and following would leak form bodies).
#[derive(Debug, Clone)]
pub struct ReqwestClient(reqwest::Client);

impl ReqwestClient {
    pub fn new(
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, HttpClientError> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("loopgate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| HttpClientError::CaUnreadable {
                path: path.to_path_buf(),
                source,
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                HttpClientError::CaNotPem {
                    path: path.to_path_buf(),
                    source,
                }
            })? {
                b = b.add_root_certificate(cert);
            }
        }
        b.build().map(ReqwestClient).map_err(HttpClientError::Build)
    }
}

/// Why the client for Loopwise could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("cannot read CA file {}: {source}", path.display())]
    CaUnreadable {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {} is not PEM: {source}", path.display())]
    CaNotPem {
        path: std::path::PathBuf,
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
}

#[async_trait]
impl HttpClient for ReqwestClient {
    async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut rb = self.0.request(req.method, &req.url);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if !req.body.is_empty() {
            rb = rb.body(req.body);
        }
        let mut resp = rb.send().await.map_err(|e| TransportError(describe(&e)))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| TransportError(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(TransportError("response body too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, body })
    }
}

/// A short reason without the URL (which may carry a query we do not want in logs).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
