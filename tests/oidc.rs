//! A standards OpenID provider as a school: panva's oidc-provider (certified), under node
//! on loopback, with an issuer that has a path and only `openid-configuration` published
//! (no RFC 8414 document), RFC 9207 `iss` in its callbacks, opaque access tokens, refresh
//! tokens only with `offline_access` + `prompt=consent`, and a string `roles` claim.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::gw::*;
use crate::common::http;
use crate::common::oidc::{cancel, confirm_logout, op_browser, sign_in, sign_in_with, Op};

const CLIENT: &str = "loopgate-oidc";

struct Lab {
    op: Op,
    gw: loopgate::server::GatewayHandle,
    port: u16,
}

/// The provider and the gateway's port, for the helpers.
struct LabRef<'a> {
    op: &'a Op,
    port: u16,
}

impl LabRef<'_> {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn callback_prefix(&self) -> String {
        self.url("/oauth2/callback")
    }
}

impl Lab {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn callback_prefix(&self) -> String {
        self.url("/oauth2/callback")
    }
}

async fn lab(ttl: u64) -> Lab {
    let port = free_port();
    let op = Op::start(
        "/realms/school",
        CLIENT,
        &format!("http://127.0.0.1:{port}/oauth2/callback"),
        ttl,
    );
    let gw = gateway(&op, port, &format!("client_id = \"{CLIENT}\"")).await;
    Lab { op, gw, port }
}

/// A gateway on `port` in front of an echo app, with `op` as its school; `client` is
/// the client_id line (or a registration_file for a client that registers itself).
async fn gateway(op: &Op, port: u16, client: &str) -> loopgate::server::GatewayHandle {
    let text = gateway_toml(op, port, client, &echo_upstream().await.addr.to_string());
    start_gateway(&text).await
}

async fn start_gateway(text: &str) -> loopgate::server::GatewayHandle {
    let cfg = loopgate::config::parse(text, std::path::Path::new("."), &|name| {
        (name == "OP_CLIENT_SECRET").then(|| CONFIDENTIAL_SECRET.to_string())
    })
    .expect("an issuer with a path is a valid config");
    loopgate::server::GatewayHandle::start(cfg)
        .await
        .expect("the gateway starts against oidc-provider (openid-configuration only)")
}

/// The secret of the confidential client (`OP_CLIENT_SECRET` in the config's env).
const CONFIDENTIAL_SECRET: &str = "a-confidential-client-secret-0123456789";

/// The gateway's config: `op` as its school, an echo app at `app`, a login route `/` and
/// an api route `/api`.
fn gateway_toml(op: &Op, port: u16, client: &str, app: &str) -> String {
    let admin_port = free_port();
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
threads = 2
admin_listen = "127.0.0.1:{admin_port}"

[loopwise]
issuer = "{issuer}"
{client}
scopes = ["openid", "profile", "email", "offline_access"]
authorize_params = {{ prompt = "consent" }}
opaque_tokens = true
timeout = "5s"

[session]
secrets = ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]

[[routes]]
name = "app"
path = "/"
upstream = "http://{app}"

[[routes]]
name = "api"
path = "/api"
upstream = "http://{app}"
auth = "api"
"#,
        issuer = op.issuer,
    )
}

/// The browser follows the provider's redirect `back` to the gateway's callback.
async fn back_at_gateway(b: &mut Browser, back: &str) -> Seen {
    let u = url::Url::parse(back).unwrap();
    b.navigate(&format!("{}?{}", u.path(), u.query().unwrap()))
        .await
}

/// A browser signed in as `user` at the provider.
async fn signed_in(lab: &Lab, user: &str) -> Browser {
    signed_in_at(&lab.op, lab.port, user).await
}

