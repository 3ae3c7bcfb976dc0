//! Forward auth behind a real nginx: Debian's `/usr/sbin/nginx`, started by the test on a
//! free loopback port with `deploy/nginx/loopgate.conf` (the documented server block, its
//! placeholders swapped for the rig's addresses) in front of the gateway, the Loopwise
//! emulator and an echo app. nginx asks the gateway's `GET /oauth2/auth` about every
//! request (`auth_request`) and copies the token and identity headers it answers with
//! onto the request it proxies to the app. When the check says 401, nginx hands the
//! request to the gateway, which answers it as it answers any anonymous request: a 302 to
//! Loopwise's sign-in for a browser navigation (coming back to exactly that URL), a 401
//! for an XHR or API client.
//!
//! nginx is required: when it is missing the test fails (it is never skipped) and says to
//! run `scripts/ensure-deps`, which CI runs.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::gw::*;
use crate::common::{bearer_get, http, query_param};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const NGINX: &str = "/usr/sbin/nginx";
const SESSION: &str = "loopgate_session";
/// How long nginx may take to start answering.
const STARTUP: Duration = Duration::from_secs(20);

/// Policy-only routes (no `upstream`): nginx proxies, the gateway only decides.
const POLICY_ROUTES: &str = r#"
[[routes]]
name = "admin"
path = "/admin"
auth = "login"
roles = ["school_admin"]

[[routes]]
name = "preflight"
path = "/cors"
auth = "login"
skip_auth_methods = ["OPTIONS"]
"#;

/// A scratch directory for nginx's config, logs, pid and temp files; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("loopgate-nginx-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("tmp")).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` with `from` (which must occur exactly once) replaced by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nginx/loopgate.conf should contain `{from}` exactly once"
    );
    text.replacen(from, to, 1)
}

/// A real nginx (master + one worker) in its own process group; dropping it stops nginx
/// (SIGTERM, then SIGKILL to the group after 5 s), also when the test panics (and then
/// prints nginx's logs).
struct Nginx {
    child: Child,
    port: u16,
    /// Set when a start-up panic already printed the logs.
    logs_shown: bool,
    // Declared last: removed after the processes are gone.
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx on `port` with the deploy server block pointed at the gateway on
    /// `gateway_port` and the app at `app`; returns once it answers HTTP.
    async fn start(port: u16, gateway_port: u16, app: SocketAddr) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: run scripts/ensure-deps (it installs Debian's nginx; CI runs it)"
        );
        let dir = TempDir::new();
        let d = dir.0.display().to_string();

