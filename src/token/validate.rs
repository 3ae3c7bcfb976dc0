//! Validating a Bearer token an API client brought: locally (HS256 with the operator's
//! secret), by Loopwise introspection, or by Loopwise userinfo — in that order of
//! preference, whichever the configuration and metadata allow.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation as JwtValidation};
use serde::Deserialize;

use crate::oauth::{LoopwiseClient, LoopwiseError};
use crate::session::Identity;

/// Clock skew tolerated on `exp` in local mode.
pub const LEEWAY_SECS: u64 = 5;

/// What a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub identity: Identity,
    pub scope: String,
    /// The token's `exp`, when known.
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(TokenInfo),
    Invalid,
}

/// How tokens are validated.
pub enum Mode {
    /// HS256 with the configured secret: no call to Loopwise.
    Local { key: DecodingKey, issuer: String },
    /// Introspection when the metadata advertises it, userinfo otherwise (decided per
    /// call, because the metadata may arrive after start-up).
    Remote,
}

impl Mode {
    pub fn name(&self, loopwise: &LoopwiseClient) -> &'static str {
        match (self, loopwise.metadata()) {
            (Mode::Local { .. }, _) => "local_hs256",
            (Mode::Remote, None) => "pending",
            (Mode::Remote, Some(m)) if m.introspection_endpoint.is_some() => "introspection",
            (Mode::Remote, Some(_)) => "userinfo",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: serde_json::Value,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    school_id: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<u64>,
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Local HS256 check: signature, issuer, `exp` (with leeway) against `now`.
pub fn verify_local(key: &DecodingKey, issuer: &str, token: &str, now: u64) -> Verdict {
    let mut v = JwtValidation::new(Algorithm::HS256);
    v.validate_exp = false; // checked below against the gateway's clock
    v.required_spec_claims.clear();
    v.set_issuer(&[issuer]);
    let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &v) else {
        return Verdict::Invalid;
    };
    let c = data.claims;
    match c.exp {
        Some(exp) if now < exp + LEEWAY_SECS => {}
        _ => return Verdict::Invalid,
    }
    let sub = scalar(&c.sub);
    if sub.is_empty() {
        return Verdict::Invalid;
    }
    Verdict::Valid(TokenInfo {
        identity: Identity {
            sub,
            school: c.school_id.as_ref().map(scalar).unwrap_or_default(),
            ..Identity::default()
        },
        scope: c.scope.unwrap_or_default(),
        expires_at: c.exp,
    })
}

/// `exp` and `scope` read from a JWT's payload *without* verifying it — only used after
/// Loopwise itself has vouched for the token.
pub fn unverified_claims(token: &str) -> (Option<u64>, Option<String>) {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match payload {
        Some(v) => (v["exp"].as_u64(), v["scope"].as_str().map(str::to_string)),
        None => (None, None),
    }
}

#[derive(Deserialize)]
struct Introspection {
    active: bool,
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

/// Validates `token` with `mode`. `Err` only for transient failures (Loopwise
/// unreachable): those are never cached as invalid.
pub async fn validate(
    mode: &Mode,
    loopwise: &LoopwiseClient,
    token: &str,
    now: u64,
) -> Result<Verdict, LoopwiseError> {
    match mode {
        Mode::Local { key, issuer } => Ok(verify_local(key, issuer, token, now)),
        Mode::Remote => match loopwise.introspection_request(token)? {
            Some(req) => introspect(loopwise, req, now).await,
            None => userinfo(loopwise, token, now).await,
        },
    }
}

async fn userinfo(
    loopwise: &LoopwiseClient,
    token: &str,
    now: u64,
) -> Result<Verdict, LoopwiseError> {
    match loopwise.userinfo(token).await {
        Ok(identity) => {
            let (exp, scope) = unverified_claims(token);
            if exp.is_some_and(|e| e <= now) {
                return Ok(Verdict::Invalid);
            }
            Ok(Verdict::Valid(TokenInfo {
                identity,
                scope: scope.unwrap_or_default(),
                expires_at: exp,
            }))
        }
        Err(LoopwiseError::Refused { .. }) => Ok(Verdict::Invalid),
        Err(e) => Err(e),
    }
}

async fn introspect(
    loopwise: &LoopwiseClient,
    req: crate::oauth::http::HttpRequest,
    now: u64,
) -> Result<Verdict, LoopwiseError> {
    let resp = loopwise.execute(req).await?;
    if resp.status == 429 || resp.status >= 500 {
        return Err(LoopwiseError::Unavailable(resp.status));
    }
    let Ok(i) = serde_json::from_slice::<Introspection>(&resp.body) else {
        return Err(LoopwiseError::Malformed("introspection response".into()));
    };
    let sub = i.sub.as_ref().map(scalar).unwrap_or_default();
    if !i.active || sub.is_empty() || i.exp.is_some_and(|e| e <= now) {
        return Ok(Verdict::Invalid);
    }
    Ok(Verdict::Valid(TokenInfo {
        identity: Identity {
            sub,
            email: i.email.unwrap_or_default(),
            name: i.name.or(i.username).unwrap_or_default(),
            ..Identity::default()
        },
        scope: i.scope.unwrap_or_default(),
        expires_at: i.exp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn token(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn local_verification() {
        let key = DecodingKey::from_secret(b"the-secret-the-secret");
        let good = token(
            b"the-secret-the-secret",
            serde_json::json!({"iss":"https://lw","sub":"ada","scope":"read","school_id":4242,"exp":1000}),
        );
        match verify_local(&key, "https://lw", &good, 900) {
            Verdict::Valid(i) => {
                assert_eq!(
                    (
                        i.identity.sub.as_str(),
                        i.identity.school.as_str(),
                        i.scope.as_str()
                    ),
                    ("ada", "4242", "read")
                );
                assert_eq!(i.expires_at, Some(1000));
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(
            verify_local(&key, "https://lw", &good, 1000 + LEEWAY_SECS),
            Verdict::Invalid,
            "expired"
        );
        assert_eq!(
            verify_local(&key, "https://other", &good, 900),
            Verdict::Invalid,
            "issuer"
        );
        let forged = token(
            b"another-secret-entirely",
            serde_json::json!({"iss":"https://lw","sub":"ada","exp":1000}),
        );
        assert_eq!(
            verify_local(&key, "https://lw", &forged, 900),
            Verdict::Invalid,
            "signature"
        );
        let no_exp = token(
            b"the-secret-the-secret",
            serde_json::json!({"iss":"https://lw","sub":"ada"}),
        );
        assert_eq!(
            verify_local(&key, "https://lw", &no_exp, 900),
            Verdict::Invalid
        );
        assert_eq!(
            verify_local(&key, "https://lw", "garbage", 900),
            Verdict::Invalid
        );
    }

    #[test]
    fn unverified_claims_are_read_leniently() {
        let t = token(b"k", serde_json::json!({"exp": 5, "scope": "a b"}));
        assert_eq!(unverified_claims(&t), (Some(5), Some("a b".into())));
        assert_eq!(unverified_claims("opaque-token"), (None, None));
    }
}
