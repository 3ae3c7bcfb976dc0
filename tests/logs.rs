//! Logs never carry a secret: a full login + refresh + API + sign-out session is run with
//! JSON logging captured, and every token, cookie, code, state and secret value seen on
//! the wire is searched for in the log. The access lines themselves must be there.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::gw::*;
use crate::common::{http, query_param, tokens_for};
use reqwest::StatusCode;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const JWT_SECRET: &str = "test-jwt-secret-of-reasonable-length";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_leaves_no_secret_in_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(loopgate::logging::filter("debug"))
        .with_writer(move || writer.clone())
        .init();

    let rig = rig_with(
        |e| e.access_token_ttl = Duration::from_secs(120),
        |s| {
            s.loopwise_extra = format!("jwt_secret = \"{JWT_SECRET}\"");
        },
    )
    .await;
    let mut secrets: Vec<String> = vec![JWT_SECRET.into(), SECRET_A.into()];
    let mut b = Browser::new(&rig.url(""));
    let start = b.navigate("/reports?id=7").await;
    let auth = start.location();
    secrets.push(query_param(&auth, "state").unwrap());
    secrets.push(query_param(&auth, "code_challenge").unwrap());
    secrets.extend(b.jar.cookies.iter().map(|c| c.value.clone()));
    let callback = b.through_loopwise(&auth, rig.em.url(), "ada").await;
    secrets.push(query_param(&format!("http://x{callback}"), "code").unwrap());
    assert_eq!(b.navigate(&callback).await.status, StatusCode::FOUND);
    secrets.push(b.jar.get("loopgate_session").unwrap().value.clone());
    let r = b.xhr("/reports?id=7").await;
    secrets.push(
        echoed(&r.json(), "authorization")
            .unwrap()
            .trim_start_matches("Bearer ")
            .into(),
    );
    rig.gw.gateway().shared.clock.advance(100);
    let r = b.xhr("/reports?id=8").await; // refresh
    secrets.push(
        echoed(&r.json(), "authorization")
            .unwrap()
            .trim_start_matches("Bearer ")
            .into(),
    );
    secrets.push(b.jar.get("loopgate_session").unwrap().value.clone());
    let t = tokens_for(&http(), rig.em.url(), "read", "grace").await;
    let api_token = t["access_token"].as_str().unwrap().to_string();
    secrets.push(api_token.clone());
    secrets.push(t["refresh_token"].as_str().unwrap().into());
    let r = http()
        .get(rig.url("/api/x"))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http()
        .get(rig.url("/api/x"))
        .bearer_auth("a-bad-token-value-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    secrets.push("a-bad-token-value-0123456789".into());
    let origin = rig.url("");
    let out = b
        .request(
            reqwest::Method::POST,
            "/oauth2/sign_out",
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let Rig { gw, .. } = rig;
    gw.shutdown().await;

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("\"target\":\"loopgate::access\""),
        "access lines are logged:\n{log}"
    );
    assert!(
        log.contains("\"route\":\"app\"") && log.contains("\"request_id\":"),
        "{log}"
    );
    assert!(log.contains("login completed") && log.contains("\"sub\":\"ada\""));
    for s in secrets.iter().filter(|s| s.len() >= 16) {
        if let Some(line) = log.lines().find(|l| l.contains(s.as_str())) {
            panic!(
                "a secret value ({}…) reached the log in:\n{}",
                &s[..12],
                &line[..line.len().min(400)]
            );
        }
        // Also its first half: a truncated token is still a leak.
        assert!(
            !log.contains(&s[..s.len() / 2]),
            "part of a secret reached the log"
        );
    }
    assert!(!log.contains("id=7"), "queries are not logged");
}
