//! The token endpoint's and userinfo's answers, parsed and checked (pure).

use serde::Deserialize;

use super::claims::ClaimNames;
use super::error::{parse_json, ErrorBody, LoopwiseError};
use super::http::HttpResponse;
use crate::session::Identity;

/// A token endpoint answer (RFC 6749 §5.1, as Loopwise sends it); extra fields are ignored.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// OpenID Connect: who signed in, signed by the provider (never logged).
    #[serde(default)]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("id_token", &self.id_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Parses a token response; a non-Bearer token type is refused.
pub fn parse_token(resp: &HttpResponse) -> Result<TokenSet, LoopwiseError> {
    let t: TokenSet = parse_json(resp)?;
    if !t.token_type.eq_ignore_ascii_case("bearer") {
        return Err(LoopwiseError::Malformed(format!(
            "token_type `{}` is not Bearer",
            t.token_type
        )));
    }
    if t.access_token.is_empty() {
        return Err(LoopwiseError::Malformed("empty access_token".into()));
    }
    Ok(t)
}

/// Parses a userinfo answer. Every 4xx but 429 is `Refused` (RFC 6750 §3.1: 400, 401
/// and 403 are how a resource server rejects a token; a 404 or 414 for this token will
/// not change either), so callers treat it as a bad token rather than an outage.
pub fn parse_userinfo(resp: &HttpResponse, names: &ClaimNames) -> Result<Identity, LoopwiseError> {
    if (400..500).contains(&resp.status) && resp.status != 429 {
        let (code, description) = match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(e) => (e.error, e.error_description.unwrap_or_default()),
            Err(_) => (
                "invalid_token".to_string(),
                format!("userinfo answered HTTP {}", resp.status),
            ),
        };
        return Err(LoopwiseError::Refused { code, description });
    }
    let u: serde_json::Map<String, serde_json::Value> = parse_json(resp)?;
    let id = names.identity(&u);
    if id.sub.is_empty() {
        return Err(LoopwiseError::Malformed("userinfo without sub".into()));
    }
    Ok(id)
}
