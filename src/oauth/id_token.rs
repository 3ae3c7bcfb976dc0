//! OpenID Connect ID tokens (Core §3.1.3.7): the signature (a key of the provider's JWKS,
//! or HS256 with the client secret), `iss`, `aud` (and `azp` when there are several
//! audiences), `exp` and the login's `nonce`, checked against `now`. Pure: the keys are
//! given.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::claims::ClaimNames;
use crate::session::Identity;

/// Seconds of clock skew allowed on `exp`/`iat`.
const LEEWAY: u64 = 60;

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the id_token is not a JWT")]
    NotAJwt,
    #[error("the id_token's alg `{0}` is not accepted")]
    Algorithm(String),
    /// No JWKS key has the token's `kid` (the caller may fetch the JWKS again once).
    #[error("no key of the provider's JWKS matches the id_token")]
    UnknownKey,
    #[error("the id_token's signature does not verify")]
    Signature,
    #[error("the id_token's `{0}` is wrong")]
    Claim(&'static str),
}

/// What the token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: u64,
}

/// The `kid` (if any) and algorithm of an ID token, read without verifying it.
pub fn header(token: &str) -> Result<(Option<String>, Algorithm), IdTokenError> {
    let h = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::NotAJwt)?;
    Ok((h.kid, h.alg))
}

/// Verifies `token` and returns its claims. `jwks` verifies asymmetric algorithms,
/// `client_secret` HS256; `none` and algorithm mismatches are refused.
pub fn verify(
    token: &str,
    jwks: Option<&JwkSet>,
    client_secret: Option<&str>,
    expected: &Expected<'_>,
) -> Result<serde_json::Map<String, serde_json::Value>, IdTokenError> {
    let (kid, alg) = header(token)?;
    let key = match alg {
        Algorithm::HS256 => {
            let secret = client_secret.ok_or(IdTokenError::Algorithm("HS256".into()))?;
            DecodingKey::from_secret(secret.as_bytes())
        }
        Algorithm::HS384 | Algorithm::HS512 => {
            return Err(IdTokenError::Algorithm(format!("{alg:?}")))
        }
        _ => {
            let set = jwks.ok_or(IdTokenError::UnknownKey)?;
            let jwk = match &kid {
                Some(k) => set.find(k),
                // Without a kid, only an unambiguous set will do.
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            }
            .ok_or(IdTokenError::UnknownKey)?;
            DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKey)?
        }
    };
    let mut v = Validation::new(alg);
    // Checked below against `now` (the gateway's clock), not the system clock.
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map_err(|_| IdTokenError::Signature)?;
    let serde_json::Value::Object(claims) = data.claims else {
        return Err(IdTokenError::Claim("payload"));
    };
    check(&claims, expected)?;
    Ok(claims)
}

/// The claim checks of Core §3.1.3.7, pure.
fn check(
    c: &serde_json::Map<String, serde_json::Value>,
    e: &Expected<'_>,
) -> Result<(), IdTokenError> {
    if c.get("iss").and_then(|v| v.as_str()) != Some(e.issuer) {
        return Err(IdTokenError::Claim("iss"));
    }
    let audiences: Vec<&str> = match c.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&e.client_id) {
        return Err(IdTokenError::Claim("aud"));
    }
    if audiences.len() > 1 && c.get("azp").and_then(|v| v.as_str()) != Some(e.client_id) {
        return Err(IdTokenError::Claim("azp"));
    }
    match c.get("exp").and_then(|v| v.as_u64()) {
        Some(exp) if exp + LEEWAY > e.now => {}
        _ => return Err(IdTokenError::Claim("exp")),
    }
    if let Some(iat) = c.get("iat").and_then(|v| v.as_u64()) {
        if iat > e.now + LEEWAY {
            return Err(IdTokenError::Claim("iat"));
        }
    }
    if c.get("nonce").and_then(|v| v.as_str()) != Some(e.nonce) {
        return Err(IdTokenError::Claim("nonce"));
    }
    if c.get("sub")
        .and_then(|v| v.as_str())
        .is_none_or(str::is_empty)
    {
        return Err(IdTokenError::Claim("sub"));
    }
    Ok(())
}

