//! A `redis-server` of the tests' own on a free loopback port (Debian's redis-server;
//! `scripts/ensure-deps` installs it), stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gw::free_port;

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

/// A TLS-only server with an ACL user, and the files a client needs to reach it.
pub struct TlsRedis {
    pub server: RedisServer,
    pub ca_file: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// Starts one and returns once it answers `PING`.
    pub async fn start() -> RedisServer {
        let port = free_port();
        let server = RedisServer {
            child: spawn(port),
            port,
        };
        server.wait_ready().await;
        server
    }

    /// Stops the server; its port stays this server's, for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open but
    /// nothing answers, as with a hung Redis.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// A fresh, empty server on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).await.as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::task::yield_now().await;
        }
    }

    /// A server speaking only TLS (certificate from `pki`, for 127.0.0.1) where the
    /// default user is off and only `user` with `password` may log in.
    pub async fn start_tls(pki: &super::gw::TestPki, user: &str, password: &str) -> TlsRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("loopgate-redis-tls-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        std::fs::write(&cert, &pki.leaf_pem).unwrap();
        std::fs::write(&key, &pki.key_pem).unwrap();
        let path = |p: &std::path::Path| p.display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &path(&cert),
                "--tls-key-file",
                &path(&key),
            ])
            .args(["--tls-ca-cert-file", &path(&ca), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--user", "default", "off"])
            .args([
                "--user",
                user,
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/ensure-deps)");
        let server = RedisServer { child, port };
        // Ready when the TLS port accepts connections (the plain probe cannot speak TLS).
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            tokio::task::yield_now().await;
        }
        TlsRedis {
            server,
            ca_file: ca,
            dir,
        }
    }

    /// One command over a fresh connection; the first line of the answer.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        text.lines().next().map(str::to_string)
    }

    /// The `[redis]` table pointing at this server, with its own key prefix.
    pub fn toml(&self, prefix: &str) -> String {
        format!(
            "\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"{prefix}\"\n",
            self.port
        )
    }
}

/// A plain redis-server on `port` (loopback, nothing persisted).
fn spawn(port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (run scripts/ensure-deps)")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
