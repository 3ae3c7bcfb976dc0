//! How a call to a school's server failed, classified by type (callers never match
//! strings), and the JSON reader every answer goes through.

use serde::Deserialize;

use super::http::HttpResponse;

/// What went wrong talking to Loopwise, classified by type so callers never match strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopwiseError {
    /// No HTTP answer (refused, timeout, TLS): transient.
    #[error("Loopwise is unreachable: {0}")]
    Unreachable(String),
    /// A 5xx or 429: transient.
    #[error("Loopwise answered HTTP {0}")]
    Unavailable(u16),
    /// An RFC 6749 error answer, e.g. `invalid_grant`.
    #[error("Loopwise refused: {code}")]
    Refused { code: String, description: String },
    /// A 2xx whose body is not what the protocol says: transient (proxies, HTML pages).
    #[error("Loopwise sent an unexpected response: {0}")]
    Malformed(String),
    /// The server does not offer what the call needs (e.g. no userinfo endpoint): a
    /// config matter, not an outage.
    #[error("the school's server offers no {0}")]
    Unsupported(&'static str),
}

impl LoopwiseError {
    /// Whether the grant behind the request is dead (`invalid_grant`, `invalid_client`):
    /// the session must end. Anything else may succeed later.
    pub fn is_fatal(&self) -> bool {
        matches!(self, LoopwiseError::Refused { code, .. } if code == "invalid_grant")
            || self.is_client_unknown()
    }

    /// Whether the server does not know (or does not accept) this client
    /// (`invalid_client`): a client that registered itself may register again.
    pub fn is_client_unknown(&self) -> bool {
        matches!(self, LoopwiseError::Refused { code, .. } if code == "invalid_client")
    }
}

/// An RFC 6749 §5.2 error answer.
#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) error_description: Option<String>,
}

/// The JSON body of a 2xx answer; otherwise the error it stands for: 429 and 5xx are
/// `Unavailable`, an OAuth error body is `Refused`, anything else `Malformed`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    resp: &HttpResponse,
) -> Result<T, LoopwiseError> {
    if resp.status == 429 || resp.status >= 500 {
        return Err(LoopwiseError::Unavailable(resp.status));
    }
    if !(200..300).contains(&resp.status) {
        return Err(match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(e) => LoopwiseError::Refused {
                code: e.error,
                description: e.error_description.unwrap_or_default(),
            },
            Err(_) if resp.status == 401 => LoopwiseError::Refused {
                code: "invalid_token".into(),
                description: String::new(),
            },
            Err(_) => LoopwiseError::Malformed(format!(
                "HTTP {} without an OAuth error body",
                resp.status
            )),
        });
    }
    serde_json::from_slice(&resp.body)
        .map_err(|e| LoopwiseError::Malformed(format!("invalid JSON: {e}")))
}
