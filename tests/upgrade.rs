//! Process lifecycle of a real `loopgate run`: SIGTERM turns readiness off before the
//! listeners close; a graceful binary upgrade (SIGUSR2, or `--upgrade` + SIGQUIT) hands
//! the listening sockets to a new process without a refused connection, and sessions
//! carry over.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::gw::*;
use crate::common::{http, CLIENT};
use loopgate::emulator::{ClientSpec, Emulator, EmulatorHandle};
use reqwest::StatusCode;

struct Stack {
    _echo: Echo,
    em: EmulatorHandle,
    setup: Setup,
    dir: PathBuf,
    config: PathBuf,
}

impl Stack {
    /// Emulator + echo upstream + a config file for `loopgate run`, with the lifecycle
    /// files (pid, upgrade socket) in a private directory.
    async fn new(tag: &str, server_extra: &str) -> Stack {
        let echo = echo_upstream().await;
        let em = Emulator::start(Default::default()).await.unwrap();
        let dir = std::env::temp_dir().join(format!(
            "loopgate-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut setup = Setup::new(em.url(), echo.addr);
        setup.server_extra = format!(
            "upgrade_sock = \"{}\"\npid_file = \"{}\"\n{server_extra}",
            dir.join("upgrade.sock").display(),
            dir.join("loopgate.pid").display()
        );
        em.add_client(&ClientSpec {
            id: CLIENT.into(),
            secret: None,
            redirect_uri: setup.callback(),
        });
        let config = dir.join("loopgate.toml");
        std::fs::write(&config, setup.toml()).unwrap();
        Stack {
            _echo: echo,
            em,
            setup,
            dir,
            config,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("loopgate.log")
    }

    /// `loopgate run <flags> --config <file>`, logging to the stack's log file.
    fn spawn(&self, flags: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_loopgate"))
            .arg("run")
            .args(flags)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.setup.public_url)
    }

    fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.setup.admin_port)
    }

