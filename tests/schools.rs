//! Several schools behind one gateway: two emulated schools (each its own authorization
//! server, with the same user names), routes of one school, of the other and of both.
//! A school's session or token never passes at the other school; refresh, sign-out and
//! token validation go to the credential's own school.

use std::time::Duration;

use loopgate::emulator::{ClientSpec, EmulatorHandle};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::gw::*;
use crate::common::{bearer_get, emulator_with, http, tokens_for, CLIENT};

const SESSION: &str = "loopgate_session";

/// Two schools, an echo upstream, and a gateway over them.
struct Schools {
    north: EmulatorHandle,
    south: EmulatorHandle,
    port: u16,
    gw: loopgate::server::GatewayHandle,
}

impl Schools {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

async fn school(secret: &str) -> EmulatorHandle {
    let secret = secret.to_string();
    emulator_with(move |e| {
        e.jwt_secret = Some(secret);
        e.access_token_ttl = Duration::from_secs(120);
    })
    .await
}

/// The config: `north` and `south` (or only `north`), each with its own routes, one
/// route accepting both, and an `api` route per school.
fn toml(port: u16, admin_port: u16, north: &str, south: Option<&str>, app: &str) -> String {
    let south_school = south.map_or(String::new(), |s| {
        format!(
            r#"
[[loopwise]]
name = "south"
display_name = "South Academy"
issuer = "{s}"
client_id = "{CLIENT}"
scopes = ["read", "courses:read"]
timeout = "3s"
registration_file = "unused-south.json"
"#
        )
    });
    let south_routes = if south.is_some() {
        format!(
            r#"
[[routes]]
name = "south"
path = "/south"
upstream = "http://{app}"
loopwise = "south"

[[routes]]
name = "south-api"
path = "/api/south"
upstream = "http://{app}"
auth = "api"
loopwise = "south"

[[routes]]
name = "both"
path = "/both"
upstream = "http://{app}"
loopwise = ["north", "south"]
"#
        )
    } else {
        String::new()
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
threads = 2
admin_listen = "127.0.0.1:{admin_port}"

[[loopwise]]
name = "north"
display_name = "North High"
issuer = "{north}"
client_id = "{CLIENT}"
scopes = ["read", "courses:read"]
timeout = "3s"
registration_file = "unused-north.json"
{south_school}

[session]
secrets = ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]

[[routes]]
name = "north"
path = "/north"
upstream = "http://{app}"
loopwise = "north"

[[routes]]
name = "north-api"
path = "/api/north"
upstream = "http://{app}"
auth = "api"
loopwise = "north"
{south_routes}
"#
    )
}

fn register(em: &EmulatorHandle, port: u16) {
    em.add_client(&ClientSpec {
        id: CLIENT.into(),
        secret: None,
        redirect_uri: format!("http://127.0.0.1:{port}/oauth2/callback"),
    });
}

async fn two_schools() -> Schools {
    let north = school("north-jwt-secret-of-reasonable-length").await;
    let south = school("south-jwt-secret-of-reasonable-length").await;
    let echo = echo_upstream().await;
    let (port, admin_port) = (free_port(), free_port());
    register(&north, port);
    register(&south, port);
    let text = toml(
        port,
        admin_port,
        north.url(),
        Some(south.url()),
        // The echo server lives as long as the test's runtime.
        &echo.addr.to_string(),
    );
    let cfg = loopgate::config::parse(&text, std::path::Path::new("."), &|_| None)
        .expect("two-school config is valid");
    let gw = loopgate::server::GatewayHandle::start(cfg)
        .await
        .expect("gateway starts");
    Schools {
        north,
        south,
        port,
        gw,
    }
}

fn bearer_of(echo: &Value) -> String {
    echoed(echo, "authorization")
        .expect("an Authorization header reached the app")
        .trim_start_matches("Bearer ")
        .to_string()
}

