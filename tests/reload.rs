//! Change without downtime: reload swaps routes atomically under a steady request loop,
//! a bad new config is refused and the old one keeps serving; a real `loopgate run`
//! reloads on SIGHUP and drains on SIGTERM.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::gw::*;
use crate::common::{http, CLIENT};
use loopgate::emulator::{ClientSpec, Emulator};
use reqwest::StatusCode;

/// An upstream whose `/slow/...` answers after one second, reporting when a request starts.
async fn slow_upstream() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(8);
    let app = axum::Router::new().fallback(axum::routing::any(move || {
        let tx = tx.clone();
        async move {
            let _ = tx.send(()).await;
            // The upstream's own work time, so the request is in flight during SIGTERM.
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rx)
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "loopgate-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_routes_under_load_and_refuses_bad_configs() {
    let echo = echo_upstream().await;
    let em = Emulator::start(Default::default()).await.unwrap();
    let mut setup = Setup::new(em.url(), echo.addr);
    em.add_client(&ClientSpec {
        id: CLIENT.into(),
        secret: None,
        redirect_uri: setup.callback(),
    });
    let dir = temp_dir("reload");
    let path = dir.join("loopgate.toml");
    std::fs::write(&path, setup.toml()).unwrap();
    let cfg = loopgate::config::load(&path).unwrap();
    let gw = loopgate::server::GatewayHandle::start_with_file(cfg, Some(path.clone()))
        .await
        .unwrap();
    let base = gw.url();
    let mut b = Browser::new(&base);
    b.login("/", em.url(), "ada").await;
    let cookie = b.jar.header_for("/");

    // A steady loop: public and session requests, counting anything but 200.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed, base, cookie) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            base.clone(),
            cookie.clone(),
        );
        loops.push(tokio::spawn(async move {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                let req = if i % 2 == 0 {
                    client.get(format!("{base}/public/x"))
                } else {
                    client
                        .get(format!("{base}/app"))
                        .header("cookie", &cookie)
                        .header("accept", "application/json")
                };
                match req.send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let wait_for = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            while ok.load(Ordering::Relaxed) < target {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(50).await;
    assert_eq!(
        http()
            .get(format!("{base}/new/x"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED,
        "no /new route yet: the login route answers"
    );

    // A new route, and a rotated session secret (new first, old kept).
    setup.extra = format!("\n[[routes]]\nname = \"new\"\npath = \"/new\"\nupstream = \"http://{}\"\nauth = \"public\"\n", echo.addr);
    setup.secrets = vec![SECRET_B, SECRET_A];
    std::fs::write(&path, setup.toml()).unwrap();
    gw.reload().await.expect("valid config reloads");
    wait_for(50).await;
    assert_eq!(
        http()
            .get(format!("{base}/new/x"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "the new route is live"
    );
    assert_eq!(
        b.xhr("/app").await.status,
        StatusCode::OK,
        "sessions survive a reload and a secret rotation"
    );

    // An invalid config is refused; the running one keeps serving.
    std::fs::write(
        &path,
        setup.toml().replace("threads = 2", "threads = 2\ntypo = 1"),
    )
    .unwrap();
    let err = gw.reload().await.expect_err("invalid config");
    assert!(
        err.to_string().contains("server.typo: unknown key"),
        "{err}"
    );
    wait_for(50).await;
    assert_eq!(
        http()
            .get(format!("{base}/new/x"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "zero failed requests across reloads ({} ok)",
        ok.load(Ordering::Relaxed)
    );
    let admin = format!("http://{}", gw.gateway().admin_addr().unwrap());
    let metrics = http()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("loopgate_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("loopgate_config_reloads_total{result=\"error\"} 1"));
    gw.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopgate_run_reloads_on_sighup_and_drains_on_sigterm() {
    let echo = echo_upstream().await;
    let (slow, mut slow_started) = slow_upstream().await;
    let em = Emulator::start(Default::default()).await.unwrap();
    let mut setup = Setup::new(em.url(), echo.addr);
    setup.server_extra = "shutdown_grace = \"3s\"".into();
    setup.extra = format!("\n[[routes]]\nname = \"slow\"\npath = \"/slow\"\nupstream = \"http://{slow}\"\nauth = \"public\"\n");
    let slow_route = setup.extra.clone();
    em.add_client(&ClientSpec {
        id: CLIENT.into(),
        secret: None,
        redirect_uri: setup.callback(),
    });
    let dir = temp_dir("sighup");
    let path = dir.join("loopgate.toml");
    std::fs::write(&path, setup.toml()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loopgate"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let base = setup.public_url.clone();
    let up = async {
        for _ in 0..200 {
            if http().get(format!("{base}/public/x")).send().await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(up.await, "loopgate run did not come up");
    assert_eq!(
        http()
            .get(format!("{base}/new/x"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    setup.extra = format!("{slow_route}\n[[routes]]\nname = \"new\"\npath = \"/new\"\nupstream = \"http://{}\"\nauth = \"public\"\n", echo.addr);
    std::fs::write(&path, setup.toml()).unwrap();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let mut reloaded = false;
    for _ in 0..200 {
        if http()
            .get(format!("{base}/new/x"))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reloaded, "SIGHUP did not bring the new route");

    // A request in flight when SIGTERM arrives still completes.
    let in_flight = tokio::spawn({
        let url = format!("{base}/slow/x");
        async move { http().get(url).send().await.map(|r| r.status()) }
    });
    slow_started
        .recv()
        .await
        .expect("the slow request reached its upstream");
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = std::time::Instant::now();
    assert_eq!(
        in_flight.await.unwrap().expect("completed, not cut"),
        StatusCode::OK
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exits after shutdown_grace (3 s)"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_tls_certificate() {
    let (a, b) = (test_pki(), test_pki());
    let dir = temp_dir("tlsreload");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &a.leaf_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();
    let echo = echo_upstream().await;
    let em = Emulator::start(Default::default()).await.unwrap();
    let mut setup = Setup::new(em.url(), echo.addr);
    setup.public_url = format!("https://127.0.0.1:{}", setup.port);
    setup.extra = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let path = dir.join("loopgate.toml");
    std::fs::write(&path, setup.toml()).unwrap();
    let gw = loopgate::server::GatewayHandle::start_with_file(
        loopgate::config::load(&path).unwrap(),
        Some(path.clone()),
    )
    .await
    .unwrap();
    let trusting = |pem: &str| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let url = format!("https://127.0.0.1:{}/public/x", setup.port);
    assert_eq!(
        trusting(&a.ca_pem).get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(trusting(&b.ca_pem).get(&url).send().await.is_err());

    std::fs::write(&cert, &b.leaf_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    gw.reload().await.unwrap();
    assert_eq!(
        trusting(&b.ca_pem).get(&url).send().await.unwrap().status(),
        StatusCode::OK,
        "new certificate served"
    );
    assert!(
        trusting(&a.ca_pem).get(&url).send().await.is_err(),
        "old one gone"
    );

    // A broken certificate file is refused; the current one stays.
    std::fs::write(&cert, "garbage").unwrap();
    assert!(gw.reload().await.is_err());
    assert_eq!(
        trusting(&b.ca_pem).get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    gw.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}
