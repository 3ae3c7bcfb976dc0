//! Authorization-server metadata: where it is (RFC 8414, then OpenID Connect Discovery),
//! and the checks it must pass before the gateway uses it.

use serde::Deserialize;

use super::error::{parse_json, LoopwiseError};
use super::http::{HttpClient, HttpRequest, HttpResponse};

/// RFC 8414 / OpenID Connect Discovery metadata, the fields Loopgate uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// Where the keys that sign ID tokens are (OpenID Connect).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 9207: authorization responses carry `iss`, which must then be checked.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl Metadata {
    /// Test metadata for `https://lw.test` with S256 and only the endpoints every
    /// server has; tests set the optional ones they need.
    #[cfg(test)]
    pub(crate) fn fixture() -> Metadata {
        Metadata {
            issuer: "https://lw.test".into(),
            authorization_endpoint: "https://lw.test/oauth/authorize".into(),
            token_endpoint: "https://lw.test/api/oauth/token".into(),
            revocation_endpoint: None,
            registration_endpoint: None,
            userinfo_endpoint: None,
            introspection_endpoint: None,
            code_challenge_methods_supported: vec!["S256".into()],
            jwks_uri: None,
            end_session_endpoint: None,
            authorization_response_iss_parameter_supported: false,
        }
    }

    /// Where metadata may be, in the order asked: RFC 8414's document (for an issuer
    /// with a path, `/.well-known/oauth-authorization-server` goes between host and path,
    /// RFC 8414 §3.1), then OpenID Connect Discovery's `{issuer}/.well-known/openid-configuration`.
    pub fn urls(issuer: &str) -> [String; 2] {
        let (origin, path) = match issuer.find("://").map(|i| i + 3) {
            Some(start) => match issuer[start..].find('/') {
                Some(p) => issuer.split_at(start + p),
                None => (issuer, ""),
            },
            None => (issuer, ""),
        };
        [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{issuer}/.well-known/openid-configuration"),
        ]
    }

    /// Parses and checks metadata: the issuer must be the configured one (RFC 8414 §3.3)
    /// and S256 must be offered.
    pub fn parse(resp: &HttpResponse, expected_issuer: &str) -> Result<Metadata, LoopwiseError> {
        let m: Metadata = parse_json(resp)?;
        if m.issuer.trim_end_matches('/') != expected_issuer {
            return Err(LoopwiseError::Malformed(format!(
                "metadata issuer `{}` is not the configured issuer `{expected_issuer}`",
                m.issuer
            )));
        }
        if !m
            .code_challenge_methods_supported
            .iter()
            .any(|c| c == "S256")
        {
            return Err(LoopwiseError::Malformed(
                "metadata does not offer PKCE S256".into(),
            ));
        }
        Ok(m)
    }

    /// Where userinfo is: the advertised endpoint, or — for a Loopwise school, whose
    /// metadata omits it but whose docs fix its path — Loopwise's own path. A Loopwise
    /// school is recognised by its token endpoint at Loopwise's path. `None`: the server
    /// has no userinfo (a standards server that only issues ID tokens).
    pub fn userinfo_url(&self) -> Option<String> {
        if let Some(u) = &self.userinfo_endpoint {
            return Some(u.clone());
        }
        let base = self.issuer.trim_end_matches('/');
        (self.token_endpoint == format!("{base}/api/oauth/token"))
            .then(|| format!("{base}/api/oauth/userinfo"))
    }
}

/// Fetches and checks the issuer's metadata: RFC 8414's document first, then OpenID
/// Connect's when the first is not there (a 4xx answer).
pub async fn discover(http: &dyn HttpClient, issuer: &str) -> Result<Metadata, LoopwiseError> {
    let [rfc8414, oidc] = Metadata::urls(issuer);
    let resp = http
        .execute(HttpRequest::get(rfc8414))
        .await
        .map_err(|e| LoopwiseError::Unreachable(e.0))?;
    if (400..500).contains(&resp.status) && resp.status != 429 {
        let resp = http
            .execute(HttpRequest::get(oidc))
            .await
            .map_err(|e| LoopwiseError::Unreachable(e.0))?;
        return Metadata::parse(&resp, issuer);
    }
    Metadata::parse(&resp, issuer)
}
