//! Several replicas behind one public URL, sharing `[redis]` (a real redis-server on
//! loopback): what one replica learned holds on the others.

use reqwest::StatusCode;

use crate::common::gw::*;
use loopgate::server::GatewayHandle;

const SESSION: &str = "loopgate_session";
use crate::common::redis::RedisServer;

/// A second replica of `rig`'s gateway: the same config and public URL, its own ports.
async fn replica_of(rig: &Rig) -> (GatewayHandle, u16) {
    let mut s = Setup::new(&rig.setup.issuer, rig.setup.app);
    s.public_url = rig.setup.public_url.clone();
    s.secrets = rig.setup.secrets.clone();
    s.extra = rig.setup.extra.clone();
    let port = s.port;
    (s.start().await, port)
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
    let path = callback
        .strip_prefix(&rig.setup.public_url)
        .unwrap_or(&callback);
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

/// 50 requests of one session at its token's expiry, alternating between `replicas`
/// gateways sharing Redis: every one served with the same new token, one grant.
async fn storm_across(replicas: usize) {
    let redis = RedisServer::start().await;
    let rig = rig_with(
        |e| e.access_token_ttl = std::time::Duration::from_secs(120),
        |s| s.extra = redis.toml("lg-storm:"),
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
            (status, echoed(&body, "authorization").map(str::to_string))
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(res) = tasks.join_next().await {
        let (status, bearer) = res.unwrap();
        assert_eq!(status, StatusCode::OK);
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
    storm_across(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_over_three_replicas_spends_the_token_once() {
    storm_across(3).await;
}
