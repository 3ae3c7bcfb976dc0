//! The README demo in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver with fantoccini, against `loopgate demo`
//! (emulator + sample app + gateway) started in-process.
//!
//! Sign in as Grace, approve the consent, check what the sample app shows and that the
//! token never reaches the page or a readable cookie, load courses through the gateway
//! from the page's JavaScript, take a screenshot (`docs/demo-screenshot.png`), sign out.
//!
//! Chromium and chromedriver are required: when they are missing the test fails (it is
//! never skipped) and says to run `scripts/ensure-deps`.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::gw::free_port;
use fantoccini::{Client, ClientBuilder, Locator};
use loopgate::demo::Demo;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one step (a page load, a fetch) may take before the test gives up on it.
const STEP: Duration = Duration::from_secs(20);
const LOGIN_TITLE: &str = "Sign in to Loopwise";

/// A scratch directory (Chromium profile + chromedriver log), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("loopgate-browser-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("profile")).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// chromedriver, started in its own process group on a free port. Dropping it kills the
/// whole group (chromedriver and any Chromium it left behind), also when the test panics.
struct ChromeDriver {
    child: Child,
    port: u16,
    log: PathBuf,
    // Declared last: the profile is removed after the processes are gone.
    dir: TempDir,
}

impl ChromeDriver {
    async fn start() -> Result<ChromeDriver, String> {
        let dir = TempDir::new();
        let log = dir.0.join("chromedriver.log");
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {CHROMEDRIVER}: {e}"))?;
        let mut driver = ChromeDriver {
            child,
            port,
            log,
            dir,
        };
        driver.wait_ready().await?;
        Ok(driver)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn profile(&self) -> PathBuf {
        self.dir.0.join("profile")
    }

    /// Polls `GET /status` until chromedriver says it is ready.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let status = format!("{}/status", self.url());
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!(
                    "chromedriver exited during start-up ({exit}); its log:\n{}",
                    self.log_tail()
                ));
            }
            if let Ok(resp) = http.get(&status).send().await {
                if let Ok(body) = resp.json::<serde_json::Value>().await {
                    if body["value"]["ready"] == true {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver did not answer {status} within {STEP:?}; its log:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of chromedriver's log (every line: start-up and session errors).
    fn log_tail(&self) -> String {
        self.log_lines(|_| true)
    }

    /// Its warnings and errors only (the full INFO log repeats every command and page).
    fn log_problems(&self) -> String {
        self.log_lines(|l| l.contains("[WARNING]") || l.contains("[SEVERE]"))
    }

    fn log_lines(&self, keep: impl Fn(&str) -> bool) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0)); Chromium inherits it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &ChromeDriver) -> Result<Client, String> {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                // Small /dev/shm (containers) crashes Chromium; /tmp is fine.
                "--disable-dev-shm-usage",
                "--window-size=1100,900",
                format!("--user-data-dir={}", driver.profile().display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url())
        .await
        .map_err(|e| {
            format!(
                "cannot open a Chromium session: {e}\nchromedriver log:\n{}",
                driver.log_tail()
            )
        })
}

/// `Result<T, E>` → `Result<T, String>` with what was being done.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Polls `probe` until it returns `Some`, for at most `STEP`.
async fn eventually<T, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> Result<T, String>
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {STEP:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_title(c: &Client, title: &str) -> Result<(), String> {
    eventually(&format!("the page titled {title:?}"), || async {
        (c.title().await.ok()? == title).then_some(())
    })
    .await
}

async fn text_of(c: &Client, css: &str) -> Result<String, String> {
    let el = c
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(css))
        .await
        .ctx(&format!("find {css}"))?;
    el.text().await.ctx(&format!("text of {css}"))
}

async fn click(c: &Client, css: &str) -> Result<(), String> {
    c.wait()
        .at_most(STEP)
        .for_element(Locator::Css(css))
        .await
        .ctx(&format!("find {css}"))?
        .click()
        .await
        .ctx(&format!("click {css}"))
}

async fn session_cookie(
    c: &Client,
) -> Result<Option<fantoccini::cookies::Cookie<'static>>, String> {
    let cookies = c.get_all_cookies().await.ctx("get all cookies")?;
    Ok(cookies.into_iter().find(|k| k.name() == "loopgate_session"))
}