        let site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/loopgate.conf"),
        )
        .expect("read deploy/nginx/loopgate.conf");
        let site = replace_once(
            &site,
            "server loopgate:8080;",
            &format!("server 127.0.0.1:{gateway_port};"),
        );
        let site = replace_once(&site, "server app:3000;", &format!("server {app};"));
        let site = replace_once(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        std::fs::write(dir.0.join("loopgate.conf"), site).unwrap();

        // As root, the master would run its worker as `nobody`, which cannot write our
        // temp dirs; run it as root (tests only), and leave the dirs usable by anyone.
        let root = std::fs::metadata(&dir.0).map(|m| m.uid()).unwrap_or(1) == 0;
        let user = if root { "user root;" } else { "" };
        let _ = std::fs::set_permissions(dir.0.join("tmp"), std::fs::Permissions::from_mode(0o777));
        let conf = format!(
            r#"# Written by tests/nginx.rs
daemon off;
master_process on;
worker_processes 1;
{user}
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    log_format loopgate '$remote_addr "$request" $status upstream=$upstream_addr/$upstream_status';
    access_log {d}/access.log loopgate;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    include {d}/loopgate.conf;
}}
"#
        );
        let conf_path = dir.0.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let stderr = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NGINX}: {e}"));
        let mut nginx = Nginx {
            child,
            port,
            logs_shown: false,
            dir,
        };
        nginx.wait_ready().await;
        nginx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls until nginx answers an HTTP request that it proxies to the gateway.
    async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let probe = format!("{}/oauth2/userinfo", self.url());
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                self.logs_shown = true;
                panic!("nginx exited during start-up ({exit}):\n{}", self.logs());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                if let Ok(r) = client.get(&probe).send().await {
                    // The gateway's own answer (no session) came back through nginx.
                    if r.status() == StatusCode::UNAUTHORIZED {
                        return;
                    }
                }
            }
            self.logs_shown = Instant::now() >= deadline;
            assert!(
                Instant::now() < deadline,
                "nginx did not answer {probe} within {STARTUP:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// nginx's stderr, error log and access log (the last lines of each).
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "error.log", "access.log"] {
            let text = std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- nginx {name} ---\n{}\n",
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs_shown {
            eprintln!("{}", self.logs());
        }
        // SIGTERM: nginx's fast shutdown; the master stops and reaps its worker.
        let pid = self.child.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Still there: kill the whole group (the master is not reaped yet, so the group
        // id, its pid, still names our processes only).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Emulator + echo app + gateway (public URL: nginx's) + nginx in front.
struct Stack {
    rig: Rig,
    nginx: Nginx,
}

async fn stack() -> Stack {
    stack_with(|_| {}).await
}

async fn stack_with(em: impl FnOnce(&mut loopgate::emulator::EmulatorConfig)) -> Stack {
    let nginx_port = free_port();
    let rig = rig_with(em, |s| {
        // Browsers only ever see nginx: the callback registered at Loopwise is nginx's.
        s.public_url = format!("http://127.0.0.1:{nginx_port}");
        s.server_extra = r#"trusted_proxies = ["127.0.0.1/32"]"#.into();
        s.extra = POLICY_ROUTES.into();
    })
    .await;
    let nginx = Nginx::start(nginx_port, rig.setup.port, rig.echo.addr).await;
    Stack { rig, nginx }
}

impl Stack {
    fn browser(&self) -> Browser {
        Browser::new(&self.nginx.url())
    }

    /// Signs in through nginx, starting from an anonymous navigation to `path`: nginx
    /// asks the check (401), hands the request to the gateway, whose answer is the 302 to
    /// Loopwise; the callback comes back through nginx. Returns the callback's answer,
    /// the redirect back to exactly `path`.
    async fn login(&self, b: &mut Browser, path: &str, user: &str) -> Seen {
        let first = b.navigate(path).await;
        self.finish_login(b, first, path, user).await
    }

    /// The same from an explicit sign-in link, `/oauth2/start?rd=<target>`.
    async fn login_via_start(&self, b: &mut Browser, target: &str, user: &str) -> Seen {
        let rd: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
        let first = b.navigate(&format!("/oauth2/start?rd={rd}")).await;
        self.finish_login(b, first, target, user).await
    }

    async fn finish_login(&self, b: &mut Browser, first: Seen, target: &str, user: &str) -> Seen {
        assert_eq!(
            first.status,
            StatusCode::FOUND,
            "an anonymous navigation is sent to sign in: {}",
            first.body
        );
        let authorize = first.location();
        assert!(
            authorize.starts_with(&format!("{}/oauth/authorize?", self.rig.em.url())),
            "{authorize}"
        );
        assert_eq!(
            query_param(&authorize, "redirect_uri"),
            Some(format!("{}/oauth2/callback", self.nginx.url())),
            "Loopwise sends the browser back through nginx"
        );
        let login_cookie = b
            .jar
            .cookies
            .iter()
            .find(|c| c.name.starts_with("loopgate_session_login_"))
            .expect("the login-state cookie came through nginx");
        assert_eq!(login_cookie.path, "/oauth2/callback");

        let callback = b
            .through_loopwise(&authorize, self.rig.em.url(), user)
            .await;
        assert!(callback.starts_with("/oauth2/callback?"), "{callback}");
        let done = b.navigate(&callback).await;
        assert_eq!(done.status, StatusCode::FOUND, "callback: {}", done.body);
        assert_eq!(done.location(), target, "back to where the user was going");
        let session = b
            .jar
            .get(SESSION)
            .expect("session cookie set through nginx");
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(session.raw.contains(attr), "{attr} in {}", session.raw);
        }
        assert!(
            b.jar.cookies.iter().all(|c| !c.name.contains("_login_")),
            "the login-state cookie is cleared"
        );
        done
    }
}

fn bearer_of(echo: &Value) -> String {
    echoed(echo, "authorization")
        .expect("an Authorization header reached the app")
        .strip_prefix("Bearer ")
        .expect("a Bearer token")
        .to_string()
}

fn is_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3 && parts[0].starts_with("eyJ") && parts.iter().all(|p| !p.is_empty())
}

