//! Real Redis servers for the integration tests (see `testing/redis_servers.rs`), on
//! ports from the tests' own allocator, and the `[redis]` tables that point at them.

#[path = "../../testing/redis_servers.rs"]
mod servers;

pub use servers::{RedisCluster, TlsRedis};

use super::gw::free_port;

/// A standalone server (see [`servers::RedisServer`]).
pub struct RedisServer(servers::RedisServer);

impl std::ops::Deref for RedisServer {
    type Target = servers::RedisServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer(servers::RedisServer::start(free_port).await)
    }

    /// A TLS-only server with the certificate of `pki` and one ACL user.
    pub async fn start_tls(pki: &super::gw::TestPki, user: &str, password: &str) -> TlsRedis {
        servers::RedisServer::start_tls(
            free_port,
            (&pki.ca_pem, &pki.leaf_pem, &pki.key_pem),
            user,
            password,
        )
        .await
    }

    /// The `[redis]` table pointing at this server, with its own key prefix.
    pub fn toml(&self, prefix: &str) -> String {
        format!(
            "\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"{prefix}\"\n",
            self.port
        )
    }
}

/// A Cluster of three masters on ports from the tests' allocator.
pub async fn cluster() -> RedisCluster {
    RedisCluster::start(free_port).await
}

/// The `[redis]` table pointing at `cluster`'s seeds.
pub fn cluster_toml(cluster: &RedisCluster, prefix: &str) -> String {
    let seeds: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "\n[redis]\ncluster = [{}]\nkey_prefix = \"{prefix}\"\n",
        seeds.join(", ")
    )
}