/// The identity an ID token's claims name, with the configured claim names.
pub fn identity(
    claims: &serde_json::Map<String, serde_json::Value>,
    names: &ClaimNames,
) -> Identity {
    names.identity(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "client-secret-of-a-confidential-client";
    const NOW: u64 = 1_800_000_000;

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "https://op.test/realms/x",
            client_id: "loopgate",
            nonce: "n-123",
            now: NOW,
        }
    }

    fn claims() -> serde_json::Value {
        json!({"iss": "https://op.test/realms/x", "aud": "loopgate", "sub": "ada",
               "exp": NOW + 300, "iat": NOW - 5, "nonce": "n-123", "roles": "teacher"})
    }

    fn hs256(c: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            c,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_good_token_verifies_and_every_wrong_claim_is_named() {
        let ok = verify(&hs256(&claims(), SECRET), None, Some(SECRET), &expected()).unwrap();
        assert_eq!(ok["sub"], "ada");
        let cases: [(&str, serde_json::Value, &str); 8] = [
            ("iss", json!("https://evil.test"), "iss"),
            ("iss", json!("https://op.test/realms/x/"), "iss"),
            ("aud", json!("someone-else"), "aud"),
            ("aud", json!(["loopgate", "other"]), "azp"),
            ("exp", json!(NOW - LEEWAY - 1), "exp"),
            ("iat", json!(NOW + LEEWAY + 10), "iat"),
            ("nonce", json!("n-replayed"), "nonce"),
            ("sub", json!(""), "sub"),
        ];
        for (field, value, named) in cases {
            let mut c = claims();
            c[field] = value;
            assert_eq!(
                verify(&hs256(&c, SECRET), None, Some(SECRET), &expected()),
                Err(IdTokenError::Claim(named)),
                "{field}"
            );
        }
        let mut c = claims();
        c.as_object_mut().unwrap().remove("nonce");
        assert_eq!(
            verify(&hs256(&c, SECRET), None, Some(SECRET), &expected()),
            Err(IdTokenError::Claim("nonce"))
        );
        let mut c = claims();
        c["aud"] = json!(["loopgate", "other"]);
        c["azp"] = json!("loopgate");
        assert!(verify(&hs256(&c, SECRET), None, Some(SECRET), &expected()).is_ok());
    }

    #[test]
    fn signatures_must_verify_and_alg_none_or_hs_without_a_secret_is_refused() {
        let token = hs256(&claims(), "another-secret-entirely-0123456789");
        assert_eq!(
            verify(&token, None, Some(SECRET), &expected()),
            Err(IdTokenError::Signature)
        );
        // A public client has no secret: an HS256 token cannot be checked.
        assert!(matches!(
            verify(&hs256(&claims(), SECRET), None, None, &expected()),
            Err(IdTokenError::Algorithm(_))
        ));
        // alg none: header {"alg":"none"}.
        let none = format!(
            "eyJhbGciOiJub25lIn0.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                claims().to_string()
            )
        );
        assert!(verify(&none, None, Some(SECRET), &expected()).is_err());
        assert_eq!(
            verify("not-a-jwt", None, Some(SECRET), &expected()),
            Err(IdTokenError::NotAJwt)
        );
    }

    #[test]
    fn an_rs256_token_needs_its_key_in_the_jwks() {
        // A token signed with RS256: no JWKS, or a JWKS without its kid, is UnknownKey.
        let header = r#"{"alg":"RS256","kid":"k1"}"#;
        let b64 =
            |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let token = format!("{}.{}.c2ln", b64(header), b64(&claims().to_string()));
        assert_eq!(
            verify(&token, None, None, &expected()),
            Err(IdTokenError::UnknownKey)
        );
        let set: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "RSA", "kid": "other", "use": "sig", "alg": "RS256",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
            "e": "AQAB"
        }]}))
        .unwrap();
        assert_eq!(
            verify(&token, Some(&set), None, &expected()),
            Err(IdTokenError::UnknownKey)
        );
    }
}
