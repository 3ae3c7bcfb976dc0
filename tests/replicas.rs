//! Several replicas behind one public URL, sharing `[redis]` (a real redis-server on
//! loopback): what one replica learned holds on the others.

use reqwest::StatusCode;

use crate::common::gw::*;
use loopgate::server::GatewayHandle;

const SESSION: &str = "loopgate_session";
use crate::common::redis::RedisServer;

/// The path and query of a callback URL (on the shared public URL), to send to any
/// replica.
fn callback_path<'a>(rig: &Rig, callback: &'a str) -> &'a str {
    callback
        .strip_prefix(&rig.setup.public_url)
        .unwrap_or(callback)
}

/// `user` signs out on `rig`'s replica, as a browser does (same-origin POST).
async fn sign_out(rig: &Rig, user: &mut Browser) {
    let out = user
        .request(
            reqwest::Method::POST,
            "/oauth2/sign_out",
            &[
                ("origin", rig.setup.public_url.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
}

/// The setup of another replica of `rig`'s gateway: the same config and public URL,
/// its own ports.
fn replica_setup(rig: &Rig) -> Setup {
    let mut s = Setup::new(&rig.setup.issuer, rig.setup.app);
    s.public_url = rig.setup.public_url.clone();
    s.secrets = rig.setup.secrets.clone();
    s.extra = rig.setup.extra.clone();
    s.server_extra = rig.setup.server_extra.clone();
    s.loopwise_extra = rig.setup.loopwise_extra.clone();
    s.session_extra = rig.setup.session_extra.clone();
    s
}

/// A second replica of `rig`'s gateway, started in this process.
async fn replica_of(rig: &Rig) -> (GatewayHandle, u16) {
    let s = replica_setup(rig);
    let port = s.port;
    (s.start().await, port)
}

/// `s` shares `redis` (keys under `prefix`) and keeps its sessions there.
fn with_redis_store(s: &mut Setup, redis: &RedisServer, prefix: &str) {
    s.extra = redis.toml(prefix);
    s.session_extra = "store = \"redis\"".into();
}

/// A copy of a session cookie sent to the replica on `port`: the status it gets, and
/// the Bearer that reached the upstream.
async fn on(port: u16, cookie: &str, path: &str) -> (StatusCode, Option<String>) {
    let r = crate::common::http()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Option<serde_json::Value> = r.json().await.ok();
    let bearer = body
        .as_ref()
        .and_then(|b| echoed(b, "authorization"))
        .map(str::to_string);
    (status, bearer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_replayed_on_another_replica_is_refused_without_a_second_exchange() {
    let redis = RedisServer::start().await;
    let rig = rig_with(|_| {}, |s| s.extra = redis.toml("lg-replay:")).await;
    let (_b, b_port) = replica_of(&rig).await;

    let mut browser = Browser::new(&rig.url(""));
    let start = browser.navigate("/").await;
    let callback = browser
        .through_loopwise(&start.location(), rig.em.url(), "ada")
        .await;
    let copied_jar = browser.jar.clone();
    let ok = browser.navigate(&callback).await;
    assert_eq!(
        ok.status,
        StatusCode::FOUND,
        "replica A completes the login"
    );

    // The same callback (and a copy of the login cookie) sent to replica B.
    let path = callback_path(&rig, &callback);
    assert!(path.starts_with("/oauth2/callback?"), "{path}");
    let mut replay = Browser::new(&format!("http://127.0.0.1:{b_port}"));
    replay.jar = copied_jar;
    let r = replay.navigate(path).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("already completed"), "{}", r.body);
    assert!(replay.jar.get(SESSION).is_none(), "no session on B");
    let stats = rig.em.stats();
    assert_eq!(stats.grant("authorization_code", "ok"), 1);
    assert_eq!(
        stats
            .grants
            .get("authorization_code")
            .map(|m| m.values().sum::<u64>()),
        Some(1),
        "no second code exchange: {stats:?}"
    );
    // The used state is in Redis under the configured prefix, and only a hash of it.
    let keys = redis.command(&["KEYS", "lg-replay:login:*"]).await.unwrap();
    assert_eq!(keys, "*1", "one used login state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_redis_when_it_is_down() {
    let redis = RedisServer::start().await;
    let rig = rig_with(|_| {}, |s| s.extra = redis.toml("lg-ready:")).await;
    let admin = format!("http://127.0.0.1:{}/readyz", rig.setup.admin_port);
    let r = crate::common::http().get(&admin).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    drop(redis);
    let r = crate::common::http().get(&admin).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("login replay guard (redis): unreachable"),
        "{body}"
    );
}

/// What the replicas share: one server or a Cluster of three masters.
enum Shared {
    Server,
    Cluster,
}

/// 50 requests of one session at its token's expiry, alternating between `replicas`
/// gateways sharing Redis: every one served with the same new token, one grant.
async fn storm_across(replicas: usize, store: &str, shared: Shared) {
    storm_across_with(replicas, store, shared, std::time::Duration::ZERO).await
}

/// The same, with Loopwise taking `token_delay` to answer the refresh.
async fn storm_across_with(
    replicas: usize,
    store: &str,
    shared: Shared,
    token_delay: std::time::Duration,
) {
    let (_server, _cluster, toml) = match shared {
        Shared::Server => {
            let r = RedisServer::start().await;
            let t = r.toml("lg-storm:");
            (Some(r), None, t)
        }
        Shared::Cluster => {
            let c = crate::common::redis::cluster().await;
            let t = crate::common::redis::cluster_toml(&c, "lg-storm:");
            (None, Some(c), t)
        }
    };
    let rig = rig_with(
        |e| e.access_token_ttl = std::time::Duration::from_secs(120),
        |s| {
            s.extra = toml.clone();
            s.session_extra = format!("store = \"{store}\"");
        },
    )
    .await;
    let mut others = Vec::new();
    for _ in 1..replicas {
        others.push(replica_of(&rig).await);
    }
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    let cookie = b.jar.header_for("/");
    // Fully expired by every replica's clock.
    rig.gw.gateway().shared.clock.advance(120);
    for (gw, _) in &others {
        gw.gateway().shared.clock.advance(120);
    }
    let ports: Vec<u16> = std::iter::once(rig.setup.port)
        .chain(others.iter().map(|(_, p)| *p))
        .collect();
    rig.em.set_token_delay(token_delay);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = format!("http://127.0.0.1:{}/xhr/{i}", ports[i % ports.len()]);
        let cookie = cookie.clone();
        tasks.spawn(async move {
            let r = crate::common::http()
                .get(url)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap();
            let bearer = echoed(&body, "authorization").map(str::to_string);
            (status, bearer, body)
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(res) = tasks.join_next().await {
        let (status, bearer, body) = res.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens.insert(bearer.expect("a Bearer upstream"));
    }
    assert_eq!(
        tokens.len(),
        1,
        "all 50 went upstream with the same new token"
    );
    let stats = rig.em.stats();
    assert_eq!(
        stats.grant("refresh_token", "ok"),
        1,
        "{replicas} replicas: one grant"
    );
    assert_eq!(stats.grant("refresh_token", "invalid_grant"), 0);
    assert_eq!(stats.event("family_revoked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_over_two_replicas_spends_the_token_once() {
    storm_across(2, "cookie", Shared::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_over_two_replicas_with_the_redis_store_spends_the_token_once() {
    storm_across(2, "redis", Shared::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_over_three_replicas_spends_the_token_once() {
    storm_across(3, "cookie", Shared::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_over_three_replicas_with_the_redis_store_spends_the_token_once() {
    storm_across(3, "redis", Shared::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_with_loopwise_slower_than_the_lease_spends_the_token_once() {
    // 2.5 s: longer than the 2 s lease (the leader's renewals keep the other replica
    // waiting), shorter than the tests' loopwise.timeout (3 s).
    storm_across_with(
        2,
        "redis",
        Shared::Server,
        std::time::Duration::from_millis(2500),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_over_two_replicas_on_a_redis_cluster_spends_the_token_once() {
    storm_across(2, "redis", Shared::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_test_ca_and_an_acl_user() {
    let pki = test_pki();
    let tls = RedisServer::start_tls(&pki, "gateway", "s3cret-pw").await;
    let table = |password: &str| {
        format!(
            "\n[redis]\nurl = \"rediss://gateway@127.0.0.1:{}/0\"\npassword = \"{password}\"\nca_file = \"{}\"\nkey_prefix = \"lg-tls:\"\n",
            tls.server.port,
            tls.ca_file.display()
        )
    };
    let rig = rig_with(|_| {}, |s| s.extra = table("s3cret-pw")).await;
    let ready = format!("http://127.0.0.1:{}/readyz", rig.setup.admin_port);
    let r = crate::common::http().get(&ready).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // A login goes through the TLS connection (its state is marked used there).
    let mut b = Browser::new(&rig.url(""));
    let done = b.login("/", rig.em.url(), "ada").await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(b.jar.get(SESSION).is_some());

    // The wrong password: not ready, and named.
    let wrong = rig_with(|_| {}, |s| s.extra = table("not-it")).await;
    let ready = format!("http://127.0.0.1:{}/readyz", wrong.setup.admin_port);
    let r = crate::common::http().get(&ready).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(body.contains("(redis): unreachable"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_not_a_logout_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start().await;
    let rig = rig_with(|_| {}, |s| s.extra = redis.toml("lg-outage:")).await;
    let (b_gw, b_port) = replica_of(&rig).await;
    let mut user = Browser::new(&rig.url(""));
    user.login("/", rig.em.url(), "ada").await;
    let cookie = user.jar.header_for("/");
    let get = |port: u16, i: usize| {
        let cookie = cookie.clone();
        async move {
            crate::common::http()
                .get(format!("http://127.0.0.1:{port}/steady/{i}"))
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let ports = [rig.setup.port, b_port];
    redis.stop();
    // A steady loop over both replicas while Redis is gone: nothing fails.
    let mut failed = 0;
    for i in 0..40 {
        if get(ports[i % 2], i).await != StatusCode::OK {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "sessions with valid tokens keep working");
    // A new login cannot be made single-use now: a clear 503, not a 500.
    let mut newcomer = Browser::new(&format!("http://127.0.0.1:{b_port}"));
    let start = newcomer.navigate("/").await;
    let callback = newcomer
        .through_loopwise(&start.location(), rig.em.url(), "grace")
        .await;
    let path = callback_path(&rig, &callback);
    let r = newcomer.navigate(path).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let ready = format!("http://127.0.0.1:{}/readyz", rig.setup.admin_port);
    let down = crate::common::http().get(&ready).send().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Redis back (empty): both replicas use it again by themselves, and say so on
    // /readyz (what a load balancer waits for).
    redis.restart().await;
    let b_ready = format!(
        "http://{}/readyz",
        b_gw.gateway().admin_addr().expect("admin listener")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for probe in [&ready, &b_ready] {
        loop {
            let r = crate::common::http().get(probe).send().await.unwrap();
            if r.status() == StatusCode::OK {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no recovery");
        }
    }
    let mut again = Browser::new(&format!("http://127.0.0.1:{b_port}"));
    let done = again.login("/", rig.em.url(), "grace").await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert!(again.jar.get(SESSION).is_some());
    for i in 0..4 {
        assert_eq!(get(ports[i % 2], i).await, StatusCode::OK);
    }
    drop(b_gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_its_timeout() {
    let redis = RedisServer::start().await;
    let rig = rig_with(|_| {}, |s| s.extra = redis.toml("lg-hung:")).await;
    let mut user = Browser::new(&rig.url(""));
    user.login("/", rig.em.url(), "ada").await;
    redis.signal("STOP");
    let steady = std::time::Instant::now();
    for i in 0..10 {
        let r = user.xhr(&format!("/hung/{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "sessions keep working");
    }
    // At most one of them waited for Redis's timeout (then Redis is skipped a while).
    assert!(
        steady.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        steady.elapsed()
    );
    let mut newcomer = Browser::new(&rig.url(""));
    let start = newcomer.navigate("/").await;
    let callback = newcomer
        .through_loopwise(&start.location(), rig.em.url(), "grace")
        .await;
    let path = callback_path(&rig, &callback);
    let started = std::time::Instant::now();
    let r = newcomer.navigate(path).await;
    let took = started.elapsed();
    redis.signal("CONT");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    // redis.timeout is 500 ms by default; allow for a slow machine, not for a hang.
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_on_one_replica_ends_the_session_on_the_other_within_a_second() {
    let redis = RedisServer::start().await;
    let rig = rig_with(|_| {}, |s| s.extra = redis.toml("lg-signout:")).await;
    let (_b, b_port) = replica_of(&rig).await;
    let mut user = Browser::new(&rig.url(""));
    user.login("/", rig.em.url(), "ada").await;
    let copy = user.jar.header_for("/");
    assert_eq!(
        on(b_port, &copy, "/before").await.0,
        StatusCode::OK,
        "B serves the session"
    );
    sign_out(&rig, &mut user).await;
    let signed_out = std::time::Instant::now();
    let mut n = 0;
    while on(b_port, &copy, &format!("/after/{n}")).await.0 != StatusCode::UNAUTHORIZED {
        assert!(
            signed_out.elapsed() < std::time::Duration::from_secs(1),
            "the copied cookie still works on B after {:?}",
            signed_out.elapsed()
        );
        n += 1;
    }
    println!(
        "sign-out seen on replica B after {:?}",
        signed_out.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_tokens_out_of_the_cookie_and_sign_out_ends_every_copy() {
    let redis = RedisServer::start().await;
    let rig = rig_with(|_| {}, |s| with_redis_store(s, &redis, "lg-store:")).await;
    let (_b, b_port) = replica_of(&rig).await;
    let mut user = Browser::new(&rig.url(""));
    user.login("/", rig.em.url(), "ada").await;
    let copy = user.jar.header_for("/");
    assert!(
        copy.len() < 400,
        "only an id and a key: {} bytes",
        copy.len()
    );
    let (status, bearer) = on(b_port, &copy, "/before").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "replica B opens the session from Redis"
    );
    let bearer = bearer.expect("a Bearer upstream");
    let token = bearer.trim_start_matches("Bearer ");
    assert!(!copy.contains(token), "the cookie carries no token");
    let dump = redis
        .command(&["KEYS", "lg-store:session:*"])
        .await
        .unwrap();
    assert_eq!(dump, "*1", "one session in Redis");
    // What one signed-in browser costs in Redis (README, "Running several replicas").
    let mut bytes = 0;
    for pattern in ["lg-store:session:*", "lg-store:user:*"] {
        let keys = redis.keys(pattern).await;
        assert_eq!(keys.len(), 1, "{pattern}");
        let usage = redis.command(&["MEMORY", "USAGE", &keys[0]]).await.unwrap();
        bytes += usage.trim_start_matches(':').parse::<u64>().unwrap();
    }
    eprintln!("one session in Redis: {bytes} bytes (session + index entry)");

    sign_out(&rig, &mut user).await;
    assert_eq!(
        redis
            .command(&["KEYS", "lg-store:session:*"])
            .await
            .unwrap(),
        "*0"
    );
    let signed_out = std::time::Instant::now();
    let mut n = 0;
    while on(b_port, &copy, &format!("/after/{n}")).await.0 != StatusCode::UNAUTHORIZED {
        assert!(
            signed_out.elapsed() < std::time::Duration::from_secs(1),
            "the copied cookie still works on B after {:?}",
            signed_out.elapsed()
        );
        n += 1;
    }
    eprintln!(
        "redis store: signed out on A, dead on B after {:?} ({n} requests)",
        signed_out.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_redis_store_down_known_sessions_work_and_others_get_a_clear_503() {
    let mut redis = RedisServer::start().await;
    let rig = rig_with(|_| {}, |s| with_redis_store(s, &redis, "lg-storedown:")).await;
    let (_b, b_port) = replica_of(&rig).await;
    let mut user = Browser::new(&rig.url(""));
    user.login("/", rig.em.url(), "ada").await;
    assert_eq!(user.xhr("/seen").await.status, StatusCode::OK);
    let cookie = user.jar.header_for("/");
    redis.stop();
    // Replica A opened the session before: it keeps serving it.
    for i in 0..5 {
        assert_eq!(
            user.xhr(&format!("/still/{i}")).await.status,
            StatusCode::OK
        );
    }
    // Replica B never saw it: a clear 503 (page or JSON), the cookie kept, no login loop.
    let nav = crate::common::http()
        .get(format!("http://127.0.0.1:{b_port}/page"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        nav.headers().get("location").is_none(),
        "not sent to log in"
    );
    assert!(
        !nav.headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Max-Age=0")),
        "the session cookie is not cleared"
    );
    assert!(nav
        .text()
        .await
        .unwrap()
        .contains("session store is unavailable"));
    let xhr = crate::common::http()
        .get(format!("http://127.0.0.1:{b_port}/data"))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(xhr.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = xhr.json().await.unwrap();
    assert_eq!(body["error"], "session_store_unavailable");
}

const ADMIN_TOKEN: &str = "operator-token-0123456789";

/// `method` on `rig`'s admin listener with the operator's token (or `bearer`).
async fn admin(
    rig: &Rig,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let mut req = crate::common::http().request(
        method,
        format!("http://127.0.0.1:{}{path}", rig.setup.admin_port),
    );
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, r.text().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_ends_every_session_of_a_user_on_every_replica() {
    let redis = RedisServer::start().await;
    let rig = rig_with(
        |_| {},
        |s| {
            with_redis_store(s, &redis, "lg-revoke:");
            s.server_extra = format!("admin_token = \"{ADMIN_TOKEN}\"");
        },
    )
    .await;
    let (_b, b_port) = replica_of(&rig).await;
    let mut cookies = Vec::new();
    for user in ["ada", "ada", "grace"] {
        let mut b = Browser::new(&rig.url(""));
        b.login("/", rig.em.url(), user).await;
        cookies.push(b.jar.header_for("/"));
    }
    let mut tokens = Vec::new();
    for c in &cookies {
        let (status, bearer) = on(b_port, c, "/before").await;
        assert_eq!(status, StatusCode::OK);
        tokens.push(bearer.unwrap().trim_start_matches("Bearer ").to_string());
    }

    // The list: two sessions, where and when, no token.
    let (status, body, _) = admin(
        &rig,
        reqwest::Method::GET,
        "/sessions?sub=ada",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{body}");
    for s in sessions {
        assert_eq!(s["client_ip"], "127.0.0.1", "{body}");
        assert!(s["created_at"].as_u64().unwrap() > 0 && s["last_seen"].as_u64().is_some());
        assert!(s["expires_at"].as_u64().unwrap() > s["created_at"].as_u64().unwrap());
    }
    for t in &tokens {
        assert!(!body.contains(t.as_str()), "a token in the list: {body}");
    }
    // Only with the token, and each endpoint with its method.
    let (status, _, headers) = admin(&rig, reqwest::Method::GET, "/sessions?sub=ada", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, _) = admin(
        &rig,
        reqwest::Method::POST,
        "/sessions/revoke?sub=ada",
        Some("operator-token-0123456788"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a wrong token ends nothing"
    );
    let (status, _, _) = admin(
        &rig,
        reqwest::Method::GET,
        "/sessions/revoke?sub=ada",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body, _) = admin(&rig, reqwest::Method::GET, "/sessions", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("?sub="), "{body}");
    for c in &cookies {
        assert_eq!(
            on(b_port, c, "/still").await.0,
            StatusCode::OK,
            "nothing ended yet"
        );
    }

    // Revoked through the CLI, which asks replica A's admin listener.
    let config = std::env::temp_dir().join(format!("loopgate-revoke-{}.toml", rig.setup.port));
    std::fs::write(&config, rig.setup.toml()).unwrap();
    let cli = |action: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_loopgate"))
            .args(["sessions", action, "--sub", "ada", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let revoked = cli("revoke");
    let at = std::time::Instant::now();
    assert_eq!(revoked["ended"], 2, "{revoked}");
    assert_eq!(revoked["refresh_tokens_revoked"], 2, "{revoked}");
    // Dead on replica B within 1 s, both copies; grace keeps hers.
    for (i, c) in cookies[..2].iter().enumerate() {
        let mut n = 0;
        while on(b_port, c, &format!("/after/{i}/{n}")).await.0 != StatusCode::UNAUTHORIZED {
            assert!(
                at.elapsed() < std::time::Duration::from_secs(1),
                "ada's session {i} still works on B after {:?}",
                at.elapsed()
            );
            n += 1;
        }
    }
    eprintln!(
        "operator revoke: dead on replica B after {:?}",
        at.elapsed()
    );
    assert_eq!(on(b_port, &cookies[2], "/grace").await.0, StatusCode::OK);
    let stats = rig.em.stats();
    assert_eq!(stats.endpoint("revoke"), 2);
    assert_eq!(
        stats.event("family_revoked"),
        2,
        "both grants revoked at Loopwise"
    );
    assert_eq!(cli("list")["sessions"], serde_json::json!([]));
    let (_, metrics, _) = admin(&rig, reqwest::Method::GET, "/metrics", None).await;
    assert!(
        metrics.contains("loopgate_sessions_revoked_total 2"),
        "{metrics}"
    );
    let _ = std::fs::remove_file(&config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_endpoints_say_what_they_need() {
    let rig = rig_with(
        |_| {},
        |s| s.server_extra = format!("admin_token = \"{ADMIN_TOKEN}\""),
    )
    .await;
    let (status, body, _) = admin(
        &rig,
        reqwest::Method::GET,
        "/sessions?sub=ada",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body.contains(r#"needs session.store = \"redis\""#),
        "{body}"
    );
    let (status, body, _) = admin(
        &rig,
        reqwest::Method::POST,
        "/sessions/revoke?sub=ada",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let plain = rig_with(|_| {}, |_| {}).await;
    let (status, body, _) = admin(
        &plain,
        reqwest::Method::GET,
        "/sessions?sub=ada",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("server.admin_token"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_holding_the_lease_leaves_no_session_stuck() {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    let redis = RedisServer::start().await;
    // Tokens living 2 s are due for refresh 1 s after they arrive, by any clock, so that
    // the replica in its own process (its own, real clock) refreshes too.
    let rig = rig_with(
        |e| e.access_token_ttl = Duration::from_secs(2),
        |s| s.extra = redis.toml("lg-kill:"),
    )
    .await;
    // Replica A: `loopgate run` in a process of its own, the same config, its own ports.
    let dir = std::env::temp_dir().join(format!("loopgate-kill-{}", rig.setup.port));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = replica_setup(&rig);
    a.server_extra = format!(
        "upgrade_sock = \"{}\"\npid_file = \"{}\"\n",
        dir.join("upgrade.sock").display(),
        dir.join("loopgate.pid").display()
    );
    let config = dir.join("a.toml");
    std::fs::write(&config, a.toml()).unwrap();
    let log = std::fs::File::create(dir.join("a.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(dir.join("a.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = crate::common::http()
            .get(format!("http://127.0.0.1:{}/readyz", a.admin_port))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica A never ready:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut user = Browser::new(&rig.url(""));
    user.login("/", rig.em.url(), "ada").await;
    let cookie = user.jar.header_for("/");
    let (status, first) = on(rig.setup.port, &cookie, "/first").await;
    assert_eq!(status, StatusCode::OK);
    // Due for refresh once the whole second after it arrived has passed.
    let secs = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let due = secs() + 2;
    while secs() < due {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A takes the lease and calls a Loopwise that does not answer; then A is killed.
    rig.em.set_token_delay(Duration::from_secs(60));
    let calls = rig.em.stats().endpoint("token");
    let a_port = a.port;
    let on_a = tokio::spawn({
        let cookie = cookie.clone();
        async move { on(a_port, &cookie, "/on-a").await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.em.stats().endpoint("token") == calls {
        assert!(
            Instant::now() < deadline,
            "A never called Loopwise:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    rig.em.set_token_delay(Duration::ZERO);
    on_a.abort();

    // B waits out A's lease (2 s, no longer renewed), then refreshes itself: no 5xx, no
    // second spending of a token whose outcome anyone knows.
    let (status, bearer) = on(rig.setup.port, &cookie, "/on-b").await;
    let took = killed.elapsed();
    eprintln!("replica killed holding the lease: B answered {status} after {took:?}");
    assert_eq!(status, StatusCode::OK, "{}", logs());
    assert_ne!(bearer, first, "a new token");
    assert!(took < Duration::from_secs(3), "recovered after {took:?}");
    let stats = rig.em.stats();
    assert_eq!(stats.grant("refresh_token", "ok"), 1);
    assert_eq!(stats.grant("refresh_token", "invalid_grant"), 0);
    assert_eq!(stats.event("family_revoked"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every key and value the replicas wrote in Redis, as text (hashes field by field).
async fn redis_dump(redis: &RedisServer, prefix: &str) -> String {
    let mut dump = String::new();
    for key in redis.keys(&format!("{prefix}*")).await {
        let kind = redis.command(&["TYPE", &key]).await.unwrap();
        let value = match kind.as_str() {
            "+string" => redis.command_all(&["GET", &key]).await,
            "+hash" => redis.command_all(&["HGETALL", &key]).await,
            other => panic!("{key}: unexpected type {other}"),
        };
        dump.push_str(&format!("{key} = {}\n", value.unwrap()));
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_issued_token_is_in_redis_in_clear_after_a_full_session() {
    let redis = RedisServer::start().await;
    let rig = rig_with(
        |e| e.access_token_ttl = std::time::Duration::from_secs(120),
        |s| with_redis_store(s, &redis, "lg-scan:"),
    )
    .await;
    let (b_gw, b_port) = replica_of(&rig).await;
    let mut ada = Browser::new(&rig.url(""));
    ada.login("/", rig.em.url(), "ada").await;
    let mut grace = Browser::new(&rig.url(""));
    grace.login("/", rig.em.url(), "grace").await;
    let cookie = ada.jar.header_for("/");
    let mut access = std::collections::HashSet::new();
    let (_, bearer) = on(b_port, &cookie, "/before").await;
    access.insert(bearer.unwrap());
    // A refresh raced over both replicas (a lease, a stored outcome), then a sign-out.
    rig.gw.gateway().shared.clock.advance(120);
    b_gw.gateway().shared.clock.advance(120);
    let (a, b) = tokio::join!(
        on(rig.setup.port, &cookie, "/refresh-a"),
        on(b_port, &cookie, "/refresh-b")
    );
    for (status, bearer) in [a, b] {
        assert_eq!(status, StatusCode::OK);
        access.insert(bearer.unwrap());
    }
    assert_eq!(rig.em.stats().grant("refresh_token", "ok"), 1);
    let dump = redis_dump(&redis, "lg-scan:").await;
    assert!(dump.contains("lg-scan:session:"), "{dump}");
    assert!(
        dump.contains("lg-scan:refresh:"),
        "the shared outcome: {dump}"
    );
    assert!(dump.contains("lg-scan:user:"), "{dump}");
    sign_out(&rig, &mut grace).await;
    let dump = format!("{dump}{}", redis_dump(&redis, "lg-scan:").await);

    let refresh = rig.em.issued_refresh_tokens();
    assert!(refresh.len() >= 3, "two logins and a rotation: {refresh:?}");
    let access: Vec<String> = access
        .iter()
        .map(|b| b.trim_start_matches("Bearer ").to_string())
        .collect();
    assert_eq!(access.len(), 2, "before and after the refresh");
    for token in access.iter().chain(&refresh) {
        assert!(!dump.contains(token.as_str()), "{token} in Redis:\n{dump}");
        // Nor a recognisable piece of one (a JWT's payload, say).
        for part in token.split('.').filter(|p| p.len() >= 16) {
            assert!(!dump.contains(part), "a part of {token} in Redis:\n{dump}");
        }
    }
    for user in ["ada", "grace"] {
        assert!(
            !dump.contains(&format!("\"{user}\"")),
            "{user} named in Redis:\n{dump}"
        );
    }
}
