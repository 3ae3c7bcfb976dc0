//! The benchmark stack (used by `bench/run.sh`), in one process on loopback: emulators
//! and gateways (and a fast upstream of its own unless `--upstream ADDR` names one) — the
//! main gateway (`public`, `app`, `api`), the same with the Redis store (`--redis URL`),
//! one whose school issues large tokens (a session of three cookie chunks), and three
//! whose `public` route sits among 1, 100 and 1 000 routes. It logs in, mints a Bearer
//! token, writes what the load generator needs to `--env FILE` as shell variables, then
//! serves until killed.
//!
//! `POST http://$CONTROL/fill?n=100000` makes it send n requests with n distinct valid
//! Bearer tokens through the gateway's `api` route (filling the validation cache) and
//! answers with the process RSS before and after.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{any, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use loopgate::emulator::{ClientSpec, Emulator, EmulatorConfig};
use loopgate::oauth::pkce::Verifier;
use loopgate::server::GatewayHandle;

#[path = "shared/rss.rs"]
mod rss;
use rss::rss_kib;

/// The allocator the `loopgate` binary uses (src/main.rs), so the bench measures it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const JWT_SECRET: &str = "bench-jwt-secret-bench-jwt-secret";

/// Padding of the large school's access tokens: its sealed session takes three cookies
/// of `session::cookies::CHUNK` (3 800) characters.
const BIG_TOKEN_PADDING: usize = 4600;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

struct Ctl {
    gateway: String,
    issuer: String,
}

#[derive(Deserialize)]
struct Fill {
    n: usize,
}

