//! The demo's sample upstream: a "legacy app" that knows nothing about OAuth. It shows
//! what the gateway told it (identity headers, the Bearer's scopes), fetches
//! `/loopwise/api/v1/courses` through the gateway from its own JavaScript, and offers a
//! sign-out button.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tokio::sync::oneshot;

use crate::html::escape;

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The `scope` claim of the Bearer JWT the app received (read, not verified: the app
/// trusts its gateway, which is the point).
fn bearer_scopes(h: &HeaderMap) -> Option<String> {
    let token = header_str(h, "authorization").strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["scope"].as_str().map(str::to_string)
}

async fn index(headers: HeaderMap) -> Response {
    let user = header_str(&headers, "x-loopwise-user");
    let name = header_str(&headers, "x-loopwise-name");
    let email = header_str(&headers, "x-loopwise-email");
    let roles = header_str(&headers, "x-loopwise-roles");
    let school = header_str(&headers, "x-loopwise-school");
    let scopes = bearer_scopes(&headers).unwrap_or_else(|| "(no Bearer token)".into());
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sample app — Loopgate demo</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f6f7fb;margin:0;color:#1d2433}}
main{{max-width:40rem;margin:2.5rem auto;background:#fff;padding:2rem;border-radius:12px;box-shadow:0 2px 12px #0001}}
dt{{font-weight:600;margin-top:.6rem}}dd{{margin:0}}code{{background:#eef1f8;padding:0 .25rem;border-radius:4px}}
button{{font:inherit;padding:.5rem 1rem;border-radius:8px;border:1px solid #3451b2;background:#3451b2;color:#fff;cursor:pointer;margin-right:.5rem}}
button.secondary{{background:#fff;color:#3451b2}}pre{{background:#0f172a;color:#e2e8f0;padding:1rem;border-radius:8px;overflow:auto;min-height:2rem}}
</style></head><body><main>
<h1>Hello, <span id="name">{name}</span>!</h1>
<p>This app has no login code at all. Loopgate signed you in with Loopwise and told it who you are:</p>
<dl>
<dt>User (<code>X-Loopwise-User</code>)</dt><dd id="user">{user}</dd>
<dt>Email</dt><dd id="email">{email}</dd>
<dt>Roles</dt><dd id="roles">{roles}</dd>
<dt>School</dt><dd id="school">{school}</dd>
<dt>Scopes of the Bearer token the app received</dt><dd id="scopes">{scopes}</dd>
</dl>
<p><button id="load-courses" type="button">Load my courses</button>
<span class="muted">(fetches <code>/loopwise/api/v1/courses</code> through the gateway: the token never reaches this page)</span></p>
<pre id="courses"></pre>
<form method="post" action="/oauth2/sign_out"><button id="sign-out" class="secondary" type="submit">Sign out</button></form>
<script>
document.getElementById('load-courses').addEventListener('click', async () => {{
  const out = document.getElementById('courses');
  out.textContent = 'loading…';
  try {{
    const r = await fetch('/loopwise/api/v1/courses', {{ headers: {{ 'Accept': 'application/json' }} }});
    const body = await r.json();
    out.textContent = r.ok
      ? body.courses.map(c => c.title + ' (' + c.students + ' students)').join('\n')
      : 'HTTP ' + r.status + ': ' + (body.error_description || body.error);
    out.dataset.status = r.status;
  }} catch (e) {{ out.textContent = 'failed: ' + e; }}
}});
</script>
</main></body></html>
"#,
        name = escape(name),
        user = escape(user),
        email = escape(email),
        roles = escape(roles),
        school = escape(school),
        scopes = escape(&scopes),
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Echoes what the app received, as JSON (handy with curl through the gateway).
async fn whoami(headers: HeaderMap) -> Response {
    let pick = |n: &str| header_str(&headers, n).to_string();
    axum::Json(serde_json::json!({
        "user": pick("x-loopwise-user"),
        "email": pick("x-loopwise-email"),
        "name": pick("x-loopwise-name"),
        "roles": pick("x-loopwise-roles"),
        "school": pick("x-loopwise-school"),
        "bearer_scopes": bearer_scopes(&headers),
        "has_bearer": header_str(&headers, "authorization").starts_with("Bearer "),
    }))
    .into_response()
}

pub struct SampleApp {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl SampleApp {
    pub async fn start(listen: SocketAddr) -> std::io::Result<SampleApp> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/", get(index))
            .route("/whoami", get(whoami));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(SampleApp {
            addr,
            stop: Some(tx),
        })
    }
}

impl Drop for SampleApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
