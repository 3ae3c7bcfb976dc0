//! The gateway end to end: emulator + echo upstream + pingora gateway, in-process on
//! loopback, driven like a browser (redirects followed by hand, cookies in a jar).
//! Each test names the security property it covers (README, "Security model").

use crate::common::gw::*;
use crate::common::{bearer_get, http, query_param, CLIENT};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const SESSION: &str = "loopgate_session";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_bearer_and_identity_reach_the_upstream() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));

    // PKCE S256 on the authorize URL, exact redirect_uri; no verifier in it.
    let start = b.navigate("/reports/q3?x=1").await;
    assert_eq!(start.status, StatusCode::FOUND);
    let auth = start.location();
    assert!(
        auth.starts_with(&format!("{}/oauth/authorize?", rig.em.url())),
        "{auth}"
    );
    assert_eq!(
        query_param(&auth, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(query_param(&auth, "code_challenge").unwrap().len(), 43);
    assert_eq!(query_param(&auth, "response_type").as_deref(), Some("code"));
    assert_eq!(query_param(&auth, "client_id").as_deref(), Some(CLIENT));
    assert_eq!(
        query_param(&auth, "redirect_uri"),
        Some(rig.setup.callback())
    );
    assert_eq!(
        query_param(&auth, "scope").as_deref(),
        Some("read courses:read")
    );
    assert!(query_param(&auth, "code_verifier").is_none());
    let login_cookie = b
        .jar
        .cookies
        .iter()
        .find(|c| c.name.starts_with("loopgate_session_login_"))
        .unwrap()
        .clone();
    assert_eq!(login_cookie.path, "/oauth2/callback");
    assert!(login_cookie.raw.contains("HttpOnly") && login_cookie.raw.contains("SameSite=Lax"));
    assert!(
        login_cookie.value.starts_with("v1."),
        "sealed, not readable"
    );

    let callback = b.through_loopwise(&auth, rig.em.url(), "grace").await;
    let done = b.navigate(&callback).await;
    assert_eq!(done.status, StatusCode::FOUND);
    assert_eq!(
        done.location(),
        "/reports/q3?x=1",
        "back to where the user was going"
    );
    assert_eq!(
        done.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );
    assert_eq!(done.header("cache-control").as_deref(), Some("no-store"));
    // session cookie attributes; the login cookie is cleared.
    let session = b.jar.get(SESSION).expect("session cookie").clone();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.raw.contains(attr), "{attr} in {}", session.raw);
    }
    assert!(
        !session.raw.contains("Secure"),
        "http public_url: no Secure"
    );
    assert!(b.jar.cookies.iter().all(|c| !c.name.contains("_login_")));

    let login_flow_seen = b.seen.len();
    let r = b.navigate("/reports/q3?x=1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["path"], "/reports/q3");
    assert_eq!(echo["query"], "x=1");
    let authz = echoed(&echo, "authorization").unwrap();
    let token = authz.strip_prefix("Bearer ").expect("Bearer injected");
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("grace"));
    assert_eq!(
        echoed(&echo, "x-loopwise-email"),
        Some("grace@demo.loopwise.test")
    );
    assert_eq!(echoed(&echo, "x-loopwise-name"), Some("Grace Hopper"));
    assert_eq!(echoed(&echo, "x-loopwise-roles"), Some("teacher"));
    assert_eq!(echoed(&echo, "x-loopwise-school"), Some("4242"));
    assert_eq!(echoed(&echo, "x-forwarded-user"), Some("grace"));
    assert_eq!(
        echoed(&echo, "x-forwarded-email"),
        Some("grace@demo.loopwise.test")
    );
    assert!(
        echoed(&echo, "cookie").is_none(),
        "the gateway's cookies are not forwarded"
    );
    // The injected token is a real, live Loopwise token for this user.
    let (status, _, info) = bearer_get(
        &http(),
        &format!("{}/api/oauth/userinfo", rig.em.url()),
        token,
    )
    .await;
    assert_eq!(
        (status, info["sub"].as_str()),
        (StatusCode::OK, Some("grace"))
    );

    // the token never reached the browser (bodies, headers, cookies).
    // (Only the login flow: the echo upstream itself reflects the header back.)
    for s in &b.seen[..login_flow_seen] {
        assert!(!s.contains(token), "token leaked to the browser");
    }
    // Userinfo was fetched once, at login; proxied requests do not call Loopwise.
    for _ in 0..3 {
        b.xhr("/data").await;
    }
    let stats = rig.em.stats();
    assert_eq!(stats.grant("authorization_code", "ok"), 1);
    assert_eq!(
        stats.endpoint("userinfo"),
        2,
        "one at login, one by this test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_and_gateway_cookies_are_stripped() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "alan").await;
    let session_value = b.jar.get(SESSION).unwrap().value.clone();
    let cookie = format!("{SESSION}={session_value}; theme=dark; {SESSION}_login_x=1");
    let r = http()
        .get(rig.url("/x"))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .header("authorization", "Bearer forged-token")
        .header("X-Loopwise-User", "ada")
        .header("x_loopwise_roles", "school_admin")
        .header("X-LOOPWISE-EMAIL", "ada@evil")
        .header("x-forwarded-user", "ada")
        .header("X_Forwarded_Email", "ada@evil")
        .header("x-auth-request-user", "ada")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    // no trusted proxies configured, so X-Forwarded-* are the gateway's own.
    assert_eq!(echoed(&echo, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        echo["headers"]["x-forwarded-for"].as_array().unwrap().len(),
        1
    );
    assert_eq!(echoed(&echo, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        echoed(&echo, "x-forwarded-host"),
        Some(format!("127.0.0.1:{}", rig.setup.port).as_str())
    );
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("alan"));
    assert_eq!(
        echo["headers"]["x-loopwise-user"].as_array().unwrap().len(),
        1
    );
    assert_eq!(echoed(&echo, "x-loopwise-roles"), Some("student"));
    assert_eq!(
        echoed(&echo, "x-loopwise-email"),
        Some("alan@demo.loopwise.test")
    );
    assert_eq!(echoed(&echo, "x-forwarded-user"), Some("alan"));
    assert!(!echoed(&echo, "authorization").unwrap().contains("forged"));
    for bad in [
        "x_loopwise_roles",
        "x_forwarded_email",
        "x-auth-request-user",
        "x-drop-me",
    ] {
        assert!(!headers.contains_key(bad), "{bad} reached the upstream");
    }
    assert_eq!(
        echoed(&echo, "cookie"),
        Some("theme=dark"),
        "other cookies pass"
    );

    // Public routes inject nothing but still strip spoofed identity.
    let r = http()
        .get(rig.url("/public/page"))
        .header("x-loopwise-user", "ada")
        .header("x_forwarded_user", "ada")
        .header("authorization", "Bearer client-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert!(echo["headers"].get("x-loopwise-user").is_none());
    assert!(echo["headers"].get("x_forwarded_user").is_none());
    assert_eq!(
        echoed(&echo, "authorization"),
        None,
        "public routes drop the client's Authorization unless pass_authorization = true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_single_use_bound_to_the_browser_and_required() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    let start = b.navigate("/").await;
    let callback = b
        .through_loopwise(&start.location(), rig.em.url(), "ada")
        .await;

    // Another browser (no login cookie) presenting this callback: refused, no session.
    let mut thief = Browser::new(&rig.url(""));
    let r = thief.navigate(&callback).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("did not start that login"), "{}", r.body);
    assert!(thief.jar.get(SESSION).is_none());

    // Missing state.
    let r = b.navigate("/oauth2/callback?code=abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The right browser succeeds once...
    let saved_jar = b.jar.clone();
    let ok = b.navigate(&callback).await;
    assert_eq!(ok.status, StatusCode::FOUND);
    // ...and a replay with a copy of the login cookie is refused.
    let mut replay = Browser::new(&rig.url(""));
    replay.jar = saved_jar;
    let r = replay.navigate(&callback).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("already completed"), "{}", r.body);
    assert_eq!(rig.em.stats().grant("authorization_code", "ok"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_login_state_is_refused() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    let start = b.navigate("/").await;
    let callback = b
        .through_loopwise(&start.location(), rig.em.url(), "ada")
        .await;
    rig.gw.gateway().shared.clock.advance(600);
    let r = b.navigate(&callback).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("10 minutes"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_replay_is_refused_by_loopwise_and_the_first_tokens_are_revoked() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    let start = b.navigate("/").await;
    let callback = b
        .through_loopwise(&start.location(), rig.em.url(), "ada")
        .await;
    assert_eq!(b.navigate(&callback).await.status, StatusCode::FOUND);
    let token = {
        let echo = b.navigate("/").await.json();
        echoed(&echo, "authorization")
            .unwrap()
            .trim_start_matches("Bearer ")
            .to_string()
    };
    // A fresh login state in the same browser, but the old code.
    let start2 = b.navigate("/").await;
    let _ = start2; // the session is valid, so this is proxied; start a login explicitly:
    let start2 = b.navigate("/oauth2/start?rd=/").await;
    let state2 = query_param(&start2.location(), "state").unwrap();
    let code1 = query_param(&format!("http://x{callback}"), "code").unwrap();
    let r = b
        .navigate(&format!("/oauth2/callback?code={code1}&state={state2}"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Loopwise refused"), "{}", r.body);
    let (status, _, _) = bearer_get(
        &http(),
        &format!("{}/api/oauth/userinfo", rig.em.url()),
        &token,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the replay revoked the first grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cookies_mean_log_in_again_never_a_5xx() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let good = b.jar.get(SESSION).unwrap().value.clone();
    let mut flipped: Vec<char> = good.chars().collect();
    let i = flipped.len() - 7;
    flipped[i] = if flipped[i] == 'x' { 'y' } else { 'x' };
    let flipped: String = flipped.into_iter().collect();
    let foreign_key = {
        // A session sealed by a gateway with another secret.
        let mut other = Browser::new(&rig.url(""));
        let rig2 = rig_with(|_| {}, |s| s.secrets = vec![SECRET_B]).await;
        other.base = rig2.url("");
        other.login("/", rig2.em.url(), "ada").await;
        other.jar.get(SESSION).unwrap().value.clone()
    };
    for bad in [
        flipped.as_str(),
        &good[..good.len() - 12],
        "garbage",
        "",
        "v1.AAAA.AAAA",
        "v1..",
        "%00%ff",
        foreign_key.as_str(),
    ] {
        let mut c = Browser::new(&rig.url(""));
        c.jar.set(SESSION, bad);
        let nav = c.navigate("/app").await;
        assert_eq!(
            nav.status,
            StatusCode::FOUND,
            "navigation with {bad:?}: {}",
            nav.body
        );
        assert!(nav.location().contains("/oauth/authorize"));
        let api = c.xhr("/app").await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "API with {bad:?}");
    }
    // Chunk cookies that do not start at _0, or garbage chunks: still no session.
    let mut c = Browser::new(&rig.url(""));
    c.jar.set(&format!("{SESSION}_1"), &good);
    assert_eq!(c.xhr("/x").await.status, StatusCode::UNAUTHORIZED);
    c.jar.set(&format!("{SESSION}_0"), "v1.zz");
    assert_eq!(c.xhr("/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_old_cookies_open_new_ones_use_the_new_key() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let old_cookie = b.jar.get(SESSION).unwrap().value.clone();
    let old_kid = old_cookie.split('.').nth(1).unwrap().to_string();

    // The same emulator, a new gateway whose secrets are [B (new), A (old)].
    let mut s2 = Setup::new(rig.em.url(), rig.echo.addr);
    s2.secrets = vec![SECRET_B, SECRET_A];
    rig.em.add_client(&loopgate::emulator::ClientSpec {
        id: CLIENT.into(),
        secret: None,
        redirect_uri: s2.callback(),
    });
    let gw2 = s2.start().await;
    let mut b2 = Browser::new(&gw2.url());
    b2.jar.set(SESSION, &old_cookie);
    let r = b2.xhr("/x").await;
    assert_eq!(r.status, StatusCode::OK, "the previous key still opens");
    assert_eq!(echoed(&r.json(), "x-loopwise-user"), Some("ada"));

    let mut fresh = Browser::new(&gw2.url());
    fresh.login("/", rig.em.url(), "grace").await;
    let new_cookie = fresh.jar.get(SESSION).unwrap().value.clone();
    assert_ne!(
        new_cookie.split('.').nth(1).unwrap(),
        old_kid,
        "sealed with the new key"
    );
    // A gateway that only knows the old key cannot open it.
    b.jar.set(SESSION, &new_cookie);
    assert_eq!(b.xhr("/x").await.status, StatusCode::UNAUTHORIZED);
    gw2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_tabs_can_log_in_at_once() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    let mut authorize = Vec::new();
    for i in 0..5 {
        let s = b.navigate(&format!("/tab/{i}")).await;
        authorize.push(s.location());
    }
    let login_cookies = b
        .jar
        .cookies
        .iter()
        .filter(|c| c.name.contains("_login_"))
        .count();
    assert_eq!(login_cookies, 5, "one login cookie per tab");
    let mut callbacks = Vec::new();
    for a in &authorize {
        callbacks.push(b.through_loopwise(a, rig.em.url(), "grace").await);
    }
    for (i, cb) in callbacks.iter().enumerate().rev() {
        let r = b.navigate(cb).await;
        assert_eq!(r.status, StatusCode::FOUND, "tab {i}: {}", r.body);
        assert_eq!(r.location(), format!("/tab/{i}"));
    }
    assert_eq!(rig.em.stats().grant("authorization_code", "ok"), 5);
    assert_eq!(b.navigate("/tab/0").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_without_a_session_get_401_json_never_a_redirect() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    for headers in [
        vec![("accept", "application/json")],
        vec![
            ("accept", "application/json"),
            ("authorization", "Bearer not-accepted-here"),
        ],
        vec![("accept", "text/html"), ("sec-fetch-mode", "cors")],
        vec![
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
        vec![],
    ] {
        let r = b.request(Method::GET, "/data/thing", &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(r.header("location").is_none());
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert_eq!(r.json()["error"], "unauthorized");
    }
    let r = b
        .request(Method::POST, "/data/thing", &[("accept", "text/html")])
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a non-navigation POST is not redirected"
    );
    // And /oauth2/userinfo says 401 too, without a session.
    assert_eq!(
        b.xhr("/oauth2/userinfo").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_endpoint_shows_identity_never_tokens() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let token = echoed(&b.xhr("/").await.json(), "authorization")
        .unwrap()
        .to_string();
    let r = b.xhr("/oauth2/userinfo").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["sub"], "ada");
    assert_eq!(v["roles"], serde_json::json!(["school_admin", "teacher"]));
    assert_eq!(v["scope"], "read courses:read");
    assert!(!r.body.contains(token.trim_start_matches("Bearer ")));
    assert!(!r.body.contains("token\":"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_revokes_at_loopwise_and_clears_cookies() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "grace").await;
    let set_raw = b.jar.get(SESSION).unwrap().raw.clone();

    let page = b.navigate("/oauth2/sign_out").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("method=\"post\"") && page.body.contains("/oauth2/sign_out"));
    assert_eq!(
        rig.em.stats().endpoint("revoke"),
        0,
        "GET does not sign out"
    );

    // A cross-site POST (CSRF) is refused and revokes nothing.
    let r = b
        .request(
            Method::POST,
            "/oauth2/sign_out",
            &[
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(b.jar.get(SESSION).is_some());

    let origin = rig.url("");
    let r = b
        .request(
            Method::POST,
            "/oauth2/sign_out",
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/");
    let clear = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{SESSION}=")))
        .unwrap();
    assert!(clear.contains("Max-Age=0"));
    // Cleared with the same attributes it was set with.
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(clear.contains(attr) && set_raw.contains(attr), "{attr}");
    }
    assert!(b.jar.get(SESSION).is_none());
    let stats = rig.em.stats();
    assert_eq!(stats.endpoint("revoke"), 1);
    assert_eq!(
        stats.event("family_revoked"),
        1,
        "the refresh token's grant is revoked"
    );
    assert_eq!(b.xhr("/").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopwise_api_route_strips_prefix_and_carries_the_session_bearer() {
    let rig = rig().await;
    let mut anon = Browser::new(&rig.url(""));
    let r = anon.xhr("/loopwise/api/v1/me").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        rig.em.stats().endpoint("api_me"),
        0,
        "never reached Loopwise"
    );

    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let r = b.xhr("/loopwise/api/v1/me").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["sub"], "ada");
    let r = b.xhr("/loopwise/api/v1/courses").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Compilers for Everyone"));
    assert_eq!(rig.em.stats().endpoint("api_me"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopwise_errors_get_clear_escaped_pages_without_tokens() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    let start = b.navigate("/somewhere").await;
    let state = query_param(&start.location(), "state").unwrap();
    let r = b
        .navigate(&format!(
            "/oauth2/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Whether the user declined or the school's policy refused without asking, the
    // school said no: the page does not claim the user decided.
    assert!(r.body.contains("Your school refused the sign-in"));
    assert!(!r.body.contains("<script>alert"), "escaped");
    assert!(r.body.contains("&lt;script&gt;"));
    assert!(
        r.body.contains("/oauth2/start?rd=%2Fsomewhere"),
        "offers to try again"
    );
    assert!(b.jar.get(SESSION).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopwise_down_during_login_is_a_clear_503_page() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    let start = b.navigate("/").await;
    let callback = b
        .through_loopwise(&start.location(), rig.em.url(), "ada")
        .await;
    let Rig { em, gw, .. } = rig;
    em.shutdown().await;
    let r = b.navigate(&callback).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.body.contains("Loopwise is unreachable"));
    assert!(b.jar.get(SESSION).is_none());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_502_page_or_json() {
    let dead = free_port();
    let rig = rig_with(|_| {}, |s| {
        s.extra = format!("\n[[routes]]\nname = \"dead\"\npath = \"/dead\"\nupstream = \"http://127.0.0.1:{dead}\"\nauth = \"public\"\nconnect_timeout = \"1s\"\n")
    })
    .await;
    let mut b = Browser::new(&rig.url(""));
    let r = b.navigate("/dead/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("not responding"));
    let r = b.xhr("/dead/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "bad_gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_public_url_uses_host_prefix_and_secure_cookies() {
    let rig = rig_with(
        |_| {},
        |s| s.public_url = format!("https://127.0.0.1:{}", s.port),
    )
    .await;
    let mut b = Browser::new(&rig.url(""));
    let start = b.navigate("/").await;
    let login = b
        .jar
        .cookies
        .iter()
        .find(|c| c.name.contains("_login_"))
        .unwrap();
    assert!(
        login.name.starts_with("__Secure-loopgate_session_login_"),
        "{}",
        login.name
    );
    assert!(login.raw.contains("Secure"));
    assert_eq!(
        query_param(&start.location(), "redirect_uri"),
        Some(rig.setup.callback())
    );
    let callback = b
        .through_loopwise(&start.location(), rig.em.url(), "ada")
        .await;
    let done = b.navigate(&callback).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    let s = b
        .jar
        .get("__Host-loopgate_session")
        .expect("__Host- session cookie");
    assert!(s.raw.contains("Secure") && s.raw.contains("Path=/") && !s.raw.contains("Domain"));
    let r = b.xhr("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(echoed(&r.json(), "x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_registration_is_persisted_and_reused() {
    let dir = std::env::temp_dir().join(format!(
        "loopgate-reg-{}-{}",
        std::process::id(),
        free_port()
    ));
    let file = dir.join("registration.json");
    let echo = echo_upstream().await;
    let em = loopgate::emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    let mut s = Setup::new(em.url(), echo.addr);
    s.client_id = None;
    s.registration_file = Some(file.display().to_string());
    let gw = s.start().await;
    assert_eq!(em.stats().event("client_registered"), 1);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored["redirect_uri"], s.callback());
    assert_eq!(stored["issuer"], em.url());
    let client_id = stored["client_id"].as_str().unwrap().to_string();
    // The registered client really works: a full login.
    let mut b = Browser::new(&gw.url());
    let start = b.navigate("/").await;
    assert_eq!(
        query_param(&start.location(), "client_id"),
        Some(client_id.clone())
    );
    let cb = b.through_loopwise(&start.location(), em.url(), "ada").await;
    assert_eq!(b.navigate(&cb).await.status, StatusCode::FOUND);
    gw.shutdown().await;

    // Restart: reused, not registered again.
    let gw = s.start().await;
    assert_eq!(em.stats().event("client_registered"), 1);
    gw.shutdown().await;

    // A different redirect URI (new public URL): registers anew.
    let mut s2 = Setup::new(em.url(), echo.addr);
    s2.client_id = None;
    s2.registration_file = s.registration_file.clone();
    let gw = s2.start().await;
    assert_eq!(em.stats().event("client_registered"), 2);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_ne!(stored["client_id"], client_id);
    gw.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_endpoint_logs_in_and_returns_to_rd() {
    let rig = rig().await;
    let mut b = Browser::new(&rig.url(""));
    let r = b.navigate("/oauth2/start?rd=/deep/link").await;
    assert_eq!(r.status, StatusCode::FOUND);
    let cb = b.through_loopwise(&r.location(), rig.em.url(), "ada").await;
    let done = b.navigate(&cb).await;
    assert_eq!(done.location(), "/deep/link");
    assert_eq!(b.xhr("/x").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_once_for_policy_and_upstream() {
    let rig = rig().await;
    // A public route cannot be used to reach a login route's paths (raw bytes on the wire).
    let port = rig.setup.port;
    for sneaky in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "//admin",
        "/public/./../admin",
    ] {
        let (status, _) = raw_get(port, sneaky, &[("accept", "application/json")]).await;
        assert_eq!(status, 401, "{sneaky} must land on the login route");
    }
    for refused in [
        "/public%2F..%2Fadmin",
        "/public/..;/admin",
        "/public\\..\\admin",
        "/public%5C..%5Cadmin",
        "/a%00",
        "/a%zz",
    ] {
        let (status, _) = raw_get(port, refused, &[]).await;
        assert_eq!(status, 400, "{refused}");
    }
    // What the upstream sees is the normalised path, the one policy matched.
    let (status, body) = raw_get(port, "/public/a/./b/../%63", &[]).await;
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/public/a/c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_the_route_ca_file() {
    let pki = test_pki();
    let tls_addr = tls_echo_upstream(&pki).await;
    let dir = std::env::temp_dir().join(format!(
        "loopgate-ca-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let extra = format!(
        "\n[[routes]]\nname = \"secure\"\npath = \"/secure\"\nupstream = \"https://{tls_addr}\"\nca_file = \"{}\"\nstrip_prefix = true\npreserve_host = false\n\n[[routes]]\nname = \"untrusted\"\npath = \"/untrusted\"\nupstream = \"https://{tls_addr}\"\n",
        ca_file.display()
    );
    let rig = rig_with(|_| {}, |s| s.extra = extra).await;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let r = b.xhr("/secure/inside?q=1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["tls"], true);
    assert_eq!(echo["path"], "/inside");
    assert_eq!(
        echoed(&echo, "host"),
        Some(tls_addr.to_string().as_str()),
        "the upstream's own Host"
    );
    assert!(echoed(&echo, "authorization")
        .unwrap()
        .starts_with("Bearer "));
    // The same upstream without the CA: the certificate is not trusted, so no proxying.
    let r = b.xhr("/untrusted/inside").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A school's server that answers in the wrong shape: the token endpoint (a number for
/// `access_token`) or userinfo (an HTML page with 200).
async fn misbehaving_school(bad_token: bool) -> String {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let meta = serde_json::json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/api/oauth/token"),
        "userinfo_endpoint": format!("{base}/api/oauth/userinfo"),
        "code_challenge_methods_supported": ["S256"],
    });
    let token = if bad_token {
        r#"{"access_token":5,"token_type":"Bearer"}"#
    } else {
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-1"}"#
    };
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || async move { axum::Json(meta) }),
        )
        .route(
            "/api/oauth/token",
            post(
                move || async move { ([("content-type", "application/json")], token.to_string()) },
            ),
        )
        .route(
            "/api/oauth/userinfo",
            get(|| async { ([("content-type", "text/html")], "<html>maintenance</html>") }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A wrong-shaped answer at login is "the school's server answered something unexpected"
/// (502, counted as `unexpected_answer`), not "unreachable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_shaped_answer_at_login_says_unexpected_not_unreachable() {
    for bad_token in [true, false] {
        let school = misbehaving_school(bad_token).await;
        let echo = echo_upstream().await;
        let setup = Setup::new(&school, echo.addr);
        let _gw = setup.start().await;
        let mut b = Browser::new(&setup.public_url);
        let start = b.navigate("/page").await;
        assert_eq!(start.status, StatusCode::FOUND);
        let state = query_param(&start.location(), "state").unwrap();
        let r = b
            .navigate(&format!("/oauth2/callback?code=c-1&state={state}"))
            .await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
        assert!(
            r.body.contains("answered something unexpected") && !r.body.contains("unreachable"),
            "{}",
            r.body
        );
        let metrics = scrape(format!("127.0.0.1:{}", setup.admin_port)).await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("loopgate_logins_total{")
                    && l.contains("result=\"unexpected_answer\"")
                    && l.ends_with(" 1")),
            "bad_token={bad_token}\n{metrics}"
        );
        assert_eq!(b.xhr("/page").await.status, StatusCode::UNAUTHORIZED);
    }
}