/// Sends `n` requests with distinct valid tokens (signed with the school's HS256 secret).
async fn fill(State(ctl): State<Arc<Ctl>>, Query(q): Query<Fill>) -> Json<serde_json::Value> {
    let before = rss_kib();
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 7200;
    let mut tasks = tokio::task::JoinSet::new();
    let per = q.n.div_ceil(32);
    for w in 0..32 {
        let client = client.clone();
        let ctl = ctl.clone();
        tasks.spawn(async move {
            let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
            let mut ok = 0usize;
            for i in (w * per)..((w + 1) * per) {
                let claims = serde_json::json!({
                    "iss": ctl.issuer, "sub": format!("user-{i}"), "scope": "read courses:read",
                    "school_id": 4242, "client_id": "bench", "iat": exp - 7200, "exp": exp, "jti": format!("j{i}"),
                });
                let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
                let r = client.get(format!("{}/api/fill", ctl.gateway)).bearer_auth(token).send().await;
                if r.map(|r| r.status().is_success()).unwrap_or(false) {
                    ok += 1;
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += r.unwrap();
    }
    let after = rss_kib();
    Json(serde_json::json!({
        "requests": q.n, "ok": ok, "seconds": started.elapsed().as_secs_f64(),
        "rss_before_kib": before, "rss_after_kib": after,
    }))
}

/// Logs in at the gateway on `public_url` (the emulator auto-approves) and returns the
/// session cookie as a `Cookie` header value (`name=value`, or every chunk
/// `name_0=…; name_1=…` of a large session) and the number of cookies it took.
async fn log_in(http: &reqwest::Client, public_url: &str) -> (String, usize) {
    let r = http
        .get(format!("{public_url}/app/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let login_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = http
        .get(r.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    let cb = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let r = http
        .get(format!("{public_url}{}?{}", cb.path(), cb.query().unwrap()))
        .header("cookie", login_cookie)
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|c| c.starts_with("loopgate_session") && !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect();
    assert!(!cookies.is_empty(), "no session cookie from {public_url}");
    (cookies.join("; "), cookies.len())
}

/// `[[routes]]` tables that only take up room: `n` public routes under distinct
/// two-segment prefixes, none of them covering `/public`.
fn filler_routes(n: usize, upstream: SocketAddr) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[routes]]\nname = \"filler-{i}\"\npath = \"/svc-{i}/v{}\"\nupstream = \"http://{upstream}\"\nauth = \"public\"\n",
                i % 3
            )
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let env_file: PathBuf = arg("--env")
        .map(PathBuf::from)
        .expect("usage: bench_stack --env FILE [--redis URL] [--upstream ADDR] [--threads N]");
    let threads: usize = arg("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    // A second gateway, the same but keeping sessions in this Redis.
    let redis_url = arg("--redis");
    let gw_addr = free_addr();
    let public_url = format!("http://{gw_addr}");
    let redis_gw_addr = free_addr();
    let redis_public_url = format!("http://{redis_gw_addr}");
    let big_gw_addr = free_addr();
    let big_public_url = format!("http://{big_gw_addr}");
    let em = Emulator::start(EmulatorConfig {
        jwt_secret: Some(JWT_SECRET.into()),
        auto_approve: true,
        clients: vec![
            ClientSpec {
                id: "bench".into(),
                secret: None,
                redirect_uri: format!("{public_url}/oauth2/callback"),
            },
            ClientSpec {
                id: "bench-redis".into(),
                secret: None,
                redirect_uri: format!("{redis_public_url}/oauth2/callback"),
            },
        ],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    // A school whose access tokens are large (many groups, say): its session needs a
    // cookie of three chunks.
    let big_em = Emulator::start(EmulatorConfig {
        jwt_secret: Some(JWT_SECRET.into()),
        auto_approve: true,
        clients: vec![ClientSpec {
            id: "bench-big".into(),
            secret: None,
            redirect_uri: format!("{big_public_url}/oauth2/callback"),
        }],
        access_token_padding: BIG_TOKEN_PADDING,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let upstream = match arg("--upstream") {
        Some(a) => a.parse().expect("--upstream IP:PORT"),
        None => serve(Router::new().fallback(any(|| async { "ok\n" }))).await,
    };
    let secret = STANDARD.encode(loopgate::random::bytes::<32>());
    let toml = |gw_addr: std::net::SocketAddr,
                public_url: &str,
                issuer: &str,
                client: &str,
                extra: &str,
                routes: &str| {
        format!(
            r#"
[server]
listen = "{gw_addr}"
public_url = "{public_url}"
threads = {threads}
admin_listen = "127.0.0.1:0"
# bench/run.sh holds IDLE (10 000) idle connections open at once.
max_connections = 20000
[loopwise]
issuer = "{issuer}"
client_id = "{client}"
jwt_secret = "{JWT_SECRET}"
scopes = ["read", "courses:read"]
[session]
secrets = ["{secret}"]
{extra}
[cache]
ttl = "1h"
max_entries = 200000
{routes}
[[routes]]
name = "public"
path = "/public"
upstream = "http://{upstream}"
auth = "public"
"#,
        )
    };
    let app_and_api = format!(
        r#"
[[routes]]
name = "app"
path = "/app"
upstream = "http://{upstream}"
auth = "login"
[[routes]]
name = "api"
path = "/api"
upstream = "http://{upstream}"
auth = "api"
"#
    );
    let start = |toml: String| async move {
        let cfg = loopgate::config::parse(&toml, std::path::Path::new("."), &|_| None)
            .expect("bench config");
        GatewayHandle::start(cfg).await.expect("gateway")
    };
    let gw = start(toml(
        gw_addr,
        &public_url,
        em.url(),
        "bench",
        "",
        &app_and_api,
    ))
    .await;
    let redis_gw = match &redis_url {
        Some(url) => Some(
            start(toml(
                redis_gw_addr,
                &redis_public_url,
                em.url(),
                "bench-redis",
                &format!("store = \"redis\"\n[redis]\nurl = \"{url}\"\nkey_prefix = \"bench:\""),
                &app_and_api,
            ))
            .await,
        ),
        None => None,
    };
    let big_gw = start(toml(
        big_gw_addr,
        &big_public_url,
        big_em.url(),
        "bench-big",
        "",
        &app_and_api,
    ))
    .await;
    // Growth: the same `public` route among 1, 100 and 1 000 routes in all.
    let mut growth = Vec::new();
    for n in [1usize, 100, 1000] {
        let addr = free_addr();
        let url = format!("http://{addr}");
        let handle = start(toml(
            addr,
            &url,
            em.url(),
            "bench",
            "",
            &filler_routes(n - 1, upstream),
        ))
        .await;
        growth.push((n, url, handle));
    }

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (session_cookie, _) = log_in(&http, &public_url).await;
    let redis_session_cookie = match &redis_gw {
        Some(_) => log_in(&http, &redis_public_url).await.0,
        None => String::new(),
    };
    let (big_session_cookie, big_chunks) = log_in(&http, &big_public_url).await;
    assert_eq!(
        big_chunks, 3,
        "BIG_TOKEN_PADDING should make a session of three cookie chunks"
    );
    // A Bearer token from Loopwise (the emulator), as an API client would hold.
    let v = Verifier::generate();
    let redirect = format!("{public_url}/oauth2/callback");
    let authz = format!(
        "{}/oauth/authorize?response_type=code&client_id=bench&redirect_uri={}&scope=read&code_challenge={}&code_challenge_method=S256",
        em.url(),
        form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>(),
        v.challenge()
    );
    let r = http.get(authz).send().await.unwrap();
    let code = url::Url::parse(r.headers()["location"].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let t: serde_json::Value = http
        .post(format!("{}/api/oauth/token", em.url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", "bench"),
            ("code_verifier", v.secret()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["access_token"].as_str().unwrap().to_string();

    let ctl = serve(
        Router::new()
            .route("/fill", post(fill))
            .with_state(Arc::new(Ctl {
                gateway: public_url.clone(),
                issuer: em.url().to_string(),
            })),
    )
    .await;
    std::fs::write(
        &env_file,
        format!(
            "UPSTREAM=http://{upstream}\nGATEWAY={public_url}\nGATEWAY_REDIS={redis_public_url}\nGATEWAY_BIG={big_public_url}\n{}CONTROL=http://{ctl}\nSESSION_COOKIE='{session_cookie}'\nREDIS_SESSION_COOKIE='{redis_session_cookie}'\nBIG_SESSION_COOKIE='{big_session_cookie}'\nBEARER='{token}'\nSTACK_PID={}\n",
            growth
                .iter()
                .map(|(n, url, _)| format!("GATEWAY_ROUTES_{n}={url}\n"))
                .collect::<String>(),
            std::process::id()
        ),
    )
    .unwrap();
    eprintln!("bench stack ready: gateway {public_url}, upstream {upstream}");
    tokio::signal::ctrl_c().await.ok();
    tokio::time::sleep(Duration::from_millis(10)).await;
    gw.shutdown().await;
    big_gw.shutdown().await;
    for (_, _, g) in growth {
        g.shutdown().await;
    }
    if let Some(g) = redis_gw {
        g.shutdown().await;
    }
}
