//! Slowloris: an overall deadline for a request's header (`server.header_timeout`) and a cap
//! on open downstream connections (`server.max_connections`), on a live gateway that keeps
//! serving everyone else meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::gw::*;
use crate::common::http;
use loopgate::emulator::Emulator;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of the unlabelled series `name` on the admin listener's `/metrics`.
async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let text = http()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
}

fn admin(rig: &Rig) -> SocketAddr {
    rig.gw.gateway().admin_addr().expect("admin listener")
}

/// Polls `metric` until `ok` holds, failing after 10 s.
async fn wait_metric(admin: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = metric(admin, name).await;
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `start`, then one header line every `every` until the gateway closes the
/// connection; returns how long after `start` was sent that happened (capped at 20 s).
async fn trickle(mut stream: TcpStream, start: &[u8], every: Duration) -> Duration {
    stream.write_all(start).await.unwrap();
    let began = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        // EOF or a reset; anything the gateway sends first is read over.
        while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        began.elapsed()
    });
    let mut i = 0;
    while !closed.is_finished() && began.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(every).await;
        i += 1;
        if wr
            .write_all(format!("X-Trickle-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(20), closed)
        .await
        .map(|r| r.unwrap())
        .unwrap_or(Duration::from_secs(20))
}

fn trickle_start(port: u16) -> Vec<u8> {
    format!("GET /public/slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").into_bytes()
}

/// Reads one response with a `Content-Length` body from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..]).to_string(),
    )
}

/// Plain GETs on fresh connections until `stop` resolves: (successes, failures).
async fn steady_requests(url: String, stop: impl std::future::Future<Output = ()>) -> (u32, u32) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    tokio::pin!(stop);
    let (mut ok, mut failed) = (0, 0);
    loop {
        tokio::select! {
            _ = &mut stop => return (ok, failed),
            r = client.get(&url).send() => match r {
                Ok(r) if r.status() == StatusCode::OK => ok += 1,
                _ => failed += 1,
            },
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rig_with_server(server_extra: &str) -> Rig {
    let extra = server_extra.to_string();
    rig_with(|_| {}, move |s| s.server_extra = extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_header_is_cut_off_at_header_timeout_while_others_are_served() {
    let rig = rig_with_server("header_timeout = \"2s\"").await;
    let port = rig.setup.port;
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let slow = tokio::spawn(async move {
        trickle(stream, &trickle_start(port), Duration::from_millis(500)).await
    });
    let (ok, failed) = steady_requests(rig.url("/public/x"), async {
        while !slow.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let closed = slow.await.unwrap();
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6),
        "trickling connection closed after {closed:?}"
    );
    assert_eq!(failed, 0, "{ok} normal requests served meanwhile");
    assert!(ok >= 5, "only {ok} normal requests during the trickle");
    assert!(metric(admin(&rig), "loopgate_header_timeouts_total").await >= 1.0);
    // A complete request in one write is served as ever.
    let (status, body) = raw_get(port, "/public/whole", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/public/whole"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idle_time_is_not_header_time() {
    let rig = rig_with_server("header_timeout = \"2s\"").await;
    let port = rig.setup.port;
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET /public/a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut c).await.0, 200);
    // Idle on the kept-alive connection for longer than header_timeout (the wait itself is
    // what is tested: well under pingora's 60 s keep-alive timeout).
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.write_all(req.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut c).await;
    assert_eq!(status, 200, "{body}");
    // Idle again, then trickle: the deadline runs from the request's first byte, so the
    // connection survives the idle time and is closed about 2 s into the trickle.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let closed = trickle(c, &trickle_start(port), Duration::from_millis(500)).await;
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6),
        "trickle on a reused connection closed after {closed:?}"
    );
    assert!(metric(admin(&rig), "loopgate_header_timeouts_total").await >= 1.0);
}

/// A TLS connection to the gateway on `port` speaking only HTTP/1.1 (ALPN).
async fn tls_h1(ca_der: &[u8], port: u16) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// `GET path` on an open HTTP/1.1 connection; the status and the (`Content-Length`) body.
async fn get_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: &mut S,
    path: &str,
) -> (u16, String) {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response header");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    )
}

