//! A throwaway `redis-server` on a free loopback port for the unit tests of the Redis
//! implementations (Debian's redis-server; `scripts/ensure-deps` installs it).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Redis;
use crate::config::RedisConfig;

pub(crate) struct TestRedis {
    child: Child,
    pub(crate) port: u16,
}

impl TestRedis {
    /// Starts one and returns once it answers `PING`.
    pub(crate) async fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/ensure-deps)");
        let server = TestRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").await.is_ok()
                    && s.read_exact(&mut buf).await.is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::task::yield_now().await;
        }
    }

    pub(crate) fn config(&self) -> RedisConfig {
        RedisConfig {
            url: format!("redis://127.0.0.1:{}/0", self.port),
            password: None,
            ca_file: None,
            key_prefix: format!("test{}:", crate::random::token()),
            timeout: Duration::from_millis(500),
        }
    }

    pub(crate) fn client(&self) -> Redis {
        Redis::new(&self.config(), Arc::new(crate::metrics::Metrics::new())).unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