/// The README demo, step by step. Returns the first thing that went wrong.
async fn demo_flow(c: &Client, demo: &Demo) -> Result<(), String> {
    let home = demo.url().to_string();

    // 1. The gateway sends an anonymous navigation to the Loopwise login page.
    c.goto(&home).await.ctx("open the demo")?;
    wait_title(c, LOGIN_TITLE).await?;
    let login_url = c.current_url().await.ctx("current url")?;
    ensure!(
        login_url.as_str().starts_with(demo.emulator.url()),
        "the login page should be served by the emulator ({}), got {login_url}",
        demo.emulator.url()
    );
    click(c, "#login-grace").await?;

    // 2. Consent: the scopes the demo asks for.
    let scopes = text_of(c, "#scopes").await?;
    for s in ["read", "courses:read"] {
        ensure!(
            scopes.split_whitespace().any(|w| w == s),
            "the consent page should list scope {s:?}, lists {scopes:?}"
        );
    }
    click(c, "#approve").await?;

    // 3. Back on the sample app, signed in as Grace.
    eventually("the sample app at the demo URL", || async {
        let u = c.current_url().await.ok()?;
        let on_app = u.as_str().trim_end_matches('/') == home.trim_end_matches('/');
        let has_name = c.find(Locator::Css("#name")).await.is_ok();
        (on_app && has_name).then_some(())
    })
    .await?;
    let name = text_of(c, "#name").await?;
    ensure!(name == "Grace Hopper", "#name is {name:?}");
    let user = text_of(c, "#user").await?;
    ensure!(user == "grace", "#user is {user:?}");
    let roles = text_of(c, "#roles").await?;
    ensure!(roles.contains("teacher"), "#roles is {roles:?}");
    let scopes = text_of(c, "#scopes").await?;
    ensure!(
        scopes.split_whitespace().any(|w| w == "courses:read"),
        "#scopes (of the Bearer the app received) is {scopes:?}"
    );

    let cookie = session_cookie(c)
        .await?
        .ok_or("the browser has no loopgate_session cookie after login")?;
    ensure!(
        cookie.http_only() == Some(true),
        "loopgate_session must be HttpOnly: {cookie:?}"
    );
    ensure!(
        cookie.same_site().map(|s| s.to_string()).as_deref() == Some("Lax"),
        "loopgate_session must be SameSite=Lax: {cookie:?}"
    );
    ensure!(
        cookie.path() == Some("/"),
        "loopgate_session must have Path=/: {cookie:?}"
    );
    let js_cookies = c
        .execute("return document.cookie", vec![])
        .await
        .ctx("read document.cookie")?;
    let js_cookies = js_cookies.as_str().unwrap_or_default();
    ensure!(
        !js_cookies.contains("loopgate_session"),
        "JavaScript can read the session cookie: document.cookie = {js_cookies:?}"
    );

    // 4. The page's JavaScript calls the Loopwise API through the gateway (no token in
    //    the page: the gateway injects it).
    click(c, "#load-courses").await?;
    let status = eventually("#courses to get a data-status", || async {
        let el = c.find(Locator::Css("#courses")).await.ok()?;
        el.attr("data-status").await.ok()?
    })
    .await?;
    let courses = text_of(c, "#courses").await?;
    ensure!(
        status == "200",
        "GET /loopwise/api/v1/courses from the page answered {status}: {courses:?}"
    );
    ensure!(
        courses.contains("Compilers for Everyone"),
        "#courses is {courses:?}"
    );
    let body = c
        .execute("return document.body.innerHTML", vec![])
        .await
        .ctx("read document.body.innerHTML")?;
    ensure!(
        !body.as_str().unwrap_or_default().contains("eyJ"),
        "the page contains something that looks like a JWT"
    );

    // 5. A screenshot of the signed-in sample app, for the docs.
    let png = c.screenshot().await.ctx("take a screenshot")?;
    ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).ctx("create docs/")?;
    std::fs::write(docs.join("demo-screenshot.png"), &png).ctx("write docs/demo-screenshot.png")?;

    // 6. Sign out (a POST): the gateway revokes the refresh token, clears the cookie and
    //    sends the browser to "/", which starts a new login.
    click(c, "#sign-out").await?;
    wait_title(c, LOGIN_TITLE).await?;
    let revoked = demo.emulator.stats().event("family_revoked");
    ensure!(
        revoked == 1,
        "sign-out should revoke the token family at Loopwise once, family_revoked = {revoked}"
    );
    if let Some(k) = session_cookie(c).await? {
        return Err(format!("loopgate_session survived sign-out: {k:?}"));
    }

    // 7. Two schools: /district accepts both, so a login starts at a chooser, a plain
    //    page of links; the keyboard alone picks South Academy (Tab to it, Enter).
    c.goto(&format!("{}/district", home.trim_end_matches('/')))
        .await
        .ctx("open /district")?;
    wait_title(c, "Choose your school").await?;
    let schools = text_of(c, "#schools").await?;
    ensure!(
        schools.contains("Demo School") && schools.contains("South Academy"),
        "the chooser lists both schools by display name: {schools:?}"
    );
    let south = c
        .find(Locator::Css("#school-south"))
        .await
        .ctx("the South Academy link")?;
    let href = south.attr("href").await.ctx("href")?.unwrap_or_default();
    ensure!(
        href.contains("school=south") && href.contains("rd=%2Fdistrict"),
        "the link keeps the target: {href}"
    );
    c.execute(
        "document.activeElement && document.activeElement.blur()",
        vec![],
    )
    .await
    .ctx("blur")?;
    let mut focused = false;
    for _ in 0..6 {
        c.active_element()
            .await
            .ctx("active element")?
            .send_keys("\u{E004}")
            .await
            .ctx("Tab")?;
        let id = c
            .active_element()
            .await
            .ctx("active element")?
            .attr("id")
            .await
            .ctx("id")?;
        if id.as_deref() == Some("school-south") {
            focused = true;
            break;
        }
    }
    ensure!(focused, "Tab reaches the South Academy link");
    c.active_element()
        .await
        .ctx("active element")?
        .send_keys("\u{E007}")
        .await
        .ctx("Enter")?;
    wait_title(c, LOGIN_TITLE).await?;
    let at = c.current_url().await.ctx("current url")?;
    ensure!(
        at.as_str().starts_with(demo.south.url()),
        "South Academy's own login page ({}), got {at}",
        demo.south.url()
    );
    click(c, "#login-ada").await?;
    click(c, "#approve").await?;
    eventually("the sample app at /district", || async {
        let u = c.current_url().await.ok()?;
        let there = u.path() == "/district";
        let has_name = c.find(Locator::Css("#name")).await.is_ok();
        (there && has_name).then_some(())
    })
    .await?;
    let name = text_of(c, "#name").await?;
    ensure!(name == "Ada Lovelace", "#name at /district is {name:?}");
    // South Academy speaks OpenID Connect: the sign-in went by its verified ID token.
    let stats = demo.south.stats();
    ensure!(
        stats.event("id_token_issued") == 1 && stats.endpoint("jwks") == 1,
        "South Academy issued and the gateway verified one ID token: {stats:?}"
    );
    Ok(())
}

