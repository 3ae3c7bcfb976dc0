//! The route table: the longest matching path prefix wins (on the normalised path).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use crate::config::{RouteConfig, Upstream};
use crate::proxy::path::under_prefix;

/// A route ready to serve: its config plus the upstream's resolved address.
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    pub addr: SocketAddr,
    /// Trust roots for an https upstream when `ca_file` is set.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// Separates this route's pooled upstream connections from other routes'.
    pub group_key: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("routes[{index}].{key}: {reason}")]
pub struct ResolveError {
    pub index: usize,
    pub key: &'static str,
    pub reason: String,
}

/// Resolves an upstream's host once, at start-up (never on the request path:
/// pingora's own resolution blocks).
pub fn resolve(index: usize, u: &Upstream) -> Result<SocketAddr, ResolveError> {
    let err = |reason: String| ResolveError {
        index,
        key: "upstream",
        reason: format!("cannot resolve `{}`: {reason}", u.host),
    };
    (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no addresses".into()))
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Sorted longest path first, so the first match is the most specific.
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> RouteTable {
        routes.sort_by_key(|r| std::cmp::Reverse(r.config.path.trim_end_matches('/').len()));
        RouteTable {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// Resolves every route's upstream.
    pub fn resolve(configs: &[RouteConfig]) -> Result<RouteTable, ResolveError> {
        let mut routes = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let ca = match &c.ca_file {
                Some(path) => Some(super::tls::load_ca(path).map_err(|reason| ResolveError {
                    index: i,
                    key: "ca_file",
                    reason,
                })?),
                None => None,
            };
            routes.push(Route {
                addr: resolve(i, &c.upstream)?,
                config: c.clone(),
                ca,
                group_key: i as u64 + 1,
            });
        }
        Ok(RouteTable::new(routes))
    }

    /// The route for a normalised path.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .find(|r| under_prefix(path, &r.config.path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthKind;
    use std::time::Duration;

    fn route(name: &str, path: &str) -> Route {
        Route {
            config: RouteConfig {
                name: name.into(),
                path: path.into(),
                upstream: Upstream {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: 1,
                },
                auth: AuthKind::Login,
                strip_prefix: false,
                preserve_host: true,
                ca_file: None,
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                accept_bearer: false,
            },
            addr: "127.0.0.1:1".parse().unwrap(),
            ca: None,
            group_key: 0,
        }
    }

    #[test]
    fn longest_prefix_wins_segment_wise() {
        let t = RouteTable::new(vec![
            route("root", "/"),
            route("api", "/api/"),
            route("apix", "/api/x"),
        ]);
        let name = |p: &str| t.find(p).map(|r| r.config.name.clone());
        assert_eq!(name("/").as_deref(), Some("root"));
        assert_eq!(name("/api").as_deref(), Some("api"));
        assert_eq!(name("/api/y").as_deref(), Some("api"));
        assert_eq!(name("/api/x/1").as_deref(), Some("apix"));
        assert_eq!(name("/api/xy").as_deref(), Some("api"));
        assert_eq!(name("/apis").as_deref(), Some("root"));
        let t = RouteTable::new(vec![route("api", "/api")]);
        assert!(t.find("/other").is_none());
    }

    #[test]
    fn resolution_uses_literal_addresses_without_dns() {
        let u = Upstream {
            tls: false,
            host: "127.0.0.1".into(),
            port: 9000,
        };
        assert_eq!(resolve(0, &u).unwrap(), "127.0.0.1:9000".parse().unwrap());
    }
}
