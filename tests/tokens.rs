//! Issue 4: transparent single-flight refresh for sessions, and Bearer API clients with
//! the moka validation cache. In-process emulator + echo upstream + gateway; the
//! gateway's clock is advanced instead of sleeping.

use std::time::Duration;

use crate::common::gw::*;
use crate::common::{bearer_get, http, tokens_for};
use reqwest::StatusCode;
use serde_json::Value;

const SESSION: &str = "loopgate_session";
const JWT_SECRET: &str = "test-jwt-secret-of-reasonable-length";

/// A rig whose emulator issues 120-second access tokens (refresh window: the last 60 s).
async fn short_tokens() -> Rig {
    rig_with(|e| e.access_token_ttl = Duration::from_secs(120), |_| {}).await
}

fn bearer_of(echo: &Value) -> String {
    echoed(echo, "authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string()
}

fn session_set_cookie(s: &Seen) -> Option<String> {
    s.set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{SESSION}=")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_happens_before_expiry_and_the_cookie_rides_on_that_response() {
    let rig = short_tokens().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "grace").await;
    let first = b.xhr("/a").await;
    assert!(
        session_set_cookie(&first).is_none(),
        "no refresh while fresh"
    );
    let old_token = bearer_of(&first.json());

    rig.gw.gateway().shared.clock.advance(55);
    let r = b.xhr("/a").await;
    assert!(
        session_set_cookie(&r).is_none(),
        "~65 s before expiry (margin for the wall clock ticking): not yet"
    );
    rig.gw.gateway().shared.clock.advance(6);
    let r = b.xhr("/b").await;
    assert_eq!(r.status, StatusCode::OK);
    let set = session_set_cookie(&r)
        .expect("the refreshed cookie is set on this very (proxied XHR) response");
    assert!(set.contains("HttpOnly") && set.contains("Path=/"));
    let new_token = bearer_of(&r.json());
    assert_ne!(
        new_token, old_token,
        "the upstream already got the new token"
    );
    assert_eq!(rig.em.stats().grant("refresh_token", "ok"), 1);
    let (status, _, _) = bearer_get(
        &http(),
        &format!("{}/api/oauth/userinfo", rig.em.url()),
        &new_token,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // With the new cookie, nothing more to do.
    for _ in 0..3 {
        let r = b.navigate("/c").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(bearer_of(&r.json()), new_token);
    }
    assert_eq!(rig.em.stats().grant("refresh_token", "ok"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_at_expiry_make_exactly_one_refresh() {
    let rig = short_tokens().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let cookie = b.jar.header_for("/");
    rig.gw.gateway().shared.clock.advance(120); // fully expired by the gateway's clock
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = rig.url(&format!("/xhr/{i}"));
        let cookie = cookie.clone();
        tasks.spawn(async move {
            let r = http()
                .get(url)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let set = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("loopgate_session="));
            let body: Value = r.json().await.unwrap();
            (status, set, bearer_of(&body))
        });
    }
    let mut tokens = std::collections::HashSet::new();
    let mut n = 0;
    while let Some(res) = tasks.join_next().await {
        let (status, set, token) = res.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(set, "every response carries the refreshed cookie");
        tokens.insert(token);
        n += 1;
    }
    assert_eq!(n, 50);
    assert_eq!(
        tokens.len(),
        1,
        "all 50 went upstream with the same new token"
    );
    let stats = rig.em.stats();
    assert_eq!(stats.grant("refresh_token", "ok"), 1, "single flight");
    assert_eq!(stats.grant("refresh_token", "invalid_grant"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_refresh_cookie_keeps_working_without_a_second_refresh() {
    let rig = short_tokens().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "alan").await;
    let old_cookie = b.jar.get(SESSION).unwrap().value.clone();
    rig.gw.gateway().shared.clock.advance(100);
    let r = b.xhr("/x").await; // refreshes; the jar takes the new cookie
    let new_token = bearer_of(&r.json());
    assert_ne!(b.jar.get(SESSION).unwrap().value, old_cookie);

    // Other tabs (or requests in flight) still carry the old cookie.
    for _ in 0..3 {
        let mut other_tab = Browser::new(&rig.url(""));
        other_tab.jar.set(SESSION, &old_cookie);
        let r = other_tab.navigate("/y").await;
        assert_eq!(r.status, StatusCode::OK, "no logout");
        assert_eq!(
            bearer_of(&r.json()),
            new_token,
            "served the new tokens from memory"
        );
        assert!(session_set_cookie(&r).is_some(), "and told to catch up");
    }
    let stats = rig.em.stats();
    assert_eq!(stats.grant("refresh_token", "ok"), 1);
    assert_eq!(
        stats.grant("refresh_token", "invalid_grant"),
        0,
        "the old refresh token was never spent twice"
    );
    assert_eq!(stats.event("family_revoked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_ends_the_session() {
    let rig = short_tokens().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "grace").await;
    assert_eq!(rig.em.revoke_user("grace"), 1);
    rig.gw.gateway().shared.clock.advance(70);
    let jar = b.jar.clone();
    let nav = b.navigate("/report?id=7").await;
    assert_eq!(nav.status, StatusCode::FOUND);
    assert!(
        nav.location().contains("/oauth/authorize"),
        "sent to log in again"
    );
    let clear = session_set_cookie(&nav).expect("session cookie cleared");
    assert!(clear.contains("Max-Age=0"));
    assert!(b.jar.get(SESSION).is_none());
    // It returns to the same URL after the new login.
    let cb = b
        .through_loopwise(&nav.location(), rig.em.url(), "grace")
        .await;
    let done = b.navigate(&cb).await;
    assert_eq!(done.location(), "/report?id=7");

    let mut xhr_tab = Browser::new(&rig.url(""));
    xhr_tab.jar = jar;
    let r = xhr_tab.xhr("/report").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("location").is_none());
    assert_eq!(
        rig.em.stats().grant("refresh_token", "invalid_grant"),
        1,
        "asked once, remembered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopwise_down_valid_sessions_keep_working_expired_ones_get_503() {
    let rig = short_tokens().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let Rig { em, gw, .. } = rig;
    em.shutdown().await;
    gw.gateway().shared.clock.advance(90); // inside the refresh window, token still valid
    for i in 0..30 {
        let r = if i % 2 == 0 {
            b.xhr("/w").await
        } else {
            b.navigate("/w").await
        };
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {i} failed while Loopwise is down"
        );
        assert!(session_set_cookie(&r).is_none());
    }
    gw.gateway().shared.clock.advance(30); // now expired, and no way to refresh
    let r = b.navigate("/w").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("Loopwise is unreachable"), "{}", r.body);
    let r = b.xhr("/w").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "loopwise_unreachable");
    assert!(
        b.jar.get(SESSION).is_some(),
        "the session is kept for when Loopwise is back"
    );
    gw.shutdown().await;
}

async fn api_get(rig: &Rig, path: &str, token: &str) -> reqwest::Response {
    http()
        .get(rig.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_concurrent_api_requests_with_one_token_validate_once() {
    let rig = rig().await;
    assert_eq!(rig.gw.gateway().validation_mode(), "userinfo");
    let t = tokens_for(&http(), rig.em.url(), "read courses:read", "grace").await;
    let token = t["access_token"].as_str().unwrap().to_string();
    rig.em.reset_stats();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let url = rig.url(&format!("/api/items/{i}"));
        let token = token.clone();
        tasks.spawn(async move {
            let r = http().get(url).bearer_auth(&token).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        });
    }
    while let Some(res) = tasks.join_next().await {
        let (status, echo) = res.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echoed(&echo, "x-loopwise-user"), Some("grace"));
        assert_eq!(echoed(&echo, "x-loopwise-roles"), Some("teacher"));
        assert_eq!(echoed(&echo, "x-loopwise-scope"), Some("read courses:read"));
        assert_eq!(
            bearer_of(&echo),
            token,
            "the client's own token goes upstream"
        );
    }
    assert_eq!(
        rig.em.stats().endpoint("userinfo"),
        1,
        "coalesced into one validation"
    );
    rig.gw.gateway().token_cache().sync().await;
    assert_eq!(rig.gw.gateway().token_cache().entry_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_get_401_and_are_negatively_cached() {
    let rig = rig().await;
    let r = http().get(rig.url("/api/x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "missing");
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_token");
    for i in 0..2 {
        let r = api_get(&rig, "/api/x", "not.a-real.token").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "try {i}");
        assert!(r.headers().get("location").is_none());
    }
    assert_eq!(
        rig.em.stats().endpoint("userinfo"),
        1,
        "the second try came from the negative cache"
    );
    // Malformed Authorization headers never reach Loopwise.
    for bad in ["Basic abc", "Bearer", "Bearer a b"] {
        let r = http()
            .get(rig.url("/api/x"))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    assert_eq!(rig.em.stats().endpoint("userinfo"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_validation_never_outlives_the_token() {
    let rig = rig_with(|e| e.access_token_ttl = Duration::from_secs(30), |_| {}).await;
    let t = tokens_for(&http(), rig.em.url(), "read", "ada").await;
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(
        api_get(&rig, "/api/x", token).await.status(),
        StatusCode::OK
    );
    rig.gw.gateway().shared.clock.advance(25);
    assert_eq!(
        api_get(&rig, "/api/x", token).await.status(),
        StatusCode::OK
    );
    rig.gw.gateway().shared.clock.advance(5);
    assert_eq!(
        api_get(&rig, "/api/x", token).await.status(),
        StatusCode::UNAUTHORIZED,
        "expired by exp although cache.ttl (60 s) has not passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hs256_mode_makes_zero_calls_to_loopwise() {
    let rig = rig_with(
        |_| {},
        |s| s.loopwise_extra = format!("jwt_secret = \"{JWT_SECRET}\"\nschool_id = 4242"),
    )
    .await;
    assert_eq!(rig.gw.gateway().validation_mode(), "local_hs256");
    let t = tokens_for(&http(), rig.em.url(), "read", "alan").await;
    let token = t["access_token"].as_str().unwrap();
    rig.em.reset_stats();
    for _ in 0..5 {
        let r = api_get(&rig, "/api/x", token).await;
        assert_eq!(r.status(), StatusCode::OK);
        let echo: Value = r.json().await.unwrap();
        assert_eq!(echoed(&echo, "x-loopwise-user"), Some("alan"));
        assert_eq!(echoed(&echo, "x-loopwise-school"), Some("4242"));
    }
    // A token signed with another secret is refused, also without asking Loopwise.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"iss": rig.em.url(), "sub": "ada", "scope": "read", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-school-secret-at-all"),
    )
    .unwrap();
    assert_eq!(
        api_get(&rig, "/api/x", &forged).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        rig.em.stats().endpoints.is_empty(),
        "zero calls: {:?}",
        rig.em.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_another_school_are_refused() {
    let rig = rig_with(|_| {}, |s| s.loopwise_extra = "school_id = \"9999\"".into()).await;
    let t = tokens_for(&http(), rig.em.url(), "read", "ada").await;
    let r = api_get(&rig, "/api/x", t["access_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_routes_accept_bearer_only_when_configured() {
    let rig = rig_with(|_| {}, |s| {
        s.extra = "\n[[routes]]\nname = \"both\"\npath = \"/both\"\nupstream = \"http://APP\"\nauth = \"login\"\naccept_bearer = true\n"
            .replace("APP", &s.app.to_string())
    })
    .await;
    let t = tokens_for(&http(), rig.em.url(), "read", "grace").await;
    let token = t["access_token"].as_str().unwrap();
    let r = api_get(&rig, "/both/x", token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        echoed(&r.json::<Value>().await.unwrap(), "x-loopwise-user"),
        Some("grace")
    );
    // A bad Bearer on such a route is a 401, even for a navigation (never a redirect).
    let r = http()
        .get(rig.url("/both/x"))
        .bearer_auth("bogus")
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // On a plain login route the Bearer is not accepted (and is stripped).
    let r = api_get(&rig, "/plain", token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Browser sessions still work on the accept_bearer route.
    let mut b = Browser::new(&rig.url(""));
    b.login("/both/page", rig.em.url(), "ada").await;
    let r = b.navigate("/both/page").await;
    assert_eq!(echoed(&r.json(), "x-loopwise-user"), Some("ada"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopwise_down_during_bearer_validation_is_503_not_cached() {
    let rig = rig().await;
    let t = tokens_for(&http(), rig.em.url(), "read", "grace").await;
    let token = t["access_token"].as_str().unwrap().to_string();
    let Rig { em, gw, setup, .. } = rig;
    em.shutdown().await;
    let r = http()
        .get(format!("{}/api/x", setup.public_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "loopwise_unreachable"
    );
    gw.shutdown().await;
}