/// What the browser shows, for a failure message.
async fn describe(c: &Client) -> String {
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_else(|e| format!("(unknown: {e})"));
    let title = c.title().await.unwrap_or_default();
    let source = c
        .source()
        .await
        .unwrap_or_else(|e| format!("(unavailable: {e})"));
    format!("current URL: {url}\ntitle: {title:?}\npage source:\n{source}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_demo_in_chromium() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: this test needs Debian's chromium and chromium-driver. \
             Run scripts/ensure-deps (as root, or with sudo) to install them."
        );
    }
    let started = Instant::now();

    let port = free_port();
    let demo = Demo::start(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(7200),
    )
    .await
    .expect("the demo starts");

    let driver = match ChromeDriver::start().await {
        Ok(d) => d,
        Err(e) => {
            demo.shutdown().await;
            panic!("{e}");
        }
    };
    let client = match browser(&driver).await {
        Ok(c) => c,
        Err(e) => {
            demo.shutdown().await;
            panic!("{e}");
        }
    };

    let outcome = demo_flow(&client, &demo).await;
    let failure = match outcome {
        Ok(()) => None,
        Err(e) => Some(format!(
            "{e}\n{}\nchromedriver warnings and errors:\n{}",
            describe(&client).await,
            driver.log_problems()
        )),
    };

    // 7. Close the session (Chromium quits), stop chromedriver, stop the demo.
    let closed = client.close().await;
    drop(driver);
    let stats = demo.emulator.stats();
    demo.shutdown().await;

    if let Some(f) = failure {
        panic!("browser demo failed: {f}\nemulator stats: {stats:?}");
    }
    closed.expect("close the WebDriver session");
    assert_eq!(
        stats.grant("authorization_code", "ok"),
        1,
        "exactly one code exchange: {stats:?}"
    );
    assert!(
        stats.endpoint("userinfo") >= 1,
        "the gateway should have called userinfo: {stats:?}"
    );
    assert_eq!(
        stats.endpoint("api_courses"),
        1,
        "one courses call from the page: {stats:?}"
    );
    assert_eq!(stats.event("family_revoked"), 1, "{stats:?}");
    println!("browser demo passed in {:?}", started.elapsed());
}