/// The token the upstream got is one `em` itself accepts (asked at its userinfo).
async fn accepted_by(em: &EmulatorHandle, token: &str) -> bool {
    let (status, _, _) =
        bearer_get(&http(), &format!("{}/api/oauth/userinfo", em.url()), token).await;
    status == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_one_school_never_passes_at_the_other_and_both_coexist() {
    let s = two_schools().await;
    let mut b = Browser::new(&s.url(""));
    b.login("/north/page", s.north.url(), "grace").await;
    assert!(b.jar.get(&format!("{SESSION}.north")).is_some());
    let r = b.navigate("/north/page").await;
    assert_eq!(r.status, StatusCode::OK);
    let north_token = bearer_of(&r.json());
    assert!(accepted_by(&s.north, &north_token).await);
    assert!(!accepted_by(&s.south, &north_token).await);

    // The north session on a south route is no session there: a login at south, and
    // the north session is neither cleared nor used.
    let r = b.navigate("/south/page").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.location()
            .starts_with(&format!("{}/oauth/authorize?", s.south.url())),
        "{}",
        r.location()
    );
    assert!(
        !r.set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{SESSION}.north"))),
        "the north session is kept: {:?}",
        r.set_cookies()
    );
    assert!(b.jar.get(&format!("{SESSION}.north")).is_some());
    let api = b.xhr("/south/data").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.json()["error"],
        "unauthorized",
        "the gateway's answer, not the app's"
    );

    // Signing in at south too: two sessions, each route gets its own school's token.
    let callback = b
        .through_loopwise(&r.location(), s.south.url(), "grace")
        .await;
    let done = b.navigate(&callback).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(b.jar.get(&format!("{SESSION}.south")).is_some());
    let south_token = bearer_of(&b.navigate("/south/page").await.json());
    assert!(accepted_by(&s.south, &south_token).await);
    assert!(!accepted_by(&s.north, &south_token).await);
    assert_eq!(
        bearer_of(&b.navigate("/north/page").await.json()),
        north_token
    );

    let info = b.xhr("/oauth2/userinfo").await.json();
    let schools: Vec<&str> = info["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["loopwise"].as_str().unwrap())
        .collect();
    assert_eq!(schools, ["north", "south"]);
    assert_eq!(info["loopwise"], "north");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_of_both_schools_offers_a_chooser_that_keeps_the_target() {
    let s = two_schools().await;
    let mut b = Browser::new(&s.url(""));
    let r = b.navigate("/both/report?term=2").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location(), "/oauth2/start?rd=%2Fboth%2Freport%3Fterm%3D2");
    assert!(r.set_cookies().is_empty(), "no login state before a choice");
    let page = b.navigate(&r.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("North High") && page.body.contains("South Academy"));
    let link = "/oauth2/start?school=south&amp;rd=%2Fboth%2Freport%3Fterm%3D2";
    assert!(page.body.contains(link), "{}", page.body);
    let go = b.navigate(&link.replace("&amp;", "&")).await;
    assert_eq!(go.status, StatusCode::FOUND);
    assert!(go
        .location()
        .starts_with(&format!("{}/oauth/authorize?", s.south.url())));
    let callback = b
        .through_loopwise(&go.location(), s.south.url(), "ada")
        .await;
    let done = b.navigate(&callback).await;
    assert_eq!(done.location(), "/both/report?term=2");
    let r = b.navigate("/both/report?term=2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(accepted_by(&s.south, &bearer_of(&r.json())).await);
    // A school the gateway does not serve is refused, not echoed.
    let bad = b.navigate("/oauth2/start?school=%3Cwest%3E&rd=%2F").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(!bad.body.contains("west"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_one_school_is_401_on_the_other_schools_api_and_cached_apart() {
    let s = two_schools().await;
    let north = tokens_for(&http(), s.north.url(), "read", "grace").await;
    let north = north["access_token"].as_str().unwrap().to_string();
    let south = tokens_for(&http(), s.south.url(), "read", "grace").await;
    let south = south["access_token"].as_str().unwrap().to_string();
    s.north.reset_stats();
    s.south.reset_stats();
    let get = |path: &str, token: &str| {
        let url = s.url(path);
        let token = token.to_string();
        async move {
            http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get("/api/north/x", &north).await, StatusCode::OK);
    assert_eq!(get("/api/south/x", &south).await, StatusCode::OK);
    // Validated once each, at its own school, and now cached as valid there.
    assert_eq!(s.north.stats().endpoint("userinfo"), 1);
    assert_eq!(s.south.stats().endpoint("userinfo"), 1);
    for _ in 0..2 {
        assert_eq!(get("/api/south/x", &north).await, StatusCode::UNAUTHORIZED);
        assert_eq!(get("/api/north/x", &south).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        (
            s.north.stats().endpoint("userinfo"),
            s.south.stats().endpoint("userinfo")
        ),
        (1, 1),
        "a token's iss picks its school: the other school is never asked"
    );
    assert_eq!(get("/api/north/x", &north).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_sign_out_go_to_the_sessions_own_school() {
    let s = two_schools().await;
    let mut b = Browser::new(&s.url(""));
    b.login("/north/a", s.north.url(), "ada").await;
    b.login("/south/a", s.south.url(), "ada").await;
    s.gw.gateway().shared.clock.advance(70); // inside both refresh windows
    let r = b.xhr("/south/b").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.south.stats().grant("refresh_token", "ok"), 1);
    assert_eq!(
        s.north.stats().grant("refresh_token", "ok"),
        0,
        "the north session is not touched by a south request"
    );
    assert!(accepted_by(&s.south, &bearer_of(&r.json())).await);
    let r = b.xhr("/north/b").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.north.stats().grant("refresh_token", "ok"), 1);
    assert_eq!(s.south.stats().grant("refresh_token", "ok"), 1);
    let admin = s.gw.gateway().admin_addr().unwrap();
    let text = scrape(admin).await;
    for school in ["north", "south"] {
        for line in [
            format!("loopgate_refresh_total{{result=\"ok\",school=\"{school}\"}} 1"),
            format!("loopgate_logins_total{{result=\"ok\",school=\"{school}\"}} 1"),
            format!("loopgate_refresh_total{{result=\"invalid_grant\",school=\"{school}\"}} 0"),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }

    let out = b
        .request(
            reqwest::Method::POST,
            "/oauth2/sign_out",
            &[("origin", &s.url(""))],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(s.north.stats().endpoint("revoke"), 1);
    assert_eq!(s.south.stats().endpoint("revoke"), 1);
    assert!(b.jar.get(&format!("{SESSION}.north")).is_none());
    assert!(b.jar.get(&format!("{SESSION}.south")).is_none());
    assert_eq!(b.xhr("/north/c").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.xhr("/south/c").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_school_and_removing_it_ends_its_sessions_here() {
    let north = school("north-jwt-secret-of-reasonable-length").await;
    let south = school("south-jwt-secret-of-reasonable-length").await;
    let echo = echo_upstream().await;
    let (port, admin_port) = (free_port(), free_port());
    register(&north, port);
    register(&south, port);
    let app = echo.addr.to_string();
    let dir = std::env::temp_dir().join(format!("loopgate-schools-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("loopgate.toml");
    std::fs::write(&path, toml(port, admin_port, north.url(), None, &app)).unwrap();
    let cfg = loopgate::config::load(&path).unwrap();
    let gw = loopgate::server::GatewayHandle::start_with_file(cfg, Some(path.clone()))
        .await
        .unwrap();
    let mut b = Browser::new(&format!("http://127.0.0.1:{port}"));
    b.login("/north/a", north.url(), "grace").await;
    assert_eq!(
        b.navigate("/south/a").await.status,
        StatusCode::NOT_FOUND,
        "no south route yet"
    );
    std::fs::write(
        &path,
        toml(port, admin_port, north.url(), Some(south.url()), &app),
    )
    .unwrap();
    gw.reload().await.expect("a reload adds a school");
    b.login("/south/a", south.url(), "grace").await;
    assert_eq!(b.navigate("/south/a").await.status, StatusCode::OK);
    assert_eq!(
        b.navigate("/north/a").await.status,
        StatusCode::OK,
        "north kept across the reload"
    );

    std::fs::write(&path, toml(port, admin_port, north.url(), None, &app)).unwrap();
    gw.reload().await.expect("a reload removes a school");
    let info = b.xhr("/oauth2/userinfo").await.json();
    assert_eq!(info["sessions"].as_array().unwrap().len(), 1, "{info}");
    assert_eq!(info["loopwise"], "north");
    std::fs::remove_dir_all(&dir).ok();
}

/// A school that speaks OpenID Connect (the emulator's `--openid`): the gateway sends a
/// nonce, verifies the ES256 `id_token` with the school's JWKS, and the user's identity
/// reaches the app (roles merged from userinfo, which only the Loopwise dialect has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_school_speaking_openid_connect_signs_in_with_its_id_token() {
    let north = emulator_with(|e| {
        e.jwt_secret = Some("north-jwt-secret-of-reasonable-length".into());
        e.openid = true;
    })
    .await;
    let echo = echo_upstream().await;
    let (port, admin_port) = (free_port(), free_port());
    register(&north, port);
    let text = toml(port, admin_port, north.url(), None, &echo.addr.to_string()).replace(
        r#"scopes = ["read", "courses:read"]"#,
        r#"scopes = ["openid", "email", "profile", "read"]"#,
    );
    let cfg = loopgate::config::parse(&text, std::path::Path::new("."), &|_| None).unwrap();
    let _gw = loopgate::server::GatewayHandle::start(cfg).await.unwrap();
    let mut b = Browser::new(&format!("http://127.0.0.1:{port}"));
    b.login("/north/page", north.url(), "grace").await;
    let stats = north.stats();
    assert_eq!(stats.event("id_token_issued"), 1, "{stats:?}");
    assert_eq!(
        stats.endpoint("jwks"),
        1,
        "the id_token was verified with the school's keys: {stats:?}"
    );
    let echo = b.navigate("/north/page").await.json();
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("grace"));
    assert_eq!(
        echoed(&echo, "x-loopwise-email"),
        Some("grace@demo.loopwise.test")
    );
    assert_eq!(echoed(&echo, "x-loopwise-name"), Some("Grace Hopper"));
    assert_eq!(echoed(&echo, "x-loopwise-roles"), Some("teacher"));
    // The discovery documents agree, and a Loopwise-only school has neither.
    let oidc: Value = http()
        .get(format!("{}/.well-known/openid-configuration", north.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["issuer"], north.url());
    assert_eq!(oidc["id_token_signing_alg_values_supported"][0], "ES256");
    let plain = school("plain-jwt-secret-of-reasonable-length").await;
    for path in ["/.well-known/openid-configuration", "/oauth/discovery/keys"] {
        let r = http()
            .get(format!("{}{path}", plain.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// One school down at start-up: the gateway is ready (the other school signs users in),
/// `/readyz` and `loopgate_school_ready` say which school is not, and only the down
/// school's routes answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_each_school_and_one_school_down_keeps_the_gateway_ready() {
    let north = school("north-jwt-secret-of-reasonable-length").await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let echo = echo_upstream().await;
    let (port, admin_port) = (free_port(), free_port());
    register(&north, port);
    let text = toml(
        port,
        admin_port,
        north.url(),
        Some(&dead),
        &echo.addr.to_string(),
    );
    let cfg = loopgate::config::parse(&text, std::path::Path::new("."), &|_| None).unwrap();
    let _gw = loopgate::server::GatewayHandle::start(cfg).await.unwrap();
    let admin = |path: &str| format!("http://127.0.0.1:{admin_port}{path}");
    let r = http().get(admin("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("loopwise metadata of north: loaded\n"),
        "{body}"
    );
    assert!(
        body.contains("loopwise metadata of south: not loaded ("),
        "{body}"
    );
    let metrics = scrape(format!("127.0.0.1:{admin_port}")).await;
    for line in [
        "loopgate_school_ready{school=\"north\"} 1",
        "loopgate_school_ready{school=\"south\"} 0",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    let mut b = Browser::new(&format!("http://127.0.0.1:{port}"));
    b.login("/north/page", north.url(), "grace").await;
    assert_eq!(b.navigate("/north/page").await.status, StatusCode::OK);
    assert_eq!(
        b.navigate("/south/page").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
