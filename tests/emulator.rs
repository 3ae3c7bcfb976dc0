//! The emulator's strict rules, each driven over real HTTP. Every test here fails if the
//! rule it names is removed from the emulator.

use std::time::Duration;

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use loopgate::emulator::{AccessClaims, ClientSpec, USERS};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn metadata_advertises_the_loopwise_endpoints() {
    let em = emulator().await;
    let base = em.url();
    let m: Value = http()
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], base);
    assert_eq!(
        m["authorization_endpoint"],
        format!("{base}/oauth/authorize")
    );
    assert_eq!(m["token_endpoint"], format!("{base}/api/oauth/token"));
    assert_eq!(m["revocation_endpoint"], format!("{base}/api/oauth/revoke"));
    assert_eq!(
        m["registration_endpoint"],
        format!("{base}/api/oauth/register")
    );
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        serde_json::json!(["none", "client_secret_post"])
    );
    let scopes = m["scopes_supported"].as_array().unwrap();
    for s in ["read", "courses:read", "school:read", "students:write"] {
        assert!(scopes.contains(&Value::from(s)), "{s}");
    }
}

#[tokio::test]
async fn happy_path_issues_loopwise_shaped_tokens_and_hs256_jwts() {
    let em = emulator().await;
    let h = http();
    let t = tokens_for(&h, em.url(), "read courses:read", "grace").await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 7200);
    assert_eq!(t["scope"], "read courses:read");
    assert_eq!(t["school_id"], 4242);
    assert_eq!(t["school_subdomain"], "demo");
    assert!(t["created_at"].as_u64().unwrap() > 1_600_000_000);
    assert!(t["refresh_token"].as_str().unwrap().len() >= 43);

    // The access token verifies with the configured secret and carries the claims.
    let jwt = t["access_token"].as_str().unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_issuer(&[em.url()]);
    let claims = jsonwebtoken::decode::<AccessClaims>(
        jwt,
        &jsonwebtoken::DecodingKey::from_secret(b"test-jwt-secret-of-reasonable-length"),
        &v,
    )
    .expect("HS256 with the configured secret")
    .claims;
    assert_eq!(claims.sub, "grace");
    assert_eq!(claims.client_id, CLIENT);
    assert_eq!(claims.scope, "read courses:read");
    assert_eq!(claims.school_id, 4242);
    assert_eq!(claims.exp - claims.iat, 7200);
    assert!(!claims.jti.is_empty());
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");

    let s = em.stats();
    assert_eq!(s.grant("authorization_code", "ok"), 1);
    assert_eq!(s.endpoint("token"), 1);
}

#[tokio::test]
async fn wrong_verifier_is_invalid_grant() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let code = get_code(&h, em.url(), &p, "read", "ada").await;
    let other = pkce();
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", &other.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("code_verifier"));
    // A verifier that is too short is malformed, not merely wrong.
    let code = get_code(&h, em.url(), &p, "read", "ada").await;
    let (_, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", "short"),
        ],
    )
    .await;
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(em.stats().grant("authorization_code", "invalid_grant"), 1);
}

/// An authorize request that should bounce back to the client with `error`.
async fn authorize_error(base: &str, pairs: &[(&str, &str)]) -> (String, Option<String>) {
    let r = http().get(authorize_url(base, pairs)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = location(r.headers());
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(query_param(&loc, "code"), None);
    (
        query_param(&loc, "error").expect("error in redirect"),
        query_param(&loc, "state"),
    )
}

#[tokio::test]
async fn plain_pkce_is_refused() {
    let em = emulator().await;
    let p = pkce();
    let (err, state) = authorize_error(
        em.url(),
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("state", "s1"),
            ("code_challenge", &p.verifier),
            ("code_challenge_method", "plain"),
        ],
    )
    .await;
    assert_eq!(err, "invalid_request");
    assert_eq!(state.as_deref(), Some("s1"));
}

