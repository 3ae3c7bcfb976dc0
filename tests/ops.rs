//! Operations: the admin listener's /metrics, /healthz and /readyz on a live gateway.

use crate::common;

use std::time::Duration;

use crate::common::gw::*;
use crate::common::{http, tokens_for};
use loopgate::emulator::{ClientSpec, Emulator, EmulatorConfig};
use reqwest::StatusCode;

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{line_prefix}` in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_logins_refreshes_and_cache_lookups() {
    let rig = rig_with(|e| e.access_token_ttl = Duration::from_secs(120), |_| {}).await;
    let admin = format!(
        "http://{}",
        rig.gw.gateway().admin_addr().expect("admin listener")
    );
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    for _ in 0..3 {
        assert_eq!(b.xhr("/x").await.status, StatusCode::OK);
    }
    assert_eq!(
        http()
            .get(rig.url("/x"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    rig.gw.gateway().shared.clock.advance(100);
    assert_eq!(b.xhr("/x").await.status, StatusCode::OK); // refreshes
    let t = tokens_for(&http(), rig.em.url(), "read", "grace").await;
    for _ in 0..2 {
        let r = http()
            .get(rig.url("/api/y"))
            .bearer_auth(t["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    let r = http().get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        metric(
            &text,
            "loopgate_requests_total{route=\"app\",status_class=\"2xx\"}"
        ) >= 4.0
    );
    assert_eq!(
        metric(
            &text,
            "loopgate_requests_total{route=\"app\",status_class=\"4xx\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "loopgate_auth_decisions_total{outcome=\"unauthorized\",route=\"app\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &text,
            "loopgate_auth_decisions_total{outcome=\"session\",route=\"app\"}"
        ) >= 4.0
    );
    assert_eq!(
        metric(
            &text,
            "loopgate_logins_total{result=\"ok\",school=\"default\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "loopgate_refresh_total{result=\"ok\",school=\"default\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "loopgate_token_cache_requests_total{result=\"miss\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "loopgate_token_cache_requests_total{result=\"hit\"}"),
        1.0
    );
    assert_eq!(metric(&text, "loopgate_token_cache_entries"), 1.0);
    assert_eq!(
        metric(
            &text,
            "loopgate_loopwise_requests_total{endpoint=\"token\",school=\"default\",status_class=\"2xx\"}"
        ),
        2.0,
        "code + refresh"
    );
    assert!(
        metric(
            &text,
            "loopgate_loopwise_request_duration_seconds_count{endpoint=\"userinfo\",school=\"default\"}"
        ) >= 2.0
    );
    assert!(
        metric(
            &text,
            "loopgate_request_duration_seconds_count{route=\"app\"}"
        ) >= 5.0
    );
    assert!(
        metric(
            &text,
            "loopgate_upstream_duration_seconds_count{route=\"app\"}"
        ) >= 4.0
    );
    assert_eq!(metric(&text, "loopgate_build_info{version=\""), 1.0);
    assert!(text.contains("loopgate_backend_healthy{backend="));
    assert!(
        text.contains("\nloopgate_process_resident_memory_bytes "),
        "process collector"
    );
    // Bounded labels: never a raw path, a user or a token.
    assert!(!text.contains("/x\"") && !text.contains("ada") && !text.contains("eyJ"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_name_what_is_wrong() {
    let dead = free_port();
    let rig = rig_with(|_| {}, |s| {
        s.extra = format!(
            "\n[[routes]]\nname = \"flaky\"\npath = \"/flaky\"\nupstream = \"http://127.0.0.1:{dead}\"\nauth = \"public\"\nhealth_check = {{ path = \"/\", interval = \"200ms\", timeout = \"200ms\", unhealthy_threshold = 1 }}\n"
        )
    })
    .await;
    let admin = format!("http://{}", rig.gw.gateway().admin_addr().unwrap());
    let r = http().get(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The flaky route's only backend is down: not ready, and the body says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = http().get(format!("{admin}/readyz")).send().await.unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body = r.text().await.unwrap();
            assert!(body.contains("route flaky: no healthy backend"), "{body}");
            assert!(!body.contains("route app"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never turned unready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_when_every_route_has_a_backend() {
    let rig = rig().await;
    let admin = format!("http://{}", rig.gw.gateway().admin_addr().unwrap());
    let r = http().get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().starts_with("ready"));
    // `loopgate run` before its signal handlers are installed (a SIGTERM then would kill
    // the process without a drain): not ready.
    let shared = &rig.gw.gateway().shared;
    shared
        .signals_pending
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = http().get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("starting: signal handlers not installed yet"));
    shared
        .signals_pending
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let r = http().get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A restart during a Loopwise outage: the gateway starts anyway, keeps signed-in users
/// whose tokens are valid, says why it is not ready, and catches up when Loopwise returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_during_a_loopwise_outage_and_catches_up() {
    let Rig {
        em,
        echo: _,
        setup,
        gw,
    } = rig().await;
    let mut b = Browser::new(&setup.public_url);
    b.login("/", em.url(), "ada").await;
    assert_eq!(b.xhr("/x").await.status, StatusCode::OK);
    gw.shutdown().await;
    let em_addr = em.addr();
    em.shutdown().await;

    // Loopwise is down while the gateway starts (same config, same session secrets).
    let gw = setup.start().await;
    let admin = format!("http://127.0.0.1:{}", setup.admin_port);
    let r = http().get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(body.contains("loopwise metadata: not loaded"), "{body}");
    assert_eq!(gw.gateway().validation_mode(), "pending");

    // The signed-in user keeps working: the token in the cookie is still valid.
    let r = b.xhr("/x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(echoed(&r.json(), "x-loopwise-user"), Some("ada"));
    // A new visitor cannot sign in yet, and hears why (no 500).
    let mut newcomer = Browser::new(&setup.public_url);
    let r = newcomer.navigate("/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("Loopwise is unreachable"), "{}", r.body);
    let r = http()
        .get(format!("{}/api/y", setup.public_url))
        .bearer_auth("some.jwt-shaped.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Loopwise comes back at the same address: the gateway loads the metadata by itself.
    let em = Emulator::start(EmulatorConfig {
        listen: em_addr,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    em.add_client(&ClientSpec {
        id: common::CLIENT.into(),
        secret: None,
        redirect_uri: setup.callback(),
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let r = http().get(format!("{admin}/readyz")).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never loaded the metadata: {}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.gateway().validation_mode(), "userinfo");
    newcomer.login("/", em.url(), "grace").await;
    let r = newcomer.xhr("/x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(echoed(&r.json(), "x-loopwise-user"), Some("grace"));
}
