//! Real Redis servers for the unit tests of the Redis implementations (the same starters
//! the integration tests use, `testing/redis_servers.rs`), with the `[redis]` config and
//! client that reach them.

use std::sync::Arc;
use std::time::Duration;

#[path = "../../testing/redis_servers.rs"]
#[allow(dead_code, unreachable_pub)]
mod servers;

pub(crate) use servers::{RedisCluster, RedisSentinel};

use super::Redis;
use crate::config::{RedisConfig, RedisTarget};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a test's Redis is, and the server(s) behind it (stopped when dropped).
pub(crate) enum TestRedis {
    Single(servers::RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

impl TestRedis {
    /// A standalone server.
    pub(crate) async fn start() -> TestRedis {
        TestRedis::Single(servers::RedisServer::start(free_port).await)
    }

    /// A Cluster of three masters.
    pub(crate) async fn cluster() -> TestRedis {
        TestRedis::Cluster(RedisCluster::start(free_port).await)
    }

    /// A master behind a Sentinel.
    pub(crate) async fn sentinel() -> TestRedis {
        TestRedis::Sentinel(RedisSentinel::start(free_port).await)
    }

    /// A master with a replica behind a Sentinel that fails over quickly.
    pub(crate) async fn sentinel_with_replica() -> TestRedis {
        TestRedis::Sentinel(RedisSentinel::start_with_replica(free_port).await)
    }

    pub(crate) fn config(&self) -> RedisConfig {
        let target = match self {
            TestRedis::Single(s) => RedisTarget::Url(format!("redis://127.0.0.1:{}/0", s.port)),
            TestRedis::Cluster(c) => RedisTarget::Cluster(c.urls()),
            TestRedis::Sentinel(s) => RedisTarget::Sentinel {
                master: "mymaster".into(),
                nodes: vec![s.url()],
            },
        };
        RedisConfig {
            target,
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