#[tokio::test]
async fn missing_challenge_or_method_is_refused() {
    let em = emulator().await;
    let p = pkce();
    let base = [
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("redirect_uri", REDIRECT),
        ("state", "s2"),
    ];
    let (err, _) = authorize_error(em.url(), &base).await;
    assert_eq!(err, "invalid_request");
    let mut no_method = base.to_vec();
    no_method.push(("code_challenge", &p.challenge));
    let (err, _) = authorize_error(em.url(), &no_method).await;
    assert_eq!(err, "invalid_request");
    let mut wrong_type = base.to_vec();
    wrong_type[0] = ("response_type", "token");
    wrong_type.push(("code_challenge", &p.challenge));
    wrong_type.push(("code_challenge_method", "S256"));
    let (err, _) = authorize_error(em.url(), &wrong_type).await;
    assert_eq!(err, "unsupported_response_type");
}

#[tokio::test]
async fn redirect_uri_mismatch_shows_a_page_and_never_redirects() {
    let em = emulator().await;
    let p = pkce();
    for (client, redirect) in [
        (CLIENT, "http://127.0.0.1:9/oauth2/callback/"),
        (CLIENT, "http://evil.example/oauth2/callback"),
        (CLIENT, "http://127.0.0.1:9/oauth2/callback?x=1"),
        ("no-such-client", REDIRECT),
    ] {
        let r = http()
            .get(
                standard_authorize(em.url(), &p.challenge, "read", "s").replace(
                    &format!("client_id={CLIENT}&redirect_uri="),
                    &format!(
                        "client_id={client}&redirect_uri={}&was=",
                        form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
                    ),
                ),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{client} {redirect}");
        assert!(r.headers().get("location").is_none());
        let html = r.text().await.unwrap();
        assert!(html.contains("cannot continue"));
    }
    // At the token endpoint, too, the redirect_uri must be byte-identical.
    let h = http();
    let code = get_code(&h, em.url(), &p, "read", "ada").await;
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/oauth2/callback/"),
            ("client_id", CLIENT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn code_replay_fails_and_revokes_what_the_code_issued() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let code = get_code(&h, em.url(), &p, "read", "ada").await;
    let t = exchange(&h, em.url(), &code, &p.verifier).await;
    let access = t["access_token"].as_str().unwrap();
    let userinfo = format!("{}/api/oauth/userinfo", em.url());
    assert_eq!(bearer_get(&h, &userinfo, access).await.0, StatusCode::OK);

    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let (status, challenge, _) = bearer_get(&h, &userinfo, access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("invalid_token"));
    let (status, body) = refresh(&h, em.url(), t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(em.stats().event("family_revoked"), 1);
}

#[tokio::test]
async fn expired_code_is_invalid_grant() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let code = get_code(&h, em.url(), &p, "read", "ada").await;
    em.advance_clock(Duration::from_secs(60));
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("expired"));

    // Well inside the limit still works (margin for the wall clock ticking meanwhile).
    let code = get_code(&h, em.url(), &p, "read", "ada").await;
    em.advance_clock(Duration::from_secs(55));
    exchange(&h, em.url(), &code, &p.verifier).await;
}

#[tokio::test]
async fn refresh_rotates_and_a_replay_revokes_the_whole_family() {
    let em = emulator().await;
    let h = http();
    let t1 = tokens_for(&h, em.url(), "read", "alan").await;
    let r1 = t1["refresh_token"].as_str().unwrap();
    let (status, t2) = refresh(&h, em.url(), r1).await;
    assert_eq!(status, StatusCode::OK);
    let r2 = t2["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2, "rotation: a new refresh token each time");
    assert_eq!(t2["scope"], "read");
    let a2 = t2["access_token"].as_str().unwrap();
    let userinfo = format!("{}/api/oauth/userinfo", em.url());
    assert_eq!(bearer_get(&h, &userinfo, a2).await.0, StatusCode::OK);

    // Replaying the old one: invalid_grant, and every token of the grant dies.
    let (status, body) = refresh(&h, em.url(), r1).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        bearer_get(&h, &userinfo, a2).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = refresh(&h, em.url(), r2).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let s = em.stats();
    assert_eq!(s.grant("refresh_token", "ok"), 1);
    assert_eq!(s.grant("refresh_token", "invalid_grant"), 2);
    assert_eq!(s.event("family_revoked"), 1);
}

#[tokio::test]
async fn refresh_can_narrow_but_not_widen_scope() {
    let em = emulator().await;
    let h = http();
    let t = tokens_for(&h, em.url(), "read courses:read", "ada").await;
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", CLIENT),
            ("scope", "read students:read"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", CLIENT),
            ("scope", "courses:read"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "courses:read");
}

async fn register(base: &str, body: &str) -> (StatusCode, Value) {
    let r = http()
        .post(format!("{base}/api/oauth/register"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn granted_scope_may_be_a_subset_of_what_was_asked() {
    let em = emulator().await;
    let redirect = "http://127.0.0.1:9/cb";
    let (status, reg) = register(
        em.url(),
        &format!(
            r#"{{"client_name":"Narrow","redirect_uris":["{redirect}"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"none","scope":"read courses:read"}}"#
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reg["scope"], "read courses:read");
    let client_id = reg["client_id"].as_str().unwrap();
    let h = http();
    let p = pkce();
    let page = open_login_page(
        &h,
        &authorize_url(
            em.url(),
            &[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect),
                ("scope", "read courses:read students:read"),
                ("code_challenge", &p.challenge),
                ("code_challenge_method", "S256"),
            ],
        ),
    )
    .await;
    let back = finish_login(&h, em.url(), &page, "grace", true).await;
    let code = query_param(&back, "code").unwrap();
    let (status, t) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t["scope"], "read courses:read",
        "students:read is not granted"
    );

    // An unknown scope is an error, not silently dropped.
    let (err, _) = authorize_error(
        em.url(),
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("scope", "read teleport"),
            ("code_challenge", &p.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(err, "invalid_scope");
}

#[tokio::test]
async fn deny_redirects_with_access_denied_and_state() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let page = open_login_page(
        &h,
        &standard_authorize(em.url(), &p.challenge, "read", "keep-me"),
    )
    .await;
    let back = finish_login(&h, em.url(), &page, "alan", false).await;
    assert_eq!(
        query_param(&back, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&back, "state").as_deref(), Some("keep-me"));
    assert_eq!(query_param(&back, "code"), None);
}

#[tokio::test]
async fn confidential_clients_must_authenticate_with_client_secret_post() {
    let em = emulator_with(|c| {
        c.clients.push(ClientSpec {
            id: "conf".into(),
            secret: Some("s3cret-value".into()),
            redirect_uri: REDIRECT.into(),
        })
    })
    .await;
    let h = http();
    let p = pkce();
    let page = open_login_page(
        &h,
        &authorize_url(
            em.url(),
            &[
                ("response_type", "code"),
                ("client_id", "conf"),
                ("redirect_uri", REDIRECT),
                ("code_challenge", &p.challenge),
                ("code_challenge_method", "S256"),
            ],
        ),
    )
    .await;
    let code = query_param(
        &finish_login(&h, em.url(), &page, "ada", true).await,
        "code",
    )
    .unwrap();
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "conf"),
        ("code_verifier", p.verifier.as_str()),
    ];
    let (status, body) = token(&h, em.url(), &base).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    let mut wrong = base.to_vec();
    wrong.push(("client_secret", "guess"));
    let (status, body) = token(&h, em.url(), &wrong).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    // Failed client authentication does not spend the code.
    let mut right = base.to_vec();
    right.push(("client_secret", "s3cret-value"));
    let (status, body) = token(&h, em.url(), &right).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(em.stats().grant("authorization_code", "invalid_client"), 2);

    // A public client may not present a secret.
    let t = tokens_for(&h, em.url(), "read", "ada").await;
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", CLIENT),
            ("client_secret", "anything"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn revoke_always_answers_200_and_kills_the_grant() {
    let em = emulator().await;
    let h = http();
    let t = tokens_for(&h, em.url(), "read", "grace").await;
    let revoke = format!("{}/api/oauth/revoke", em.url());
    let (status, _) = post_form(
        &h,
        &revoke,
        &[("token", "never-issued"), ("client_id", CLIENT)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rt = t["refresh_token"].as_str().unwrap();
    let (status, _) = post_form(
        &h,
        &revoke,
        &[
            ("token", rt),
            ("token_type_hint", "refresh_token"),
            ("client_id", CLIENT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = refresh(&h, em.url(), rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let userinfo = format!("{}/api/oauth/userinfo", em.url());
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(
        bearer_get(&h, &userinfo, at).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(em.stats().event("family_revoked"), 1);

    // Revoking just an access token leaves the refresh token usable.
    let t = tokens_for(&h, em.url(), "read", "grace").await;
    let at = t["access_token"].as_str().unwrap();
    let (status, _) = post_form(&h, &revoke, &[("token", at), ("client_id", CLIENT)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        bearer_get(&h, &userinfo, at).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&h, em.url(), t["refresh_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(em.stats().event("token_revoked"), 1);
    // Unknown clients are still told off.
    let (status, body) = post_form(&h, &revoke, &[("token", at), ("client_id", "nobody")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn userinfo_claims_per_demo_user() {
    let em = emulator().await;
    let h = http();
    let userinfo = format!("{}/api/oauth/userinfo", em.url());
    let mut first_roles = Vec::new();
    for user in USERS {
        let t = tokens_for(&h, em.url(), "read", user.sub).await;
        let (status, _, info) =
            bearer_get(&h, &userinfo, t["access_token"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(info["sub"], user.sub);
        assert_eq!(info["name"], user.name);
        assert_eq!(info["email"], user.email);
        assert_eq!(info["email_verified"], user.email_verified);
        assert_eq!(info["org_id"], 4242);
        assert_eq!(info["roles"], serde_json::json!(user.roles));
        first_roles.push(info["roles"][0].as_str().unwrap().to_string());
    }
    assert_eq!(first_roles, ["school_admin", "teacher", "student"]);
    let (status, challenge, body) = bearer_get(&h, &userinfo, "not.a.jwt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().starts_with("Bearer"));
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn access_tokens_expire_after_the_configured_ttl() {
    let em = emulator_with(|c| c.access_token_ttl = Duration::from_secs(5)).await;
    let h = http();
    let t = tokens_for(&h, em.url(), "read", "ada").await;
    assert_eq!(t["expires_in"], 5);
    let me = format!("{}/api/v1/me", em.url());
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(bearer_get(&h, &me, at).await.0, StatusCode::OK);
    em.advance_clock(Duration::from_secs(5));
    let (status, challenge, _) = bearer_get(&h, &me, at).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn resource_api_checks_bearer_and_scope() {
    let em = emulator().await;
    let h = http();
    let me = format!("{}/api/v1/me", em.url());
    let courses = format!("{}/api/v1/courses", em.url());
    let r = h.get(&me).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));

    let narrow = tokens_for(&h, em.url(), "courses:read", "grace").await;
    let at = narrow["access_token"].as_str().unwrap();
    let (status, challenge, body) = bearer_get(&h, &me, at).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let challenge = challenge.unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"read\""), "{challenge}");
    assert_eq!(body["error"], "insufficient_scope");
    let (status, _, body) = bearer_get(&h, &courses, at).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["courses"].as_array().unwrap().len() >= 2);

    let wide = tokens_for(&h, em.url(), "read", "grace").await;
    let (status, _, body) = bearer_get(&h, &me, wide["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sub"], "grace");
    assert_eq!(
        bearer_get(&h, &courses, wide["access_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::OK
    );

    let school = tokens_for(&h, em.url(), "school:read", "grace").await;
    let (status, _, _) = bearer_get(&h, &courses, school["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn repeated_parameters_are_refused() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let code = get_code(&h, em.url(), &p, "read", "ada").await;
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("repeated"));
    let (err, _) = authorize_error(
        em.url(),
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("scope", "read"),
            ("scope", "write"),
            ("code_challenge", &p.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(err, "invalid_request");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_an_rfc6749_error() {
    let em = emulator().await;
    let h = http();
    let base = em.url();
    let token_url = format!("{base}/api/oauth/token");
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            h.post(&token_url)
                .header("content-type", "application/json")
                .body("{\"grant_type\":1}"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            h.post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(vec![0xffu8, 0x00, b'=', b'%', b'&', b'&']),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            h.post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("grant_type=password&client_id={CLIENT}")),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            h.post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("client_id={CLIENT}&code={}", "x".repeat(5000))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            h.post(&token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("a=".repeat(100_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
        ),
        (
            h.post(format!("{base}/api/oauth/register"))
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
        ),
        (
            h.post(format!("{base}/api/oauth/register"))
                .header("content-type", "application/json")
                .body(r#"{"redirect_uris":"http://a/cb"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
        ),
        (
            h.post(format!("{base}/api/oauth/register"))
                .header("content-type", "application/json")
                .body(r#"{"redirect_uris":["not a uri"]}"#),
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
        ),
        (
            h.get(&token_url),
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
        ),
        (
            h.post(format!("{base}/oauth/authorize/login")).form(&[
                ("request_id", "x"),
                ("csrf", "y"),
                ("user", "ada"),
            ]),
            StatusCode::BAD_REQUEST,
            "",
        ),
    ];
    for (i, (req, status, error)) in cases.into_iter().enumerate() {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "case {i}");
        let text = r.text().await.unwrap();
        if error.is_empty() {
            assert!(text.contains("CSRF"), "case {i}: {text}");
        } else {
            let body: Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("case {i}: {text}"));
            assert_eq!(body["error"], error, "case {i}: {body}");
            assert!(body["error_description"].is_string(), "case {i}");
        }
    }
    // Non-ASCII form ids (a multi-byte character across byte 16) are refused, not a panic.
    for path in ["login", "consent"] {
        let r = h
            .post(format!("{base}/oauth/authorize/{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("request_id=aaaaaaaaaaaaaaa%C3%A9&csrf=x&user=grace&decision=approve")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    // Still alive afterwards.
    let r = h
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Loopwise's front servers refuse over-long input before the application runs: no login
/// page, no redirect echoing the value, nothing counted at the endpoint.
#[tokio::test]
async fn over_long_urls_and_parameters_are_refused_up_front() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let refused = |r: &reqwest::Response, why: &str| {
        assert!(r.status().is_client_error(), "{why}: {}", r.status());
        assert!(r.headers().get("location").is_none(), "{why}");
        assert!(r.headers().get("set-cookie").is_none(), "{why}");
    };
    // A 50 KB state makes the URL too long.
    let url = standard_authorize(em.url(), &p.challenge, "read", &"s".repeat(50 * 1024));
    let r = h.get(&url).send().await.unwrap();
    refused(&r, "50 KB state");
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);
    let text = r.text().await.unwrap();
    assert!(!text.contains("Sign in to Loopwise"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "invalid_request");
    // A URL under the limit whose state is over the parameter limit (2048 bytes).
    let url = standard_authorize(em.url(), &p.challenge, "read", &"s".repeat(2049));
    let r = h.get(&url).send().await.unwrap();
    refused(&r, "2049-byte state");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("`state` is too long"));
    assert_eq!(em.stats().endpoint("authorize"), 0);
    assert_eq!(em.stats().error("invalid_request"), 2);
    // At the limit it is an ordinary login.
    let url = standard_authorize(em.url(), &p.challenge, "read", &"s".repeat(2048));
    open_login_page(&h, &url).await;
    // Form parameters have the same limit.
    let (status, body) = token(
        &h,
        em.url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &"c".repeat(2049)),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("too long"));
}

#[tokio::test]
async fn forms_are_bound_to_the_browser_that_saw_them() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let page = open_login_page(&h, &standard_authorize(em.url(), &p.challenge, "read", "s")).await;
    // The right fields without the browser's binding cookie: refused.
    let r = h
        .post(format!("{}/oauth/authorize/login", em.url()))
        .form(&[
            ("request_id", page.request_id.as_str()),
            ("csrf", page.csrf.as_str()),
            ("user", "ada"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Another browser's cookie: refused.
    let other = open_login_page(&h, &standard_authorize(em.url(), &p.challenge, "read", "s")).await;
    let r = h
        .post(format!("{}/oauth/authorize/consent", em.url()))
        .header("cookie", &other.cookie)
        .form(&[
            ("request_id", page.request_id.as_str()),
            ("csrf", page.csrf.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    // The real browser can still finish.
    finish_login(&h, em.url(), &page, "ada", true).await;
}

#[tokio::test]
async fn several_tabs_can_sign_in_at_once() {
    let em = emulator().await;
    let h = http();
    let p = pkce();
    let mut pages = Vec::new();
    for i in 0..5 {
        pages.push(
            open_login_page(
                &h,
                &standard_authorize(em.url(), &p.challenge, "read", &format!("tab-{i}")),
            )
            .await,
        );
    }
    // All five cookies live side by side in one browser.
    let jar = pages
        .iter()
        .map(|p| p.cookie.clone())
        .collect::<Vec<_>>()
        .join("; ");
    for (i, page) in pages.iter().enumerate().rev() {
        let shared = LoginPage {
            cookie: jar.clone(),
            request_id: page.request_id.clone(),
            csrf: page.csrf.clone(),
        };
        let back = finish_login(&h, em.url(), &shared, "grace", true).await;
        assert_eq!(query_param(&back, "state"), Some(format!("tab-{i}")));
        let code = query_param(&back, "code").unwrap();
        exchange(&h, em.url(), &code, &p.verifier).await;
    }
    assert_eq!(em.stats().grant("authorization_code", "ok"), 5);
}

#[tokio::test]
async fn auto_approve_signs_in_the_chosen_user_without_pages() {
    for (auto_user, expected) in [(None, "ada"), (Some("alan"), "alan")] {
        let em = emulator_with(|c| {
            c.auto_approve = true;
            c.auto_user = auto_user.map(str::to_string);
        })
        .await;
        let h = http();
        let p = pkce();
        let r = h
            .get(standard_authorize(em.url(), &p.challenge, "read", "auto"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
        let loc = location(r.headers());
        assert_eq!(query_param(&loc, "state").as_deref(), Some("auto"));
        let t = exchange(
            &h,
            em.url(),
            &query_param(&loc, "code").unwrap(),
            &p.verifier,
        )
        .await;
        let (_, _, info) = bearer_get(
            &h,
            &format!("{}/api/oauth/userinfo", em.url()),
            t["access_token"].as_str().unwrap(),
        )
        .await;
        assert_eq!(info["sub"], expected);
    }
}

#[tokio::test]
async fn stats_count_and_reset_over_http() {
    let em = emulator().await;
    let h = http();
    let t = tokens_for(&h, em.url(), "read", "ada").await;
    refresh(&h, em.url(), t["refresh_token"].as_str().unwrap()).await;
    let stats: Value = h
        .get(format!("{}/__emulator/stats", em.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["grants"]["refresh_token"]["ok"], 1);
    assert_eq!(stats["grants"]["authorization_code"]["ok"], 1);
    assert_eq!(stats["endpoints"]["authorize"], 1);
    assert_eq!(stats["events"]["code_issued"], 1);
    let r = h
        .post(format!("{}/__emulator/reset", em.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(em.stats(), Default::default());
}

#[tokio::test]
async fn dynamic_registration_of_a_confidential_client() {
    let em = emulator().await;
    let (status, reg) = register(
        em.url(),
        r#"{"client_name":"Gateway","redirect_uris":["https://gw.example/oauth2/callback"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"client_secret_post"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(reg["client_id"].as_str().unwrap().starts_with("lw_"));
    assert_eq!(reg["client_secret"].as_str().unwrap().len(), 43);
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_post");
    assert!(reg["scope"].as_str().unwrap().contains("courses:read"));
    let (status, reg) = register(em.url(), r#"{"redirect_uris":["https://a.test/cb"],"token_endpoint_auth_method":"client_secret_basic"}"#).await;
    assert_eq!(
        (status, reg["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client_metadata"))
    );
    assert_eq!(em.stats().event("client_registered"), 1);
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let em = emulator().await;
    let url = format!("{}/.well-known/oauth-authorization-server", em.url());
    assert!(http().get(&url).send().await.is_ok());
    em.shutdown().await;
    assert!(
        http().get(&url).send().await.is_err(),
        "connection refused after shutdown"
    );
}
