//! Real Redis servers for the tests, on loopback ports the caller picks (Debian's
//! `redis-server`; `scripts/ensure-deps` installs it): a standalone server, a TLS server
//! with an ACL user, a Cluster of three masters made with `redis-cli --cluster create`,
//! and a master watched by a Sentinel. Each stops when dropped.
//!
//! One file for the unit tests (`src/replicas`) and the integration tests
//! (`tests/common`), included by path in both; it needs only std and tokio.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Picks a free loopback port.
pub type PortSource = fn() -> u16;

pub struct RedisServer {
    child: Child,
    pub port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a plain server (nothing persisted) and returns once it answers `PING`.
    pub async fn start(ports: PortSource) -> RedisServer {
        RedisServer::start_with(ports(), &[]).await
    }

    /// Starts one on `port` with extra `redis-server` arguments.
    pub async fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--save", "", "--appendonly", "no"].map(String::from));
        // A replica writes the RDB it syncs from; never into the working directory.
        args.extend([
            "--dir".to_string(),
            std::env::temp_dir().display().to_string(),
            "--dbfilename".to_string(),
            format!("loopgate-test-{port}.rdb"),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = RedisServer {
            child: spawn(&args),
            port,
            args,
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
        self.child = spawn(&self.args);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).await.as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::task::yield_now().await;
        }
    }

    /// A server speaking only TLS (certificate and key in PEM, for 127.0.0.1, under
    /// `ca_pem`) where the default user is off and only `user` with `password` may log in.
    pub async fn start_tls(
        ports: PortSource,
        pem: (&str, &str, &str),
        user: &str,
        password: &str,
    ) -> TlsRedis {
        let port = ports();
        let dir = std::env::temp_dir().join(format!("loopgate-redis-tls-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&ca, pem.0).unwrap();
        std::fs::write(&cert, pem.1).unwrap();
        std::fs::write(&key, pem.2).unwrap();
        let path = |p: &Path| p.display().to_string();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &path(&cert),
            "--tls-key-file",
            &path(&key),
            "--tls-ca-cert-file",
            &path(&ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = RedisServer {
            child: spawn(&args),
            port,
            args,
        };
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
        command(self.port, args).await
    }

    /// One command; the whole answer as it came (RESP text), or `None`.
    pub async fn command_all(&self, args: &[&str]) -> Option<String> {
        info(self.port, args).await
    }

    /// The keys matching `pattern` (`KEYS`, for tests only).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let answer = info(self.port, &["KEYS", pattern])
            .await
            .unwrap_or_default();
        // *N, then $len / key pairs.
        answer
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with('$'))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let rdb = std::env::temp_dir().join(format!("loopgate-test-{}.rdb", self.port));
        let _ = std::fs::remove_file(rdb);
    }
}

/// A TLS-only server with an ACL user, and the files a client needs to reach it.
pub struct TlsRedis {
    pub server: RedisServer,
    pub ca_file: PathBuf,
    dir: PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters, no replicas, every slot assigned, made by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    pub async fn start(ports: PortSource) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("loopgate-redis-cluster-{}", ports()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let (port, bus) = (ports(), ports());
            let conf = dir.join(format!("nodes-{port}.conf")).display().to_string();
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(RedisServer::start_with(port, &extra).await);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (run scripts/ensure-deps)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes, dir };
        // Ready once every node sees every slot served.
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &cluster.nodes {
            loop {
                let info = info(n.port, &["CLUSTER", "INFO"]).await.unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not form");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    /// The seed urls, for `redis.cluster`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One master watched by one Sentinel (quorum 1) under the name `mymaster`, and
/// optionally a replica it can promote.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: Option<RedisServer>,
    pub sentinel: RedisServer,
    dir: PathBuf,
}

impl RedisSentinel {
    pub async fn start(ports: PortSource) -> RedisSentinel {
        RedisSentinel::start_inner(ports, false).await
    }

    /// With a replica, and a Sentinel quick to fail over (master down after 500 ms).
    pub async fn start_with_replica(ports: PortSource) -> RedisSentinel {
        RedisSentinel::start_inner(ports, true).await
    }

    async fn start_inner(ports: PortSource, with_replica: bool) -> RedisSentinel {
        let master = RedisServer::start(ports).await;
        let replica = if with_replica {
            let of = format!("127.0.0.1 {}", master.port);
            let r = RedisServer::start_with(ports(), &["--replicaof", &of]).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !info(r.port, &["INFO", "replication"])
                .await
                .unwrap_or_default()
                .contains("master_link_status:up")
            {
                assert!(Instant::now() < deadline, "the replica never synced");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(r)
        } else {
            None
        };
        let port = ports();
        let dir = std::env::temp_dir().join(format!("loopgate-redis-sentinel-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Sentinel rewrites its config file, so it gets one of its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 500\n\
                 sentinel failover-timeout mymaster 2000\n",
                master.port
            ),
        )
        .unwrap();
        let args = vec![conf.display().to_string(), "--sentinel".to_string()];
        let sentinel = RedisServer {
            child: spawn(&args),
            port,
            args,
        };
        sentinel.wait_ready().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = master.port.to_string();
        loop {
            let addr = info(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])
                .await
                .unwrap_or_default();
            if addr.contains(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sentinel did not find the master"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RedisSentinel {
            master,
            replica,
            sentinel,
            dir,
        }
    }

    /// The Sentinel's url, for `redis.sentinel.nodes`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel.port)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinel.stop();
        self.master.stop();
        if let Some(r) = &mut self.replica {
            r.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (run scripts/ensure-deps)")
}

fn request(args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    req.into_bytes()
}

/// One command on `port` over a fresh connection; the first line of the answer.
pub async fn command(port: u16, args: &[&str]) -> Option<String> {
    info(port, args)
        .await
        .and_then(|t| t.lines().next().map(str::to_string))
}

/// One command on `port`; the whole of the first read of the answer.
async fn info(port: u16, args: &[&str]) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(&request(args)).await.ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}