/// The session's Set-Cookie on a response, if any.
fn session_set_cookie(s: &Seen) -> Option<String> {
    s.set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{SESSION}=")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_nginx_then_the_app_gets_the_token_and_identity() {
    let st = stack().await;
    let mut b = st.browser();

    // (a) Anonymous navigation → (check: 401) → the gateway's 302 to Loopwise, through
    // nginx → sign in → callback through nginx → session cookie → back to the page.
    st.login(&mut b, "/some/page?x=1", "grace").await;
    let login_flow_seen = b.seen.len();

    // (b) The same URL now reaches the app, with the session's token and identity.
    let r = b.navigate("/some/page?x=1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["path"], "/some/page");
    assert_eq!(echo["query"], "x=1");
    let token = bearer_of(&echo);
    assert!(is_jwt(&token), "a Loopwise JWT: {token}");
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("grace"));
    assert_eq!(
        echoed(&echo, "x-loopwise-email"),
        Some("grace@demo.loopwise.test")
    );
    assert_eq!(echoed(&echo, "x-loopwise-name"), Some("Grace Hopper"));
    assert_eq!(echoed(&echo, "x-loopwise-roles"), Some("teacher"));
    assert_eq!(echoed(&echo, "x-loopwise-school"), Some("4242"));
    assert_eq!(echoed(&echo, "x-loopwise-scope"), Some("read courses:read"));
    assert_eq!(echoed(&echo, "x-forwarded-user"), Some("grace"));
    assert_eq!(
        echoed(&echo, "x-forwarded-email"),
        Some("grace@demo.loopwise.test")
    );
    assert!(
        echoed(&echo, "cookie").is_none(),
        "the session cookie is stripped before the app: {echo}"
    );
    assert!(session_set_cookie(&r).is_none(), "nothing to refresh yet");

    // Tokens never reached the browser during the login (the echo app reflects the
    // header back afterwards, by design of the test).
    for s in &b.seen[..login_flow_seen] {
        assert!(!s.contains(&token), "token leaked to the browser");
    }

    // The check itself is internal to nginx: a browser (page JavaScript) asking for it
    // directly gets nginx's 404, never the 202 carrying the token.
    let direct = b.xhr("/oauth2/auth").await;
    assert_eq!(direct.status, StatusCode::NOT_FOUND, "{}", direct.body);
    assert!(direct.header("authorization").is_none());
    assert!(!direct.body.contains(&token));
    // The gateway's other endpoints are on nginx's origin.
    let me = b.xhr("/oauth2/userinfo").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.json()["sub"], "grace");

    // Spoofed identity headers and other cookies: nginx sets every identity header from
    // the check's answer, drops header names with underscores, and strips only the
    // gateway's cookies.
    let session = b.jar.get(SESSION).unwrap().value.clone();
    let r = http()
        .get(format!("{}/spoof", st.nginx.url()))
        .header("accept", "application/json")
        .header(
            "cookie",
            format!("theme=dark; {SESSION}={session}; lang=en"),
        )
        .header("X-Loopwise-User", "ada")
        .header("X-LOOPWISE-ROLES", "school_admin")
        .header("x-loopwise-email", "ada@evil.example")
        .header("x-loopwise-school", "1")
        .header("x_loopwise_name", "Ada")
        .header("x-forwarded-user", "ada")
        .header("x-auth-request-user", "ada")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    for (name, value) in [
        ("x-loopwise-user", "grace"),
        ("x-loopwise-roles", "teacher"),
        ("x-loopwise-email", "grace@demo.loopwise.test"),
        ("x-loopwise-school", "4242"),
        ("x-forwarded-user", "grace"),
    ] {
        assert_eq!(
            echo["headers"][name],
            serde_json::json!([value]),
            "{name}: {echo}"
        );
    }
    let headers = echo["headers"].as_object().unwrap();
    for bad in ["x_loopwise_name", "x-auth-request-user"] {
        assert!(!headers.contains_key(bad), "{bad} reached the app: {echo}");
    }
    assert_eq!(echoed(&echo, "x-loopwise-name"), Some("Grace Hopper"));
    assert_eq!(echoed(&echo, "cookie"), Some("theme=dark; lang=en"));

    // A POST with a body: the check gets headers only, the app gets the body.
    let body = "x".repeat(8 * 1024);
    let r = http()
        .post(format!("{}/upload", st.nginx.url()))
        .header("cookie", format!("{SESSION}={session}"))
        .header("accept", "application/json")
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echoed(&echo, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("grace"));

    // The injected token is a live Loopwise token for this user.
    let (status, _, info) = bearer_get(
        &http(),
        &format!("{}/api/oauth/userinfo", st.rig.em.url()),
        &token,
    )
    .await;
    assert_eq!(
        (status, info["sub"].as_str()),
        (StatusCode::OK, Some("grace"))
    );
    // One login; userinfo once at login (plus this test's call); the checks nginx made
    // for every request never called Loopwise.
    let stats = st.rig.em.stats();
    assert_eq!(stats.grant("authorization_code", "ok"), 1);
    assert_eq!(stats.endpoint("userinfo"), 2, "{stats:?}");
    assert_eq!(stats.grant("refresh_token", "ok"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_comes_back_to_the_exact_page_however_it_is_spelled() {
    let st = stack().await;
    // Several parameters, escapes in the path and the query: nginx passes the raw
    // request on, the gateway keeps it as the login's target.
    let target = "/reports/q%2C3?year=2024&term=2&q=a+b%26c";
    let mut b = st.browser();
    st.login(&mut b, target, "alan").await;
    let r = b.navigate(target).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["path"], "/reports/q%2C3");
    assert_eq!(echo["query"], "year=2024&term=2&q=a+b%26c");
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("alan"));

    // An explicit sign-in link (what an app's "Sign in" button points at) through nginx.
    let mut b = st.browser();
    st.login_via_start(&mut b, "/reports?a=1&b=2", "grace")
        .await;
    let r = b.navigate("/reports?a=1&b=2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(echoed(&r.json(), "x-loopwise-user"), Some("grace"));
    // A target that is not a same-origin path is refused, through nginx as directly.
    let mut b = st.browser();
    let first = b.navigate("/oauth2/start?rd=%2F%2Fevil.example%2F").await;
    let authorize = first.location();
    let callback = b
        .through_loopwise(&authorize, st.rig.em.url(), "grace")
        .await;
    let done = b.navigate(&callback).await;
    assert_eq!(done.status, StatusCode::FOUND);
    assert_eq!(done.location(), "/");

    assert_eq!(st.rig.em.stats().grant("authorization_code", "ok"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_calls_get_401_and_only_navigations_are_sent_to_sign_in() {
    let st = stack().await;
    let mut b = st.browser();

    // (c) An XHR is never redirected: 401, the gateway's JSON and Bearer challenge.
    let r = b.xhr("/data").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.header("location").is_none());
    assert_eq!(r.json()["error"], "unauthorized");
    let challenges: Vec<_> = r.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges, ["Bearer realm=\"loopgate\""], "one challenge");
    assert!(r.set_cookies().is_empty());
    // So is an API client, and a POST from a form that accepts HTML.
    let r = b.request(Method::GET, "/data", &[("accept", "*/*")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = b
        .request(Method::POST, "/form", &[("accept", "text/html")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = b
        .request(
            Method::GET,
            "/data",
            &[
                ("accept", "text/html"),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A navigation without Fetch Metadata (an older browser) is sent to sign in, with
    // the gateway's login-state cookie.
    let mut old = st.browser();
    let r = old
        .request(Method::GET, "/page", &[("accept", "text/html,*/*;q=0.8")])
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.location()
            .starts_with(&format!("{}/oauth/authorize?", st.rig.em.url())),
        "{}",
        r.location()
    );
    assert_eq!(r.set_cookies().len(), 1, "{:?}", r.set_cookies());
    assert!(r.set_cookies()[0].starts_with("loopgate_session_login_"));

    // What the check itself answers an anonymous request: 401, never a redirect (asked
    // directly at the gateway; through nginx it is internal).
    let r = http()
        .get(st.rig.url("/oauth2/auth"))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .header("x-forwarded-uri", "/some/page?x=1")
        .header("x-forwarded-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("location").is_none());
    assert!(
        r.headers().get("set-cookie").is_none(),
        "no login-state cookie from a check"
    );
    let r = b.navigate("/oauth2/auth").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "internal to nginx");

    // The original method reaches the check: an anonymous CORS preflight passes a
    // route that skips OPTIONS, a GET on it does not.
    let r = b
        .request(
            Method::OPTIONS,
            "/cors/x",
            &[("origin", "http://elsewhere.example")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["method"], "OPTIONS");
    assert!(echoed(&echo, "authorization").is_none());
    assert!(echoed(&echo, "x-loopwise-user").is_none());
    let r = b.xhr("/cors/x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // None of this reached Loopwise, and no cookie was set.
    assert!(b.jar.cookies.is_empty(), "{:?}", b.jar.cookies);
    let stats = st.rig.em.stats();
    assert_eq!(stats.endpoint("token"), 0);
    assert_eq!(stats.endpoint("userinfo"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_roles_are_enforced_by_the_check() {
    let st = stack().await;

    // (d) Grace is a teacher: /admin needs school_admin → the check says 403, and nginx
    // answers with the gateway's own "Access denied" page, after a successful login.
    let mut grace = st.browser();
    st.login(&mut grace, "/admin/x", "grace").await;
    let r = grace.navigate("/admin/x").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.header("location").is_none(), "no login loop");
    assert!(r.body.contains("Access denied"), "{}", r.body);
    assert!(r.body.contains("Grace Hopper (grace)"), "{}", r.body);
    assert!(
        r.body.contains("school_admin"),
        "says what is missing: {}",
        r.body
    );
    let r = grace.xhr("/admin").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "forbidden");
    // Elsewhere she is fine.
    let r = grace.navigate("/reports").await;
    assert_eq!(r.status, StatusCode::OK);

    // The check matches the path the app will see, however it is spelled: nginx passes
    // the raw request URI on, and the gateway normalises it before matching (and refuses
    // an encoded slash outright, 400, rather than guess how the app reads it).
    let cookie = format!("{SESSION}={}", grace.jar.get(SESSION).unwrap().value);
    for (path, expected) in [
        ("//admin/x", 403),
        ("/%61dmin/x", 403),
        ("/reports/../admin/x", 403),
        ("/./admin/x", 403),
        ("/ADMIN/../admin", 403),
        ("/admin%2Fx", 400),
        ("/reports/x", 200),
    ] {
        let (status, body) = raw_get(
            st.nginx.port,
            path,
            &[("cookie", cookie.as_str()), ("accept", "application/json")],
        )
        .await;
        assert_eq!(status, expected, "{path}: {body}");
    }

    // Ada is a school admin: allowed, with her roles injected.
    let mut ada = st.browser();
    st.login(&mut ada, "/admin/x", "ada").await;
    let r = ada.navigate("/admin/x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["path"], "/admin/x");
    assert_eq!(echoed(&echo, "x-loopwise-user"), Some("ada"));
    assert_eq!(
        echoed(&echo, "x-loopwise-roles"),
        Some("school_admin,teacher")
    );
    assert!(is_jwt(&bearer_of(&echo)));

    let stats = st.rig.em.stats();
    assert_eq!(stats.grant("authorization_code", "ok"), 2, "one login each");
    assert_eq!(stats.endpoint("userinfo"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_the_check_reaches_the_browser_through_nginx() {
    // 120-second access tokens: the gateway refreshes in the last 60 s.
    let st = stack_with(|e| e.access_token_ttl = Duration::from_secs(120)).await;
    let mut b = st.browser();
    st.login(&mut b, "/", "grace").await;
    let first = b.xhr("/a").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(session_set_cookie(&first).is_none());
    let old_token = bearer_of(&first.json());

    st.rig.gw.gateway().shared.clock.advance(61);
    let r = b.xhr("/b").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let set = session_set_cookie(&r)
        .expect("the check's refreshed cookie is on nginx's response (add_header)");
    assert!(set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
    let new_token = bearer_of(&r.json());
    assert_ne!(new_token, old_token, "the app already got the new token");
    assert_eq!(st.rig.em.stats().grant("refresh_token", "ok"), 1);

    // With the new cookie, no more refreshes.
    for _ in 0..3 {
        let r = b.navigate("/c").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(session_set_cookie(&r).is_none());
        assert_eq!(bearer_of(&r.json()), new_token);
    }
    assert_eq!(st.rig.em.stats().grant("refresh_token", "ok"), 1);
}
