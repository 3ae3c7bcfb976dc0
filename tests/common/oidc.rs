//! A real OpenID provider for the tests: panva's oidc-provider (tests/oidc/provider.mjs)
//! under node on a free loopback port, and a driver for its login and consent pages.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::gw::free_port;

/// The provider process; killed on drop.
pub struct Op {
    child: Child,
    pub issuer: String,
    origin: String,
    config: Value,
}

impl Op {
    /// Starts the provider with `issuer_path` (e.g. `/realms/x`, or empty), one public
    /// client `client_id` redirecting to `redirect_uri`, and access tokens of `ttl` s.
    pub fn start(issuer_path: &str, client_id: &str, redirect_uri: &str, ttl: u64) -> Op {
        Op::start_with(issuer_path, public_client(client_id, redirect_uri), ttl)
    }

    /// Starts the provider with `clients` (none: clients register themselves).
    pub fn start_with(issuer_path: &str, clients: Value, ttl: u64) -> Op {
        Op::start_configured(issuer_path, clients, ttl, true)
    }

    /// Like [`Op::start`] (no issuer path, hour-long tokens), for a provider without a
    /// userinfo endpoint: identity only from its ID tokens.
    pub fn start_without_userinfo(client_id: &str, redirect_uri: &str) -> Op {
        Op::start_configured("", public_client(client_id, redirect_uri), 3600, false)
    }

    fn start_configured(issuer_path: &str, clients: Value, ttl: u64, userinfo: bool) -> Op {
        let config = json!({
            "port": free_port(),
            "prefix": issuer_path,
            "access_token_ttl": ttl,
            "clients": clients,
            "userinfo": userinfo,
        });
        let (child, issuer) = spawn(&config);
        Op {
            child,
            origin: format!("http://127.0.0.1:{}", config["port"]),
            issuer,
            config,
        }
    }

    /// Stops the provider and starts it again on the same port: it forgets every
    /// registration, grant and session (its store is in memory).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, _) = spawn(&self.config);
        self.child = child;
    }

    /// The provider's counters (`token`, `userinfo`, `revocation`, `end_session`, …).
    pub async fn stats(&self) -> Value {
        reqwest::get(format!("{}/__stats", self.origin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// One public client (PKCE, no secret) with a post-logout URI at the gateway's root.
fn public_client(client_id: &str, redirect_uri: &str) -> Value {
    json!([{
        "client_id": client_id,
        "redirect_uris": [redirect_uri],
        "post_logout_redirect_uris": [redirect_uri.replace("/oauth2/callback", "/")],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }])
}

/// Runs tests/oidc/provider.mjs with `config`; returns it once it listens, and its issuer.
fn spawn(config: &Value) -> (Child, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/oidc-provider")
            .is_dir(),
        "tests/oidc/node_modules is missing: run scripts/ensure-deps (npm ci in tests/oidc)"
    );
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(dir)
        .env("OP_CONFIG", config.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs (scripts/ensure-deps installs it)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(issuer) = line.strip_prefix("ready ") {
                let _ = tx.send(issuer.to_string());
            }
        }
    });
    let issuer = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("oidc-provider did not start within 30 s");
    (child, issuer)
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `name`d attribute of the first `<form>`'s tag, and its hidden inputs.
fn form(html: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[at..at + tag[at..].find('"')?].replace("&amp;", "&"))
    };
    let start = html.find("<form").expect("a form");
    let tag = &html[start..start + html[start..].find('>').unwrap()];
    let action = attr(tag, "action").expect("form action");
    let mut hidden = Vec::new();
    let mut rest = &html[start..];
    while let Some(i) = rest.find("<input") {
        let end = rest[i..].find('>').unwrap();
        let input = &rest[i..i + end];
        if input.contains("type=\"hidden\"") {
            if let (Some(n), Some(v)) = (attr(input, "name"), attr(input, "value")) {
                hidden.push((n, v));
            }
        }
        rest = &rest[i + end..];
    }
    (action, hidden)
}

/// Follows `authorize_url` through the provider's login (as `user`) and consent pages
/// until it redirects to `callback_prefix`; returns that URL (not visited).
pub async fn sign_in(authorize_url: &str, user: &str, callback_prefix: &str) -> String {
    sign_in_with(&op_browser(), authorize_url, user, callback_prefix).await
}

/// A browser for the provider's pages: its own cookie jar, redirects shown.
pub fn op_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// [`sign_in`] with `client`'s cookies (the provider's session stays in it).
pub async fn sign_in_with(
    client: &reqwest::Client,
    authorize_url: &str,
    user: &str,
    callback_prefix: &str,
) -> String {
    let mut url = url::Url::parse(authorize_url).unwrap();
    let mut post: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let resp = match post.take() {
            Some(fields) => client.post(url.clone()).form(&fields).send().await.unwrap(),
            None => client.get(url.clone()).send().await.unwrap(),
        };
        if resp.status().is_redirection() {
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            if loc.starts_with(callback_prefix) {
                return loc;
            }
            url = url.join(&loc).unwrap();
            continue;
        }
        let status = resp.status();
        let html = resp.text().await.unwrap();
        assert!(
            status.is_success(),
            "the provider answered {status}: {html}"
        );
        let (action, mut fields) = form(&html);
        if html.contains("name=\"login\"") {
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "any".into()));
        }
        url = url.join(&action).unwrap();
        post = Some(fields);
    }
    panic!("no redirect to {callback_prefix} after 20 steps");
}

/// Follows an RP-initiated logout URL: confirms the provider's "sign out?" form and
/// returns where the provider sends the browser back to.
pub async fn confirm_logout(client: &reqwest::Client, logout_url: &str) -> String {
    let url = url::Url::parse(logout_url).unwrap();
    let resp = client.get(url.clone()).send().await.unwrap();
    let status = resp.status();
    let html = resp.text().await.unwrap();
    assert!(
        status.is_success(),
        "the provider answered {status}: {html}"
    );
    let (action, mut fields) = form(&html);
    fields.push(("logout".into(), "yes".into()));
    let mut next = url.join(&action).unwrap();
    let mut resp = client
        .post(next.clone())
        .form(&fields)
        .send()
        .await
        .unwrap();
    for _ in 0..5 {
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        next = next.join(&loc).unwrap();
        if next.origin() != url.origin() {
            return next.to_string();
        }
        resp = client.get(next.clone()).send().await.unwrap();
    }
    panic!("the provider did not send the browser back");
}

/// Follows `authorize_url` to the provider's login page and cancels there (its abort
/// link); returns the callback URL the provider sends the browser to (not visited).
pub async fn cancel(authorize_url: &str, callback_prefix: &str) -> String {
    let client = op_browser();
    let mut url = url::Url::parse(authorize_url).unwrap();
    for _ in 0..10 {
        let resp = client.get(url.clone()).send().await.unwrap();
        if resp.status().is_redirection() {
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            if loc.starts_with(callback_prefix) {
                return loc;
            }
            url = url.join(&loc).unwrap();
            continue;
        }
        let html = resp.text().await.unwrap();
        let at = html
            .find("/abort\"")
            .expect("the login page has an abort link");
        let start = html[..at].rfind("href=\"").expect("an href") + 6;
        url = url.join(&html[start..at + 6]).unwrap();
    }
    panic!("no redirect to {callback_prefix}");
}
