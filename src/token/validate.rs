//! Validating a Bearer token an API client brought: locally (HS256 with the operator's
//! secret), by Loopwise introspection, or by Loopwise userinfo — in that order of
//! preference, whichever the configuration and metadata allow.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation as JwtValidation};
use serde::Deserialize;

use crate::oauth::{LoopwiseClient, LoopwiseError};
use crate::session::Identity;

/// Clock skew tolerated on `exp`, `nbf` and `iat` in local mode.
pub(crate) const LEEWAY_SECS: u64 = 5;

/// Longest Bearer token worth looking at. Loopwise's JWTs are a few hundred bytes; anything
/// near a header's size is an attack or a mistake and must not reach the cache or Loopwise.
pub(crate) const MAX_BEARER_LEN: usize = 4096;

/// Whether `token` is shaped like a JWT (three non-empty base64url segments joined by '.',
/// at most [`MAX_BEARER_LEN`] bytes). Cheap and total, so it runs before the cache key is
/// hashed or Loopwise is asked: junk never costs a validation or a cache entry.
pub(crate) fn plausible(token: &str) -> bool {
    if token.len() > MAX_BEARER_LEN {
        return false;
    }
    let mut segments = 0;
    for segment in token.split('.') {
        segments += 1;
        if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    segments == 3
}

/// Whether `token` could be an opaque reference token (RFC 6750 `b64token`, 16 to
/// [`MAX_BEARER_LEN`] bytes), for schools whose server issues those (`opaque_tokens`).
pub(crate) fn plausible_opaque(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    (16..=MAX_BEARER_LEN).contains(&token.len())
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// What a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub identity: Identity,
    pub scope: String,
    /// The token's `exp`, when known.
    pub expires_at: Option<u64>,
    /// Whom the token is for (`aud`, `client_id`, `azp`), when known.
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(TokenInfo),
    Invalid,
}

/// How tokens are validated.
pub(crate) enum Mode {
    /// HS256 with the configured secret: no call to Loopwise. With `audience`, a token's
    /// `aud` must name it; without, any `aud` (or none) is accepted.
    Local {
        key: DecodingKey,
        issuer: String,
        audience: Vec<String>,
    },
    /// Introspection when the metadata advertises it, userinfo otherwise (decided per
    /// call, because the metadata may arrive after start-up).
    Remote,
}

impl Mode {
    pub(crate) fn name(&self, loopwise: &LoopwiseClient) -> &'static str {
        match (self, loopwise.metadata()) {
            (Mode::Local { .. }, _) => "local_hs256",
            (Mode::Remote, None) => "pending",
            (Mode::Remote, Some(m)) if m.introspection_endpoint.is_some() => "introspection",
            (Mode::Remote, Some(_)) => "userinfo",
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An RFC 7519 NumericDate (seconds, possibly fractional); `None` for anything else.
fn numeric_date(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Whether the `aud` claim (absent, a string or a list of strings) is acceptable.
fn audience_ok(aud: Option<&serde_json::Value>, expected: &[String]) -> bool {
    if expected.is_empty() {
        return true;
    }
    match aud {
        Some(serde_json::Value::String(a)) => expected.contains(a),
        Some(serde_json::Value::Array(list)) => {
            list.iter().all(|a| a.is_string())
                && list
                    .iter()
                    .any(|a| a.as_str().is_some_and(|a| expected.iter().any(|e| e == a)))
        }
        _ => false,
    }
}

/// The audiences a token names: its `aud` (a string or strings) and the `client_id` /
/// `azp` it was issued to (RFC 9068, RFC 7662).
pub(crate) fn audiences_of(c: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out: Vec<String> = match c.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(l)) => l
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    for k in ["client_id", "azp"] {
        if let Some(v) = c.get(k).and_then(|v| v.as_str()) {
            out.push(v.to_string());
        }
    }
    out
}

/// The claim checks of local mode, pure: `iss` is the issuer (a string, exactly), `exp`
/// is present and not past, `nbf`/`iat` are not in the future (each with
/// [`LEEWAY_SECS`]), `aud` names `audience` when one is configured, `sub` is non-empty.
/// Any claim of the wrong JSON type makes the token invalid.
fn check_claims(
    c: &serde_json::Map<String, serde_json::Value>,
    issuer: &str,
    audience: &[String],
    now: u64,
) -> Option<TokenInfo> {
    if c.get("iss").and_then(|v| v.as_str()) != Some(issuer) {
        return None;
    }
    let exp = numeric_date(c.get("exp")?)?;
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return None;
    }
    for name in ["nbf", "iat"] {
        if let Some(v) = c.get(name) {
            if numeric_date(v)? > now.saturating_add(LEEWAY_SECS) {
                return None;
            }
        }
    }
    if !audience_ok(c.get("aud"), audience) {
        return None;
    }
    let sub = match c.get("sub")? {
        v @ (serde_json::Value::String(_) | serde_json::Value::Number(_)) => scalar(v),
        _ => return None,
    };
    if sub.is_empty() {
        return None;
    }
    let scope = match c.get("scope") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return None,
    };
    Some(TokenInfo {
        identity: Identity {
            sub,
            school: c.get("school_id").map(scalar).unwrap_or_default(),
            ..Identity::default()
        },
        scope,
        expires_at: Some(exp),
        audiences: audiences_of(c),
    })
}

/// Local HS256 check: jsonwebtoken verifies the signature (HS256 only, so `alg: none`
/// and every other algorithm fail); the claims are checked here against `now` — the
/// gateway's clock, which tests move — rather than by jsonwebtoken against the system
/// clock, and with rules it does not have (a string `iss`, `iat` not in the future).
pub(crate) fn verify_local(
    key: &DecodingKey,
    issuer: &str,
    audience: &[String],
    token: &str,
    now: u64,
) -> Verdict {
    let mut v = JwtValidation::new(Algorithm::HS256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let Ok(data) = jsonwebtoken::decode::<serde_json::Value>(token, key, &v) else {
        return Verdict::Invalid;
    };
    match data.claims.as_object() {
        Some(c) => check_claims(c, issuer, audience, now).map_or(Verdict::Invalid, Verdict::Valid),
        None => Verdict::Invalid,
    }
}

/// A JWT's payload, *not* verified: only read after the server vouched for the token.
fn unverified_payload(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// `exp` and `scope` read from a JWT's payload *without* verifying it — only used after
/// Loopwise itself has vouched for the token.
pub(crate) fn unverified_claims(token: &str) -> (Option<u64>, Option<String>) {
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

/// A JWT's `iss`, read *without* verifying the token: it only picks the school that
/// then validates it, and is never believed on its own.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    /// Only `iss`: the other claims are skipped, not built into a JSON tree.
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
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
    username: Option<String>,
}

/// Validates `token` with `mode`. `Err` only for transient failures (Loopwise
/// unreachable): those are never cached as invalid.
pub(crate) async fn validate(
    mode: &Mode,
    loopwise: &LoopwiseClient,
    token: &str,
    now: u64,
) -> Result<Verdict, LoopwiseError> {
    match mode {
        Mode::Local {
            key,
            issuer,
            audience,
        } => Ok(verify_local(key, issuer, audience, token, now)),
        Mode::Remote => match loopwise.introspection_request(token)? {
            Some(req) => match introspect(loopwise, req, now).await {
                // Introspection says whether the token is good; userinfo, where the server
                // has one, says more about who it is for (email, name, roles, school).
                Ok(Verdict::Valid(mut info)) => {
                    let has_userinfo = loopwise
                        .metadata()
                        .is_some_and(|m| m.userinfo_url().is_some());
                    if has_userinfo {
                        if let Ok(more) = loopwise.userinfo(token).await {
                            if more.sub == info.identity.sub {
                                info.identity = crate::oauth::claims::merge(info.identity, more);
                            }
                        }
                    }
                    Ok(Verdict::Valid(info))
                }
                // A public client cannot authenticate to introspection on many servers:
                // userinfo still tells whether the token is good.
                Err(e) if e.is_client_unknown() && !loopwise.is_confidential() => {
                    userinfo(loopwise, token, now).await
                }
                other => other,
            },
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
                // Read from the payload only now that the server vouched for the token.
                audiences: unverified_payload(token)
                    .map(|c| audiences_of(&c))
                    .unwrap_or_default(),
            }))
        }
        Err(LoopwiseError::Refused { .. }) => Ok(Verdict::Invalid),
        // Neither introspection nor userinfo: nothing can vouch for an opaque token.
        Err(LoopwiseError::Unsupported(what)) => {
            tracing::warn!(missing = %what, "a Bearer cannot be validated: the school offers neither introspection nor userinfo");
            Ok(Verdict::Invalid)
        }
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
    // RFC 7662 §2.3: 401/403 refuse the gateway's own client credentials, so every token
    // would fail alike — an outage to report, not a verdict to cache against this token.
    if resp.status == 401 || resp.status == 403 {
        return Err(LoopwiseError::Refused {
            code: "invalid_client".into(),
            description: format!("introspection answered HTTP {}", resp.status),
        });
    }
    // Any other 4xx refuses this request, i.e. this token (e.g. 400 or 414 for one that
    // is malformed or too long): asking again would not change the answer.
    if (400..500).contains(&resp.status) {
        return Ok(Verdict::Invalid);
    }
    if !(200..300).contains(&resp.status) {
        return Err(LoopwiseError::Malformed(format!(
            "introspection answered HTTP {}",
            resp.status
        )));
    }
    let Ok(serde_json::Value::Object(c)) = serde_json::from_slice::<serde_json::Value>(&resp.body)
    else {
        return Err(LoopwiseError::Malformed("introspection response".into()));
    };
    let Ok(i) = serde_json::from_value::<Introspection>(serde_json::Value::Object(c.clone()))
    else {
        return Err(LoopwiseError::Malformed("introspection response".into()));
    };
    let sub = i.sub.as_ref().map(scalar).unwrap_or_default();
    if !i.active || sub.is_empty() || i.exp.is_some_and(|e| e <= now) {
        return Ok(Verdict::Invalid);
    }
    // Identity from the configured claims, as userinfo's (roles and school included).
    let mut identity = loopwise.claim_names().identity(&c);
    identity.sub = sub;
    if identity.name.is_empty() {
        identity.name = i.username.unwrap_or_default();
    }
    Ok(Verdict::Valid(TokenInfo {
        identity,
        scope: i.scope.unwrap_or_default(),
        expires_at: i.exp,
        audiences: audiences_of(&c),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::Metadata;
    use crate::oauth::http::{HttpClient, HttpRequest, HttpResponse, TransportError};
    use jsonwebtoken::{EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Arc;

    const SECRET: &[u8] = b"the-secret-the-secret";
    const ISS: &str = "https://lw";
    const NOW: u64 = 10_000;

    fn token_with(header: Header, secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn token(secret: &[u8], claims: serde_json::Value) -> String {
        token_with(Header::new(Algorithm::HS256), secret, claims)
    }

    /// Good claims, with `changes` merged in (`null` removes a claim).
    fn claims(changes: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"iss": ISS, "sub": "ada", "scope": "read", "school_id": 4242,
                           "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 600});
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn check(audience: Option<&str>, changes: serde_json::Value, now: u64) -> Verdict {
        let audience: Vec<String> = audience.into_iter().map(str::to_string).collect();
        let audience = audience.as_slice();
        let key = DecodingKey::from_secret(SECRET);
        verify_local(&key, ISS, audience, &token(SECRET, claims(changes)), now)
    }

    fn valid(v: &Verdict) -> bool {
        matches!(v, Verdict::Valid(_))
    }

    #[test]
    fn a_good_token_yields_its_identity() {
        match check(None, json!({}), NOW) {
            Verdict::Valid(i) => {
                assert_eq!(
                    (
                        i.identity.sub.as_str(),
                        i.identity.school.as_str(),
                        i.scope.as_str()
                    ),
                    ("ada", "4242", "read")
                );
                assert_eq!(i.expires_at, Some(NOW + 600));
            }
            v => panic!("{v:?}"),
        }
        assert!(valid(&check(None, json!({"sub": 42, "scope": null}), NOW)));
    }

    #[test]
    fn exp_is_required_and_checked_against_now_with_leeway() {
        let exp = NOW + 600;
        assert!(valid(&check(None, json!({}), exp + LEEWAY_SECS - 1)));
        assert_eq!(check(None, json!({}), exp + LEEWAY_SECS), Verdict::Invalid);
        assert_eq!(check(None, json!({"exp": null}), NOW), Verdict::Invalid);
        assert_eq!(
            check(None, json!({"exp": "9999999999"}), NOW),
            Verdict::Invalid
        );
        assert_eq!(check(None, json!({"exp": -1}), NOW), Verdict::Invalid);
        assert!(valid(&check(
            None,
            json!({"exp": (NOW + 600) as f64 + 0.5}),
            NOW
        )));
        // `now` is the gateway's clock, not the system's: a token long expired by the
        // wall clock is still valid at an earlier `now`, and vice versa.
        assert!(valid(&check(
            None,
            json!({"iat": 1, "nbf": 1, "exp": 100}),
            50
        )));
        assert_eq!(
            check(None, json!({"exp": u64::MAX}), u64::MAX),
            Verdict::Invalid,
            "no overflow"
        );
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_refused() {
        for claim in ["nbf", "iat"] {
            let at = |t: u64| json!({ claim: t });
            assert!(valid(&check(None, at(NOW + LEEWAY_SECS), NOW)), "{claim}");
            assert_eq!(
                check(None, at(NOW + LEEWAY_SECS + 1), NOW),
                Verdict::Invalid,
                "{claim}"
            );
            assert!(
                valid(&check(None, at(NOW + 100), NOW + 100)),
                "{claim} later"
            );
            assert_eq!(
                check(None, json!({ claim: "soon" }), NOW),
                Verdict::Invalid,
                "{claim} type"
            );
            assert!(valid(&check(None, json!({ claim: null }), NOW)), "optional");
        }
    }

    #[test]
    fn iss_must_be_the_issuer_as_a_string() {
        assert_eq!(check(None, json!({"iss": null}), NOW), Verdict::Invalid);
        assert_eq!(check(None, json!({"iss": [ISS]}), NOW), Verdict::Invalid);
        assert_eq!(
            check(None, json!({"iss": [ISS, "https://other"]}), NOW),
            Verdict::Invalid
        );
        assert_eq!(
            check(None, json!({"iss": "https://other"}), NOW),
            Verdict::Invalid
        );
        assert_eq!(
            check(None, json!({"iss": "https://lw/"}), NOW),
            Verdict::Invalid
        );
        let key = DecodingKey::from_secret(SECRET);
        let good = token(SECRET, claims(json!({})));
        assert_eq!(
            verify_local(&key, "https://other", &[], &good, NOW),
            Verdict::Invalid
        );
    }

    #[test]
    fn any_aud_is_accepted_without_a_configured_audience() {
        for aud in [json!("loopgate"), json!(["a", "b"]), json!(7), json!([])] {
            assert!(valid(&check(None, json!({ "aud": aud }), NOW)), "{aud}");
        }
    }

    #[test]
    fn a_configured_audience_must_be_named_by_aud() {
        let a = Some("loopgate");
        assert!(valid(&check(a, json!({"aud": "loopgate"}), NOW)));
        assert!(valid(&check(a, json!({"aud": ["x", "loopgate"]}), NOW)));
        for aud in [
            json!(null),
            json!("other"),
            json!(["x", "y"]),
            json!([]),
            json!(["loopgate", 7]),
            json!({"loopgate": true}),
            json!("LOOPGATE"),
        ] {
            assert_eq!(
                check(a, json!({ "aud": aud }), NOW),
                Verdict::Invalid,
                "{aud}"
            );
        }
    }

    #[test]
    fn the_unverified_issuer_is_read_only_when_it_is_a_string() {
        let t = |c| token(b"k", c);
        assert_eq!(
            unverified_issuer(&t(json!({"iss": ISS, "sub": "a", "roles": ["x"]}))).as_deref(),
            Some(ISS)
        );
        for c in [json!({"iss": 5}), json!({"iss": null}), json!({"sub": "a"})] {
            assert_eq!(unverified_issuer(&t(c.clone())), None, "{c}");
        }
        assert_eq!(unverified_issuer("not.a-jwt!.x"), None);
    }

    #[test]
    fn sub_and_scope_must_have_usable_types() {
        for changes in [
            json!({"sub": null}),
            json!({"sub": ""}),
            json!({"sub": true}),
            json!({"sub": {"id": 1}}),
            json!({"scope": ["read"]}),
        ] {
            assert_eq!(
                check(None, changes.clone(), NOW),
                Verdict::Invalid,
                "{changes}"
            );
        }
    }

    #[test]
    fn only_hs256_with_the_right_secret_is_accepted() {
        let key = DecodingKey::from_secret(SECRET);
        let c = claims(json!({}));
        let forged = token(b"another-secret-entirely", c.clone());
        assert_eq!(verify_local(&key, ISS, &[], &forged, NOW), Verdict::Invalid);
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let t = token_with(Header::new(alg), SECRET, c.clone());
            assert_eq!(
                verify_local(&key, ISS, &[], &t, NOW),
                Verdict::Invalid,
                "{alg:?}"
            );
        }
        // `alg: none` with an empty signature, and the real signature under `none`.
        let good = token(SECRET, c.clone());
        let parts: Vec<&str> = good.split('.').collect();
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        for t in [
            format!("{none}.{}.", parts[1]),
            format!("{none}.{}.{}", parts[1], parts[2]),
        ] {
            assert_eq!(
                verify_local(&key, ISS, &[], &t, NOW),
                Verdict::Invalid,
                "{t}"
            );
        }
        // A payload that is not a JSON object.
        let t = token(SECRET, json!([1, 2]));
        assert_eq!(verify_local(&key, ISS, &[], &t, NOW), Verdict::Invalid);
        assert_eq!(
            verify_local(&key, ISS, &[], "garbage", NOW),
            Verdict::Invalid
        );
        assert!(valid(&verify_local(&key, ISS, &[], &good, NOW)));
    }

    #[test]
    fn unverified_claims_are_read_leniently() {
        let t = token(b"k", json!({"exp": 5, "scope": "a b"}));
        assert_eq!(unverified_claims(&t), (Some(5), Some("a b".into())));
        assert_eq!(unverified_claims("opaque-token"), (None, None));
    }

    #[test]
    fn opaque_tokens_are_b64tokens_of_sane_length() {
        assert!(plausible_opaque("Xyz0123456789abcdefgh_-~+/.=="));
        for junk in [
            "short",
            "0123456789abcde",
            "with space 0123456789",
            "quote\"0123456789abc",
            "==================",
            "\u{e9}0123456789abcdef",
        ] {
            assert!(!plausible_opaque(junk), "{junk:?}");
        }
        assert!(!plausible_opaque(&"a".repeat(MAX_BEARER_LEN + 1)));
    }

    #[test]
    fn plausible_bearer_tokens_are_jwt_shaped() {
        assert!(plausible(&token(SECRET, claims(json!({})))));
        assert!(plausible("a.b.c"));
        assert!(plausible("A-_0.x.y"));
        for junk in [
            "",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "a.b.",
            "a.b.c=",
            "a+b.c.d",
            "a/b.c.d",
            "a.b.c ",
            "a.b.c\n",
            "é.b.c",
            "opaque-token",
        ] {
            assert!(!plausible(junk), "{junk:?}");
        }
        let max = format!("a.b.{}", "c".repeat(MAX_BEARER_LEN - 4));
        assert_eq!(max.len(), MAX_BEARER_LEN);
        assert!(plausible(&max));
        assert!(!plausible(&format!("{max}c")));
    }

    use crate::testing::proptest_cases as cases;

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn plausible_never_panics_and_accepts_only_its_alphabet(s in "\\PC*") {
            if plausible(&s) {
                prop_assert!(s.len() <= MAX_BEARER_LEN);
                prop_assert_eq!(s.matches('.').count(), 2);
                prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            }
        }

        #[test]
        fn one_foreign_character_makes_a_token_implausible(
            t in "[A-Za-z0-9_-]{1,30}\\.[A-Za-z0-9_-]{1,30}\\.[A-Za-z0-9_-]{1,30}",
            at in any::<usize>(),
            extra in any::<char>().prop_filter("foreign", |c| {
                !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
            }),
        ) {
            prop_assert!(plausible(&t));
            let mut chars: Vec<char> = t.chars().collect();
            chars.insert(at % (chars.len() + 1), extra);
            let bad: String = chars.into_iter().collect();
            prop_assert!(!plausible(&bad), "{:?}", bad);
        }

        #[test]
        fn plausible_accepts_every_encoded_jwt(
            sub in "\\PC{0,40}",
            scope in "[a-z: ]{0,40}",
            exp in any::<u64>(),
            school in any::<i64>(),
            secret in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let t = token(&secret, json!({"iss": ISS, "sub": sub, "scope": scope, "exp": exp, "school_id": school}));
            prop_assert!(plausible(&t), "{}", t);
        }

        #[test]
        fn verify_local_never_panics_on_junk(s in "\\PC*", now in any::<u64>()) {
            let key = DecodingKey::from_secret(SECRET);
            prop_assert_eq!(verify_local(&key, ISS, &["a".to_string()], &s, now), Verdict::Invalid);
        }
    }

    // Remote validation against a scripted Loopwise.

    struct Scripted(HttpResponse);

    #[async_trait::async_trait]
    impl HttpClient for Scripted {
        async fn execute(&self, _req: HttpRequest) -> Result<HttpResponse, TransportError> {
            Ok(self.0.clone())
        }
    }

    struct Down;

    #[async_trait::async_trait]
    impl HttpClient for Down {
        async fn execute(&self, _req: HttpRequest) -> Result<HttpResponse, TransportError> {
            Err(TransportError("connection refused".into()))
        }
    }

    fn loopwise(http: Arc<dyn HttpClient>, introspection: bool) -> LoopwiseClient {
        let metadata = Metadata {
            introspection_endpoint: introspection
                .then(|| "https://lw.test/api/oauth/introspect".into()),
            ..Metadata::fixture()
        };
        // Introspection wants client credentials: a confidential client.
        let secret = introspection.then(|| crate::secret::Secret::new("client-secret"));
        LoopwiseClient::new(http, metadata, "cid".into(), secret, "https://gw/cb".into())
    }

    /// Introspection refuses the client (401), userinfo vouches for the token.
    struct PublicClientServer;

    #[async_trait::async_trait]
    impl HttpClient for PublicClientServer {
        async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
            Ok(if req.url.contains("introspect") {
                HttpResponse {
                    status: 401,
                    body: br#"{"error":"invalid_client"}"#.to_vec(),
                }
            } else {
                HttpResponse {
                    status: 200,
                    body: br#"{"sub":"ada","roles":"teacher"}"#.to_vec(),
                }
            })
        }
    }

    #[tokio::test]
    async fn a_public_client_refused_by_introspection_asks_userinfo() {
        let metadata = Metadata {
            introspection_endpoint: Some("https://lw.test/api/oauth/introspect".into()),
            ..Metadata::fixture()
        };
        let public = LoopwiseClient::new(
            Arc::new(PublicClientServer),
            metadata,
            "cid".into(),
            None,
            "https://gw/cb".into(),
        );
        let t = token(
            b"k",
            json!({"exp": NOW + 60, "aud": "my-api", "client_id": "app"}),
        );
        let Ok(Verdict::Valid(info)) = validate(&Mode::Remote, &public, &t, NOW).await else {
            panic!("userinfo vouched for it");
        };
        assert_eq!(info.identity.roles, ["teacher"]);
        assert_eq!(info.audiences, ["my-api", "app"]);
    }

    #[tokio::test]
    async fn introspection_identity_uses_the_configured_claims() {
        let body = r#"{"active":true,"sub":"ada","exp":10060,"email":"a@x","username":"ada_l",
                       "roles":"teacher","org_id":7,"aud":["api-1","api-2"],"client_id":"c"}"#;
        let Ok(Verdict::Valid(i)) = remote(200, body, true).await else {
            panic!("valid");
        };
        assert_eq!(
            (
                i.identity.email.as_str(),
                i.identity.name.as_str(),
                i.identity.school.as_str()
            ),
            ("a@x", "ada_l", "7")
        );
        assert_eq!(i.identity.roles, ["teacher"]);
        assert_eq!(i.audiences, ["api-1", "api-2", "c"]);
    }

    async fn remote(
        status: u16,
        body: &str,
        introspection: bool,
    ) -> Result<Verdict, LoopwiseError> {
        let http = Arc::new(Scripted(HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
        }));
        let t = token(b"k", json!({"exp": NOW + 60}));
        validate(&Mode::Remote, &loopwise(http, introspection), &t, NOW).await
    }

    #[tokio::test]
    async fn userinfo_4xx_means_invalid_and_5xx_means_unavailable() {
        let ok = remote(200, r#"{"sub":"ada","org_id":4242}"#, false).await;
        assert!(
            matches!(ok, Ok(Verdict::Valid(ref i)) if i.identity.sub == "ada"),
            "{ok:?}"
        );
        for status in [400, 401, 403, 404, 413, 414] {
            for body in ["", "<html>nope</html>", r#"{"error":"invalid_token"}"#] {
                assert_eq!(
                    remote(status, body, false).await,
                    Ok(Verdict::Invalid),
                    "{status} {body}"
                );
            }
        }
        for status in [429, 500, 502, 503] {
            assert!(
                matches!(remote(status, "", false).await, Err(LoopwiseError::Unavailable(s)) if s == status),
                "{status}"
            );
        }
        let t = token(b"k", json!({}));
        let down = validate(&Mode::Remote, &loopwise(Arc::new(Down), false), &t, NOW).await;
        assert!(
            matches!(down, Err(LoopwiseError::Unreachable(_))),
            "{down:?}"
        );
    }

    #[tokio::test]
    async fn introspection_4xx_means_invalid_except_for_our_own_credentials() {
        let ok = remote(200, r#"{"active":true,"sub":"ada","exp":10060}"#, true).await;
        assert!(
            matches!(ok, Ok(Verdict::Valid(ref i)) if i.expires_at == Some(10_060)),
            "{ok:?}"
        );
        assert_eq!(
            remote(200, r#"{"active":false}"#, true).await,
            Ok(Verdict::Invalid)
        );
        for status in [400, 404, 413, 414] {
            assert_eq!(
                remote(status, "", true).await,
                Ok(Verdict::Invalid),
                "{status}"
            );
        }
        for status in [401, 403] {
            let e = remote(status, r#"{"error":"invalid_client"}"#, true).await;
            assert!(
                matches!(e, Err(LoopwiseError::Refused { .. })),
                "{status}: {e:?}"
            );
        }
        for status in [429, 500, 503] {
            assert!(
                matches!(
                    remote(status, "", true).await,
                    Err(LoopwiseError::Unavailable(_))
                ),
                "{status}"
            );
        }
        assert!(matches!(
            remote(302, "", true).await,
            Err(LoopwiseError::Malformed(_))
        ));
    }
}