/// An upstream that answers after `delay`.
async fn slow_upstream(delay: Duration) -> SocketAddr {
    let app = axum::Router::new().fallback(axum::routing::any(move || async move {
        tokio::time::sleep(delay).await;
        "slow done"
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_header_is_in_may_outlast_header_timeout_on_http1_and_http2() {
    let slow = slow_upstream(Duration::from_millis(2500)).await;
    let pki = test_pki();
    let dir = std::env::temp_dir().join(format!(
        "loopgate-limits-tls-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), &pki.leaf_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.key_pem).unwrap();
    let rig = rig_with(
        |_| {},
        |s| {
            s.public_url = format!("https://127.0.0.1:{}", s.port);
            s.server_extra = "header_timeout = \"1s\"".into();
            // [server.tls] must come after the [server] keys: append it at the end.
            s.extra = format!(
                "\n[[routes]]\nname = \"slow\"\npath = \"/slow\"\nupstream = \"http://{slow}\"\nauth = \"public\"\n\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            );
        },
    )
    .await;
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let url = format!("https://127.0.0.1:{}/slow/x", rig.setup.port);
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..2 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), StatusCode::OK, "h2");
        assert_eq!(r.text().await.unwrap(), "slow done", "h2");
    }
    // HTTP/1.1 on one connection written by hand: a pooling client may open a spare
    // connection that never sends a byte, which the deadline rightly closes and counts.
    let mut h1 = tls_h1(&pki.ca_der, rig.setup.port).await;
    for attempt in ["first", "again, after the connection idled"] {
        let (status, body) = get_on(&mut h1, "/slow/x").await;
        assert_eq!(status, 200, "h1 {attempt}");
        assert_eq!(body, "slow done", "h1 {attempt}");
    }
    assert_eq!(
        metric(admin(&rig), "loopgate_header_timeouts_total").await,
        0.0
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_get_503_until_some_close() {
    // A long header_timeout, so the held connections stay for the whole test.
    let rig = rig_with_server("max_connections = 20\nheader_timeout = \"60s\"").await;
    let port = rig.setup.port;
    let admin = admin(&rig);
    // The start-up probe's connections are gone.
    wait_metric(admin, "loopgate_connections_open", |v| v == 0.0).await;
    let mut held = Vec::new();
    for i in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 2 == 0 {
            c.write_all(&trickle_start(port)).await.unwrap();
        }
        held.push(c);
    }
    wait_metric(admin, "loopgate_connections_open", |v| v == 20.0).await;
    let refused_before = metric(admin, "loopgate_connections_refused_total").await;

    let asked = Instant::now();
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    extra
        .write_all(format!("GET /public/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer))
        .await
        .expect("the refused connection is closed promptly")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{answer}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    wait_metric(admin, "loopgate_connections_refused_total", |v| {
        v >= refused_before + 1.0
    })
    .await;

    // The connections already open are unaffected: one finishes its request.
    let mut first = held.remove(0);
    first.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut first).await;
    assert_eq!(status, 200, "{body}");
    drop(first);

    drop(held);
    wait_metric(admin, "loopgate_connections_open", |v| v == 0.0).await;
    let (status, body) = raw_get(port, "/public/again", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        http()
            .get(rig.url("/public/y"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_trickling_connections_are_all_closed_while_service_goes_on() {
    const N: usize = 300;
    let rig = rig_with_server("header_timeout = \"2s\"").await;
    let port = rig.setup.port;
    let admin = admin(&rig);
    let before = metric(admin, "loopgate_header_timeouts_total").await;
    let mut tricklers = tokio::task::JoinSet::new();
    for _ in 0..N {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tricklers.spawn(async move {
            trickle(stream, &trickle_start(port), Duration::from_millis(500)).await
        });
    }
    let mut closed = Vec::with_capacity(N);
    let (ok, failed) = steady_requests(rig.url("/public/x"), async {
        while let Some(r) = tricklers.join_next().await {
            closed.push(r.unwrap());
        }
    })
    .await;
    assert_eq!(closed.len(), N);
    let (min, max) = (closed.iter().min().unwrap(), closed.iter().max().unwrap());
    assert!(
        *min >= Duration::from_millis(1500) && *max < Duration::from_secs(7),
        "closed between {min:?} and {max:?}"
    );
    assert_eq!(failed, 0, "{ok} normal requests served meanwhile");
    assert!(ok >= 5, "only {ok} normal requests during the slowloris");
    let after = wait_metric(admin, "loopgate_header_timeouts_total", |v| {
        v >= before + N as f64
    })
    .await;
    println!("{N} trickling connections closed in {min:?}..{max:?}; {ok} requests served; header timeouts {before} -> {after}");
    wait_metric(admin, "loopgate_connections_open", |v| v == 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_limits_to_new_connections() {
    let echo = echo_upstream().await;
    let em = Emulator::start(Default::default()).await.unwrap();
    let mut setup = Setup::new(em.url(), echo.addr);
    // Held idle connections must outlive the test.
    setup.server_extra = "header_timeout = \"30s\"".into();
    let dir = std::env::temp_dir().join(format!(
        "loopgate-limits-reload-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("loopgate.toml");
    std::fs::write(&path, setup.toml()).unwrap();
    let cfg = loopgate::config::load(&path).unwrap();
    let gw = loopgate::server::GatewayHandle::start_with_file(cfg, Some(path.clone()))
        .await
        .unwrap();
    let admin = gw.gateway().admin_addr().unwrap();
    let port = setup.port;
    wait_metric(admin, "loopgate_connections_open", |v| v == 0.0).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    wait_metric(admin, "loopgate_connections_open", |v| v == 3.0).await;

    setup.server_extra = "max_connections = 3\nheader_timeout = \"30s\"".into();
    std::fs::write(&path, setup.toml()).unwrap();
    gw.reload().await.unwrap();
    assert_eq!(gw.gateway().config.server.max_connections, 3);
    // The three already open stay; a fourth is refused.
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer))
        .await
        .expect("refused promptly")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(metric(admin, "loopgate_connections_open").await, 3.0);
    drop(held);
    wait_metric(admin, "loopgate_connections_open", |v| v == 0.0).await;
    assert_eq!(raw_get(port, "/public/z", &[]).await.0, 200);
    gw.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}
