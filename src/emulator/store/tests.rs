use super::*;
use crate::emulator::error::{ErrorCode, OAuthError};
use crate::emulator::params::Params;
use crate::oauth::pkce;

const REDIRECT: &str = "http://127.0.0.1:8080/oauth2/callback";

fn store() -> Store {
    store_with(None)
}

fn store_with(openid: Option<std::sync::Arc<SigningKey>>) -> Store {
    let mut s = Store::new(Settings {
        issuer: "http://lw.test".into(),
        jwt_secret: b"secret-secret-secret-secret-1234".to_vec(),
        access_token_ttl: 100,
        code_ttl: 60,
        school_id: 7,
        school_subdomain: "demo".into(),
        access_token_padding: 0,
        openid,
    });
    s.add_client(Client::preregistered("app", None, REDIRECT));
    s
}

fn params(pairs: &[(&str, &str)]) -> Params {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    Params::parse(ser.finish().as_bytes())
}

fn authorize(s: &mut Store, verifier: &str, extra: &[(&str, &str)]) -> String {
    let challenge = pkce::challenge_s256(verifier);
    let mut p = vec![
        ("response_type", "code"),
        ("client_id", "app"),
        ("redirect_uri", REDIRECT),
        ("state", "st"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    p.extend_from_slice(extra);
    let req = s.begin_authorize(&params(&p), 1000).unwrap();
    let req = s.login(&req.id, &req.csrf, "grace", 1000).unwrap();
    let loc = s.decide(&req.id, &req.csrf, true, 1000).unwrap();
    let u = url::Url::parse(&loc).unwrap();
    let q: HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st");
    q["code"].clone()
}

fn exchange(
    s: &mut Store,
    code: &str,
    verifier: &str,
    now: u64,
) -> Result<TokenResponse, OAuthError> {
    let p = params(&[
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ]);
    s.exchange_code("app", &p, now)
        .map(|r| r.0)
        .map_err(|e| e.0)
}

const V: &str = "a-verifier-that-is-long-enough-for-rfc-7636-rules";

#[test]
fn happy_path_then_rotation_and_replay() {
    let mut s = store();
    let code = authorize(&mut s, V, &[]);
    let t1 = exchange(&mut s, &code, V, 1001).unwrap();
    let info = s.authenticate_bearer(&t1.access_token, 1002).unwrap();
    assert_eq!(info.user.sub, "grace");
    let t2 = s
        .refresh(
            "app",
            &params(&[("refresh_token", &t1.refresh_token)]),
            1003,
        )
        .unwrap()
        .0;
    assert_ne!(t2.refresh_token, t1.refresh_token);
    let (e, fx) = s
        .refresh(
            "app",
            &params(&[("refresh_token", &t1.refresh_token)]),
            1004,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidGrant);
    assert_eq!(fx.families_revoked, 1);
    assert!(s.authenticate_bearer(&t2.access_token, 1005).is_err());
    let e = s
        .refresh(
            "app",
            &params(&[("refresh_token", &t2.refresh_token)]),
            1006,
        )
        .unwrap_err()
        .0;
    assert_eq!(e.code, ErrorCode::InvalidGrant);
}

#[test]
fn code_rules() {
    let mut s = store();
    let code = authorize(&mut s, V, &[]);
    let wrong = "b-verifier-that-is-long-enough-for-rfc-7636-rules";
    assert_eq!(
        exchange(&mut s, &code, wrong, 1001).unwrap_err().code,
        ErrorCode::InvalidGrant
    );
    // spent by the failed attempt
    assert!(exchange(&mut s, &code, V, 1001).is_err());

    let code = authorize(&mut s, V, &[]);
    assert!(
        exchange(&mut s, &code, V, 1060).is_err(),
        "expired at issued_at + ttl"
    );

    let code = authorize(&mut s, V, &[]);
    let t = exchange(&mut s, &code, V, 1001).unwrap();
    assert!(exchange(&mut s, &code, V, 1002).is_err());
    assert!(
        s.authenticate_bearer(&t.access_token, 1003).is_err(),
        "replay revokes"
    );
}

#[test]
fn access_tokens_expire_on_the_emulator_clock() {
    let mut s = store();
    let code = authorize(&mut s, V, &[]);
    let t = exchange(&mut s, &code, V, 1000).unwrap();
    assert!(s.authenticate_bearer(&t.access_token, 1099).is_ok());
    assert!(s.authenticate_bearer(&t.access_token, 1100).is_err());
}

#[test]
fn scope_is_granted_as_a_subset_and_unknown_scopes_fail() {
    let allowed = vec!["read".to_string(), "courses:read".to_string()];
    assert_eq!(
        grant_scopes(Some("read students:read"), &allowed).unwrap(),
        ["read"]
    );
    assert_eq!(
        grant_scopes(Some("read bogus"), &allowed).unwrap_err().code,
        ErrorCode::InvalidScope
    );
    assert_eq!(grant_scopes(None, &allowed).unwrap(), allowed);
}

#[test]
fn untrusted_redirects_are_pages_not_redirects() {
    let mut s = store();
    let c = pkce::challenge_s256(V);
    let base = [
        ("response_type", "code"),
        ("client_id", "app"),
        ("code_challenge", c.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut p = base.to_vec();
    p.push(("redirect_uri", "http://evil.test/cb"));
    assert!(matches!(
        s.begin_authorize(&params(&p), 0),
        Err(AuthorizeError::Page(_))
    ));
    let mut p = base.to_vec();
    p.push(("redirect_uri", REDIRECT));
    p.push(("redirect_uri", REDIRECT));
    assert!(matches!(
        s.begin_authorize(&params(&p), 0),
        Err(AuthorizeError::Page(_))
    ));
    let mut p = base.to_vec();
    p[3] = ("code_challenge_method", "plain");
    p.push(("redirect_uri", REDIRECT));
    assert!(matches!(
        s.begin_authorize(&params(&p), 0),
        Err(AuthorizeError::Redirect(_, e)) if e.code == ErrorCode::InvalidRequest
    ));
}

#[test]
fn csrf_and_expiry_guard_the_forms() {
    let mut s = store();
    let c = pkce::challenge_s256(V);
    let p = params(&[
        ("response_type", "code"),
        ("client_id", "app"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", c.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let req = s.begin_authorize(&p, 0).unwrap();
    assert!(s.login(&req.id, "forged", "ada", 0).is_err());
    assert!(
        s.decide(&req.id, &req.csrf, true, 0).is_err(),
        "no user yet"
    );
    assert!(s
        .login(&req.id, &req.csrf, "ada", AUTHZ_REQUEST_TTL)
        .is_err());
}

#[test]
fn registration_validates_metadata() {
    let mut s = store();
    let req = |json: &str| serde_json::from_str::<RegistrationRequest>(json).unwrap();
    let e = s
        .register(req(r#"{"redirect_uris":["/relative"]}"#), 0)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRedirectUri);
    let e = s
        .register(req(r#"{"redirect_uris":["https://a.test/cb#frag"]}"#), 0)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRedirectUri);
    let e = s
        .register(
            req(r#"{"redirect_uris":["https://a.test/cb"],"grant_types":["password"]}"#),
            0,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
    let ok = s
        .register(
            req(r#"{"redirect_uris":["https://a.test/cb"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"client_secret_post","scope":"read nope"}"#),
            0,
        )
        .unwrap();
    assert!(ok.client_secret.is_some());
    assert_eq!(ok.scope, "read");
    assert!(s.client(&ok.client_id).is_some());
}

#[test]
fn access_token_padding_adds_a_claim_of_that_size_and_stays_valid() {
    let plain = {
        let mut s = store();
        let code = authorize(&mut s, V, &[]);
        exchange(&mut s, &code, V, 1001).unwrap().access_token
    };
    let mut s = store();
    s.settings.access_token_padding = 6000;
    let code = authorize(&mut s, V, &[]);
    let padded = exchange(&mut s, &code, V, 1001).unwrap().access_token;
    let claims = |t: &str| -> serde_json::Value {
        let payload = t.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert!(claims(&plain).get("padding").is_none());
    assert_eq!(claims(&padded)["padding"].as_str().unwrap().len(), 6000);
    assert!(padded.len() > plain.len() + 8000, "base64 of 6000 bytes");
    assert_eq!(
        s.authenticate_bearer(&padded, 1002).unwrap().user.sub,
        "grace"
    );
}

#[test]
fn openid_adds_an_id_token_the_gateway_verifies_with_the_jwks() {
    use crate::oauth::id_token::{verify, Expected};
    let key = std::sync::Arc::new(SigningKey::generate());
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(key.jwks()).unwrap();
    let mut s = store_with(Some(key));
    let code = authorize(
        &mut s,
        V,
        &[("scope", "openid email read"), ("nonce", "n-123")],
    );
    let t = exchange(&mut s, &code, V, 1001).unwrap();
    let id = t.id_token.expect("openid granted: an id_token");
    let expected = |nonce| Expected {
        issuer: "http://lw.test",
        client_id: "app",
        nonce,
        now: 1002,
    };
    let claims = verify(&id, Some(&jwks), None, &expected("n-123")).unwrap();
    assert_eq!(claims["sub"], "grace");
    assert_eq!(claims["email"], "grace@demo.loopwise.test");
    assert!(claims.get("name").is_none(), "profile was not granted");
    assert_eq!(claims["auth_time"], 1000);
    assert!(verify(&id, Some(&jwks), None, &expected("other")).is_err());
    let other: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(SigningKey::generate().jwks()).unwrap();
    assert!(verify(&id, Some(&other), None, &expected("n-123")).is_err());
    // A refresh carries no id_token; nor does a code exchange without `openid`.
    let r = s
        .refresh("app", &params(&[("refresh_token", &t.refresh_token)]), 1003)
        .unwrap()
        .0;
    assert!(r.id_token.is_none());
    let code = authorize(&mut s, V, &[("scope", "read")]);
    assert!(exchange(&mut s, &code, V, 1004).unwrap().id_token.is_none());
}