    /// Polls `cond` until it holds; panics with the gateway's log after `within`.
    async fn wait_for<F, Fut>(&self, what: &str, within: Duration, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !cond().await {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}\n--- log ---\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Lets the load run a little longer (now served by the new process), stops it, and
    /// asserts that no request failed.
    async fn finish_load(
        &self,
        stop: Arc<AtomicBool>,
        load: tokio::task::JoinHandle<(usize, Vec<String>)>,
    ) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let (ok, failures) = load.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed across the upgrade: {:?}\n{}",
            failures.len(),
            ok + failures.len(),
            &failures[..failures.len().min(5)],
            self.logs()
        );
        assert!(ok > 20, "only {ok} requests ran during the upgrade");
        eprintln!("{ok} requests on new connections across the upgrade, none failed");
    }

    /// The pid `/healthz` reports: which process answers the admin listener.
    async fn serving_pid(&self) -> Option<u32> {
        let body = http()
            .get(self.admin("/healthz"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Requests on fresh connections until stopped: counts successes and failures, so a
/// listening socket that is closed or refuses even once shows up.
fn steady_load(
    url: String,
) -> (
    Arc<AtomicBool>,
    tokio::task::JoinHandle<(usize, Vec<String>)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let ok = AtomicUsize::new(0);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
            }
            (ok.into_inner(), failures)
        }
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_before_the_listeners_close() {
    let stack = Stack::new(
        "sigterm",
        "shutdown_delay = \"4s\"\nshutdown_grace = \"1s\"",
    )
    .await;
    let mut child = stack.spawn(&[]);
    stack
        .wait_for("ready", Duration::from_secs(20), || async {
            matches!(http().get(stack.admin("/readyz")).send().await, Ok(r) if r.status() == StatusCode::OK)
        })
        .await;

    signal(child.id(), "TERM");
    let sent = Instant::now();
    let body = loop {
        if let Ok(r) = http().get(stack.admin("/readyz")).send().await {
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                break r.text().await.unwrap();
            }
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "/readyz never said 503\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(body.contains("shutting down"), "{body}");
    // Within the delay the proxy still takes new connections: load balancers that have
    // not yet seen the 503 lose nothing.
    let r = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(stack.url("/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "the checks above ran inside the 4 s delay ({:?})",
        sent.elapsed()
    );

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", stack.logs());
    assert!(
        sent.elapsed() >= Duration::from_secs(4),
        "exited before shutdown_delay was over ({:?})",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_a_daemon_without_a_refused_connection() {
    let stack = Stack::new("usr2", "shutdown_grace = \"1s\"").await;
    let pid_file = stack.dir.join("loopgate.pid");
    // --daemon: the first process forks the gateway and exits once it is set up.
    let mut starter = stack.spawn(&["--daemon"]);
    let status = tokio::task::spawn_blocking(move || starter.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", stack.logs());
    stack
        .wait_for("the daemon answers", Duration::from_secs(20), || async {
            read_pid(&pid_file).is_some() && stack.serving_pid().await.is_some()
        })
        .await;
    let old = read_pid(&pid_file).unwrap();
    assert_eq!(stack.serving_pid().await, Some(old));
    assert!(alive(old));

    // A signed-in user before the upgrade...
    let mut b = Browser::new(&stack.setup.public_url);
    b.login("/", stack.em.url(), "ada").await;
    assert_eq!(b.xhr("/x").await.status, StatusCode::OK);

    let (stop, load) = steady_load(stack.url("/public/x"));
    signal(old, "USR2");
    // The new daemon writes the pid file, takes the sockets, and the old one drains away.
    stack
        .wait_for(
            "a new pid in the pid file",
            Duration::from_secs(30),
            || async { read_pid(&pid_file).is_some_and(|p| p != old) },
        )
        .await;
    let new = read_pid(&pid_file).unwrap();
    stack
        .wait_for("the old process exits", Duration::from_secs(30), || async {
            !alive(old)
        })
        .await;
    // A few more requests, all served by the new process now.
    stack.finish_load(stop, load).await;
    assert_eq!(stack.serving_pid().await, Some(new), "{}", stack.logs());
    assert!(alive(new));

    // ...is still signed in: the session lives in the cookie, sealed with the same keys.
    let r = b.xhr("/x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(echoed(&r.json(), "x-loopwise-user"), Some("ada"));
    let logs = stack.logs();
    assert!(logs.contains("SIGUSR2"), "{logs}");

    signal(new, "TERM");
    stack
        .wait_for(
            "the new process exits on SIGTERM",
            Duration::from_secs(20),
            || async { !alive(new) },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_flag_and_sigquit_hand_the_sockets_over() {
    let stack = Stack::new("sigquit", "shutdown_grace = \"1s\"").await;
    let mut old = stack.spawn(&[]);
    stack
        .wait_for(
            "the old process answers",
            Duration::from_secs(20),
            || async { stack.serving_pid().await == Some(old.id()) },
        )
        .await;
    let (stop, load) = steady_load(stack.url("/public/x"));
    // The new process binds the upgrade socket and waits there for the sockets.
    let sock = stack.dir.join("upgrade.sock");
    let mut new = stack.spawn(&["--upgrade"]);
    stack
        .wait_for(
            "the new process waits on the upgrade socket",
            Duration::from_secs(20),
            || async { sock.exists() },
        )
        .await;
    signal(old.id(), "QUIT");
    let status = tokio::task::spawn_blocking(move || old.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", stack.logs());
    stack.finish_load(stop, load).await;
    assert_eq!(stack.serving_pid().await, Some(new.id()));
    signal(new.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || new.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// One HTTP/1.1 response with a Content-Length body, read exactly (so the connection
/// can carry the next one).
async fn read_response(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).await.unwrap();
        assert_eq!(
            n,
            1,
            "closed inside the header: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.unwrap();
    data.extend_from_slice(&body);
    String::from_utf8_lossy(&data).into_owned()
}

/// pingora drops connections still waiting for a request the moment its listener closes;
/// a request already on its way then meets a closed connection. The gateway waits a
/// moment first, so such a request is still answered (and the connection then closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_arriving_just_after_the_listener_closes_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::new("settle", "shutdown_grace = \"3s\"").await;
    let mut child = stack.spawn(&[]);
    let port = stack.setup.port;
    stack
        .wait_for("the gateway answers", Duration::from_secs(20), || async {
            stack.serving_pid().await == Some(child.id())
        })
        .await;
    let request = format!("GET /public/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let first = read_response(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    signal(child.id(), "TERM");
    // Once new connections are refused, the listener is closed...
    stack
        .wait_for("the listener closes", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        })
        .await;
    // ...and the idle connection's next request is still answered, once.
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut reply))
        .await
        .expect("the connection is closed after the answer")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply:?}"
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
