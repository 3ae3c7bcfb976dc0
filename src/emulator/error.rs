//! RFC 6749 §5.2 / RFC 6750 §3.1 / RFC 7591 §3.2.2 errors, and the one place that maps
//! them to HTTP responses.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The error codes the emulator can answer with; the wire spelling is `as_str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    InvalidToken,
    InsufficientScope,
    InvalidClientMetadata,
    InvalidRedirectUri,
    NotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::NotFound => "not_found",
        }
    }

    fn default_status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::InsufficientScope | ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An OAuth error with a human-readable description (never containing secrets).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// Overrides the code's usual status (e.g. 413 for an oversized body).
    pub status: Option<StatusCode>,
    /// For `insufficient_scope`: the scope that would have been enough.
    pub scope: Option<String>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            status: None,
            scope: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidToken, description)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.default_status())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&Body {
            error: self.code.as_str(),
            error_description: &self.description,
            scope: self.scope.as_deref(),
        })
        .unwrap_or_else(|_| String::from("{\"error\":\"server_error\"}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = self.www_authenticate() {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        (self.status(), headers, body).into_response()
    }
}

impl OAuthError {
    /// RFC 6750 §3 challenge for resource errors; RFC 6749 §5.2 asks for one on 401
    /// `invalid_client` too.
    fn www_authenticate(&self) -> Option<String> {
        let quoted = sanitize_quoted(&self.description);
        match self.code {
            ErrorCode::InvalidToken => Some(format!(
                "Bearer realm=\"loopwise\", error=\"invalid_token\", error_description=\"{quoted}\""
            )),
            ErrorCode::InsufficientScope => Some(format!(
                "Bearer realm=\"loopwise\", error=\"insufficient_scope\", scope=\"{}\"",
                sanitize_quoted(self.scope.as_deref().unwrap_or(""))
            )),
            ErrorCode::InvalidClient => Some("Basic realm=\"loopwise\"".to_string()),
            _ => None,
        }
    }
}

/// Keeps a value safe inside a quoted-string of a header: printable ASCII without `"` or `\`.
fn sanitize_quoted(s: &str) -> String {
    s.chars()
        .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_rfcs() {
        assert_eq!(
            OAuthError::invalid_client("x").status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            OAuthError::invalid_grant("x").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            OAuthError::new(ErrorCode::InsufficientScope, "x").status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            OAuthError::invalid_request("x")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                .status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn challenge_never_breaks_the_header() {
        let e = OAuthError::invalid_token("bad \"quote\"\r\n\\x");
        let c = e.www_authenticate().unwrap();
        assert!(HeaderValue::from_str(&c).is_ok());
        assert!(!c.contains("\\x"));
    }
}