async fn signed_in_at(op: &Op, port: u16, user: &str) -> Browser {
    let lab = LabRef { op, port };
    let mut b = Browser::new(&lab.url(""));
    let start = b.navigate("/page").await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.body);
    let authorize = start.location();
    assert!(
        authorize.starts_with(&format!("{}/auth?", lab.op.issuer)),
        "{authorize}"
    );
    assert!(authorize.contains("nonce="), "a nonce is sent: {authorize}");
    assert!(
        authorize.contains("prompt=consent"),
        "authorize_params are sent"
    );
    let back = sign_in(&authorize, user, &lab.callback_prefix()).await;
    let u = url::Url::parse(&back).unwrap();
    assert!(
        u.query_pairs()
            .any(|(k, v)| k == "iss" && v == lab.op.issuer),
        "RFC 9207 iss: {back}"
    );
    let done = back_at_gateway(&mut b, &back).await;
    assert_eq!(
        done.status,
        StatusCode::FOUND,
        "callback failed: {}",
        done.body
    );
    assert_eq!(done.location(), "/page");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_provider_signs_users_in_with_identity_from_its_id_token() {
    let lab = lab(3600).await;
    let mut b = signed_in(&lab, "ada").await;
    let info = b.xhr("/oauth2/userinfo").await.json();
    assert_eq!(info["sub"], "ada");
    assert_eq!(info["email"], "ada@op.test");
    assert_eq!(info["name"], "Ada Lovelace");
    assert_eq!(
        info["roles"],
        serde_json::json!(["teacher"]),
        "a string roles claim"
    );
    let page = b.navigate("/page").await;
    assert_eq!(page.status, StatusCode::OK);
    let echo = page.json();
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("ada"));
    assert_eq!(echoed(&echo, "x-loopwise-roles"), Some("teacher"));
    let bearer = echoed(&echo, "authorization").unwrap();
    assert!(bearer.starts_with("Bearer ") && bearer.len() > 20);
    // An array `roles` claim works the same.
    let mut g = signed_in(&lab, "grace").await;
    assert_eq!(
        g.xhr("/oauth2/userinfo").await.json()["roles"],
        serde_json::json!(["admin", "teacher"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_naming_another_issuer_or_none_is_refused() {
    let lab = lab(3600).await;
    for iss in [Some("https://evil.example"), None] {
        let mut b = Browser::new(&lab.url(""));
        let start = b.navigate("/page").await;
        let back = sign_in(&start.location(), "ada", &lab.callback_prefix()).await;
        let mut u = url::Url::parse(&back).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "iss")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .chain(iss.map(|i| ("iss".to_string(), i.to_string())))
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        let r = b
            .navigate(&format!("{}?{}", u.path(), u.query().unwrap()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "iss {iss:?}: {}", r.body);
        assert!(
            r.body.contains("does not come from the school"),
            "{}",
            r.body
        );
        assert!(
            !r.set_cookies()
                .iter()
                .any(|c| c.starts_with("loopgate_session=")),
            "no session"
        );
        assert_eq!(b.xhr("/page").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        lab.op.stats().await["token"],
        0,
        "the code was never exchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_rotation_is_one_grant_for_a_storm_of_requests() {
    let lab = lab(120).await;
    let mut b = signed_in(&lab, "ada").await;
    let before = bearer(&b.xhr("/x").await.json());
    assert_eq!(lab.op.stats().await["token"], 1);
    lab.gw.gateway().shared.clock.advance(90); // inside the refresh window
    let cookie = b.jar.header_for("/");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let url = lab.url(&format!("/storm/{i}"));
        let cookie = cookie.clone();
        tasks.spawn(async move {
            let r = http()
                .get(url)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        });
    }
    let mut tokens = std::collections::BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (status, echo) = r.unwrap();
        assert_eq!(status, StatusCode::OK);
        tokens.insert(bearer(&echo));
    }
    assert_eq!(
        tokens.len(),
        1,
        "every request went upstream with the one new token"
    );
    assert!(!tokens.contains(&before));
    assert_eq!(
        lab.op.stats().await["token"],
        2,
        "one code exchange and one refresh, however many requests raced"
    );
}

fn bearer(echo: &Value) -> String {
    echoed(echo, "authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_revokes_and_ends_the_providers_session() {
    let lab = lab(3600).await;
    let op = op_browser();
    let mut b = Browser::new(&lab.url(""));
    let start = b.navigate("/page").await;
    let back = sign_in_with(&op, &start.location(), "ada", &lab.callback_prefix()).await;
    let done = back_at_gateway(&mut b, &back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(b.navigate("/page").await.status, StatusCode::OK);

    let out = b
        .request(
            reqwest::Method::POST,
            "/oauth2/sign_out",
            &[("origin", &lab.url(""))],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let logout = out.location();
    assert!(
        logout.starts_with(&format!("{}/session/end?", lab.op.issuer)),
        "{logout}"
    );
    assert!(logout.contains("id_token_hint=") && logout.contains("post_logout_redirect_uri="));
    assert_eq!(
        b.xhr("/page").await.status,
        StatusCode::UNAUTHORIZED,
        "ended here at once"
    );
    let returned = confirm_logout(&op, &logout).await;
    assert_eq!(returned, lab.url("/"));
    let stats = lab.op.stats().await;
    assert_eq!(
        stats["revocation"], 1,
        "the refresh token was revoked: {stats}"
    );
    assert_eq!(
        stats["end_session"], 1,
        "the provider's session ended: {stats}"
    );
    // The provider asks for the password again: its session is gone.
    let again = b.navigate("/page").await;
    let page = op.get(again.location()).send().await.unwrap();
    let mut next = page;
    for _ in 0..5 {
        if !next.status().is_redirection() {
            break;
        }
        let loc = url::Url::parse(&again.location())
            .unwrap()
            .join(next.headers()["location"].to_str().unwrap())
            .unwrap();
        next = op.get(loc).send().await.unwrap();
    }
    assert!(
        next.text().await.unwrap().contains("name=\"login\""),
        "a fresh login form"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_the_provider_forgot_heals_on_the_callback_and_at_start_up() {
    let mut op = Op::start_with("", serde_json::json!([]), 3600);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("loopgate-oidc-reg-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("registration.json");
    let client = format!("registration_file = \"{}\"", file.display());
    let gw = gateway(&op, port, &client).await;
    assert_eq!(op.stats().await["registration"], 1);
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        stored["registration_client_uri"].is_string(),
        "RFC 7592 kept: {stored}"
    );
    assert!(stored["registration_access_token"].is_string());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file holds a credential");
    }
    let first_client = stored["client_id"].as_str().unwrap().to_string();
    let mut b = signed_in_at(&op, port, "ada").await;
    assert_eq!(b.navigate("/page").await.status, StatusCode::OK);

    // The provider forgets the client while a login is under way: the code exchange says
    // invalid_client, the gateway registers again and asks the user to sign in again.
    let mut b2 = Browser::new(&format!("http://127.0.0.1:{port}"));
    let start = b2.navigate("/page").await;
    let back = sign_in(
        &start.location(),
        "grace",
        &format!("http://127.0.0.1:{port}/oauth2/callback"),
    )
    .await;
    op.restart();
    let r = back_at_gateway(&mut b2, &back).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.body.contains("Please sign in again"), "{}", r.body);
    assert_eq!(
        op.stats().await["registration"],
        1,
        "registered at the new provider"
    );
    let healed: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_ne!(healed["client_id"].as_str().unwrap(), first_client);
    let admin = gw.gateway().admin_addr().unwrap();
    let metrics = scrape(admin).await;
    assert!(
        metrics.contains("loopgate_reregistrations_total{result=\"ok\",school=\"default\"} 1"),
        "{metrics}"
    );
    let mut b3 = signed_in_at(&op, port, "grace").await;
    assert_eq!(
        b3.navigate("/page").await.status,
        StatusCode::OK,
        "the next login works"
    );
    gw.shutdown().await;

    // Forgotten while the gateway was down: the stored registration is checked at start-up
    // (RFC 7592 read) and made again.
    op.restart();
    let gw = gateway(&op, port, &client).await;
    assert_eq!(op.stats().await["registration"], 1);
    let mut b4 = signed_in_at(&op, port, "ada").await;
    assert_eq!(b4.navigate("/page").await.status, StatusCode::OK);
    gw.shutdown().await;
    drop(b);
    std::fs::remove_dir_all(&dir).ok();
}

/// The provider forgets the client while sessions live: the refresh answers
/// `invalid_client`, the session ends, and the gateway registers again at once, so the
/// login the user is sent to works (no "sign in again" round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_refused_for_a_forgotten_client_registers_again_before_the_next_login() {
    let mut op = Op::start_with("", serde_json::json!([]), 120);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("loopgate-oidc-ref-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("registration.json");
    let gw = gateway(
        &op,
        port,
        &format!("registration_file = \"{}\"", file.display()),
    )
    .await;
    let client_of = || {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        v["client_id"].as_str().unwrap().to_string()
    };
    let first = client_of();
    let mut b = signed_in_at(&op, port, "ada").await;
    op.restart();
    gw.gateway().shared.clock.advance(90); // inside the refresh window
    let r = b.navigate("/page").await;
    assert_eq!(r.status, StatusCode::FOUND, "the session ended: {}", r.body);
    let healed = client_of();
    assert_ne!(healed, first, "registered again");
    assert_eq!(op.stats().await["registration"], 1);
    assert!(
        r.location().contains(&format!("client_id={healed}")),
        "the login goes out with the new client: {}",
        r.location()
    );
    let back = sign_in(
        &r.location(),
        "ada",
        &format!("http://127.0.0.1:{port}/oauth2/callback"),
    )
    .await;
    let done = back_at_gateway(&mut b, &back).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(b.navigate("/page").await.status, StatusCode::OK);
    let admin = gw.gateway().admin_addr().unwrap();
    let metrics = scrape(admin).await;
    for line in [
        "loopgate_refresh_total{result=\"invalid_client\",school=\"default\"} 1",
        "loopgate_reregistrations_total{result=\"ok\",school=\"default\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// The provider forgets the client while the gateway runs and nobody refreshes: the next
/// login would stop on the provider's own error page, which the gateway never sees. The
/// periodic RFC 7592 check (`registration_check`) notices and registers again first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_forgotten_between_logins_is_noticed_and_made_again() {
    let mut op = Op::start_with("", serde_json::json!([]), 3600);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("loopgate-oidc-chk-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("registration.json");
    let client = format!(
        "registration_file = \"{}\"\nregistration_check = \"1s\"",
        file.display()
    );
    let gw = gateway(&op, port, &client).await;
    let client_of = || {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        v["client_id"].as_str().unwrap().to_string()
    };
    let first = client_of();
    op.restart();
    // Wait for the check to register at the new provider (it runs every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while op.stats().await["registration"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no registration check within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(client_of(), first);
    let mut b = signed_in_at(&op, port, "grace").await;
    assert_eq!(b.navigate("/page").await.status, StatusCode::OK);
    assert_eq!(
        op.stats().await["registration"],
        1,
        "a client the provider knows is not registered again"
    );
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_opaque_access_tokens_are_bearers_on_api_routes_and_audience_is_enforced() {
    let lab = lab(3600).await;
    let mut b = signed_in(&lab, "ada").await;
    let token = bearer(&b.navigate("/page").await.json());
    let call = |port: u16, token: String| async move {
        http()
            .get(format!("http://127.0.0.1:{port}/api/grades"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    let r = call(lab.port, token.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("ada"));
    assert_eq!(
        echoed(&echo, "x-loopwise-roles"),
        Some("teacher"),
        "a string roles claim"
    );
    assert_eq!(bearer(&echo), token, "the client's own token goes upstream");
    assert_eq!(
        call(lab.port, format!("{token}x")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // With an audience, a token that does not say it is for us is refused: an opaque
    // token names no audience.
    let port = free_port();
    let strict = gateway(
        &lab.op,
        port,
        &format!("client_id = \"{CLIENT}\"\naudience = [\"https://grades.example\"]"),
    )
    .await;
    assert_eq!(call(port, token).await.status(), StatusCode::UNAUTHORIZED);
    strict.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_cancelled_at_the_provider_says_the_school_refused() {
    let lab = lab(3600).await;
    let mut b = Browser::new(&lab.url(""));
    let start = b.navigate("/page").await;
    let back = cancel(&start.location(), &lab.callback_prefix()).await;
    assert!(back.contains("error=access_denied"), "{back}");
    let r = back_at_gateway(&mut b, &back).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body.contains("Your school refused the sign-in"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("/oauth2/start?rd=%2Fpage"),
        "offers to try again"
    );
    assert_eq!(b.xhr("/page").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(lab.op.stats().await["token"], 0);
}

/// A confidential client may introspect: the provider's opaque access token then carries
/// its scopes (from introspection), which `scopes` on api routes check; a session's
/// scopes come from the token response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_clients_opaque_bearers_carry_their_scopes_from_introspection() {
    const CONFIDENTIAL: &str = "loopgate-confidential";
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/oauth2/callback");
    let op = Op::start_with(
        "",
        json!([{
            "client_id": CONFIDENTIAL,
            "client_secret": CONFIDENTIAL_SECRET,
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }]),
        3600,
    );
    let echo = echo_upstream().await;
    let text = gateway_toml(
        &op,
        port,
        &format!(
            "client_id = \"{CONFIDENTIAL}\"\nclient_secret = {{ env = \"OP_CLIENT_SECRET\" }}"
        ),
        &echo.addr.to_string(),
    )
    .replace(
        r#"scopes = ["openid", "profile", "email", "offline_access"]"#,
        r#"scopes = ["openid", "profile", "email", "offline_access", "read"]"#,
    ) + &format!(
        r#"
[[routes]]
name = "page-write"
path = "/write"
upstream = "http://{app}"
scopes = ["write"]

[[routes]]
name = "page-read"
path = "/read"
upstream = "http://{app}"
scopes = ["read"]

[[routes]]
name = "api-read"
path = "/api/read"
upstream = "http://{app}"
auth = "api"
scopes = ["read"]

[[routes]]
name = "api-write"
path = "/api/write"
upstream = "http://{app}"
auth = "api"
scopes = ["write"]
"#,
        app = echo.addr
    );
    let _gw = start_gateway(&text).await;
    let mut b = signed_in_at(&op, port, "grace").await;
    let token = bearer(&b.navigate("/page").await.json());
    // The session's scopes come from the token response.
    assert_eq!(b.navigate("/read/x").await.status, StatusCode::OK);
    assert_eq!(b.navigate("/write/x").await.status, StatusCode::FORBIDDEN);
    assert!(
        token.split('.').count() != 3,
        "oidc-provider's access tokens are opaque: {token}"
    );
    let call = |path: &'static str, token: String| async move {
        http()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    let r = call("/api/read/grades", token.clone()).await;
    assert_eq!(r.status(), StatusCode::OK, "the token has `read`");
    let echo_body: Value = r.json().await.unwrap();
    let scope = echoed(&echo_body, "x-loopwise-scope").unwrap_or_default();
    assert!(
        scope.split(' ').any(|s| s == "read"),
        "scopes from introspection: {scope:?}"
    );
    assert_eq!(echoed(&echo_body, "x-loopwise-user"), Some("grace"));
    assert_eq!(
        echoed(&echo_body, "x-loopwise-roles"),
        Some("admin,teacher")
    );
    let r = call("/api/write/grades", token.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "the token lacks `write`");
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    // The scopes come from the server, not from what the token says of itself: a token
    // the server does not know has none.
    assert_eq!(
        call("/api/read/grades", format!("{token}x")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// A provider without a userinfo endpoint: identity comes from the ID token alone (no
/// call to a Loopwise path that is not there); without `openid` nothing could say who
/// signed in, and the login says so instead of calling a guessed URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_userinfo_signs_in_by_id_token_and_plain_oauth_says_why_not() {
    let port = free_port();
    let op =
        Op::start_without_userinfo(CLIENT, &format!("http://127.0.0.1:{port}/oauth2/callback"));
    let echo = echo_upstream().await;
    let _gw = start_gateway(&gateway_toml(
        &op,
        port,
        &format!("client_id = \"{CLIENT}\""),
        &echo.addr.to_string(),
    ))
    .await;
    let mut b = signed_in_at(&op, port, "grace").await;
    let echo_body = b.navigate("/page").await.json();
    assert_eq!(echoed(&echo_body, "x-loopwise-user"), Some("grace"));
    assert_eq!(op.stats().await["userinfo"], 0);

    // The same provider, asked for plain OAuth 2.0 (no `openid`): no ID token, no
    // userinfo — the login fails with that reason, and nothing is guessed.
    let port = free_port();
    let op =
        Op::start_without_userinfo(CLIENT, &format!("http://127.0.0.1:{port}/oauth2/callback"));
    let text = gateway_toml(
        &op,
        port,
        &format!("client_id = \"{CLIENT}\""),
        &echo.addr.to_string(),
    )
    .replace(
        r#"scopes = ["openid", "profile", "email", "offline_access"]"#,
        r#"scopes = ["read"]"#,
    );
    let _gw2 = start_gateway(&text).await;
    let mut b = Browser::new(&format!("http://127.0.0.1:{port}"));
    let start = b.navigate("/page").await;
    let back = sign_in(
        &start.location(),
        "grace",
        &format!("http://127.0.0.1:{port}/oauth2/callback"),
    )
    .await;
    let r = back_at_gateway(&mut b, &back).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert!(r.body.contains("offers no userinfo endpoint"), "{}", r.body);
    assert_eq!(b.xhr("/page").await.status, StatusCode::UNAUTHORIZED);
}
