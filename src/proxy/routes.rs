//! The route table and each route's backend pool.
//!
//! Matching: the most specific host (exact, then the longest wildcard, then any), then the
//! longest path prefix, on the normalised path. Each route balances its backends
//! round-robin with pingora's load balancer: DNS names are resolved off the request path
//! (at start-up and every [`DNS_REFRESH`]), and optional active HTTP health checks take
//! failing backends out of rotation.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};

use crate::config::{RouteConfig, Upstream};
use crate::wire::path::{under_prefix, NormalPath};

/// How often upstream host names are resolved again.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);

/// Which configured upstream a discovered backend came from (for SNI and Host).
#[derive(Debug, Clone, Copy)]
pub struct BackendOrigin(pub usize);

#[derive(Debug, thiserror::Error)]
#[error("routes[{index}].{key}: {reason}")]
pub struct ResolveError {
    pub index: usize,
    pub key: &'static str,
    pub reason: String,
}

/// Resolves upstream host names (all addresses of each), on a blocking-safe tokio path.
struct DnsDiscovery {
    upstreams: Vec<Upstream>,
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        let mut last_error = None;
        for (i, u) in self.upstreams.iter().enumerate() {
            match tokio::net::lookup_host((u.host.as_str(), u.port)).await {
                Ok(addrs) => {
                    for addr in addrs {
                        let mut b = Backend::new(&addr.to_string())?;
                        b.ext.insert(BackendOrigin(i));
                        set.insert(b);
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %u.host, error = %e, "cannot resolve upstream");
                    last_error = Some(e);
                }
            }
        }
        if set.is_empty() {
            if let Some(e) = last_error {
                return pingora::Error::e_explain(
                    pingora::ErrorType::ConnectNoRoute,
                    format!("no upstream address resolves: {e}"),
                );
            }
        }
        Ok((set, HashMap::new()))
    }
}

/// Logs backends going up or down (the metric gauge is read at scrape time).
struct HealthLog {
    route: String,
}

#[async_trait]
impl pingora::lb::health_check::HealthObserve for HealthLog {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let backend = target.addr.to_string();
        if healthy {
            tracing::info!(route = %self.route, backend, "backend up");
        } else {
            tracing::warn!(route = %self.route, backend, "backend down");
        }
    }
}

/// A route ready to serve.
pub struct Route {
    pub config: RouteConfig,
    /// `None` for a policy-only route (no upstream).
    pub pool: Option<Arc<LoadBalancer<RoundRobin>>>,
    /// Trust roots for https upstreams when `ca_file` is set.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// Separates this route's pooled upstream connections from other routes'.
    pub group_key: u64,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// Whether the route's path prefix covers a normalised path (ignoring ASCII case when
    /// the route says `case_insensitive`, for upstreams that read `/ADMIN` as `/admin`).
    pub fn covers(&self, path: &str) -> bool {
        if self.config.case_insensitive {
            under_prefix(
                &path.to_ascii_lowercase(),
                &self.config.path.to_ascii_lowercase(),
            )
        } else {
            under_prefix(path, &self.config.path)
        }
    }

    /// The path sent upstream for a request path this route covers: the prefix stripped
    /// or rewritten when configured (segment-wise, so `;params` past it are kept),
    /// otherwise the path as normalised, params included.
    pub fn upstream_path(&self, np: &NormalPath) -> String {
        let rc = &self.config;
        if rc.rewrite.is_none() && !rc.strip_prefix {
            return np.upstream.clone();
        }
        // Under `case_insensitive`, `/ADMIN/x` is stripped like `/admin/x`.
        let (np, prefix) = if rc.case_insensitive {
            let lowered = NormalPath {
                path: np.path.to_ascii_lowercase(),
                ..np.clone()
            };
            (
                std::borrow::Cow::Owned(lowered),
                rc.path.to_ascii_lowercase(),
            )
        } else {
            (std::borrow::Cow::Borrowed(np), rc.path.clone())
        };
        match &rc.rewrite {
            Some(rw) => np.rewrite_upstream(&prefix, rw),
            None => np.strip_upstream(&prefix),
        }
    }

    /// The next backend: round-robin among healthy ones not in `exclude`; when every
    /// backend is unhealthy, any not excluded (fail open rather than refuse everything).
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<(SocketAddr, &Upstream)> {
        let pool = self.pool.as_ref()?;
        let excluded = |b: &Backend| b.addr.as_inet().is_some_and(|a| exclude.contains(a));
        let chosen = pool
            .select_with(b"", 256, |b, healthy| healthy && !excluded(b))
            .or_else(|| pool.select_with(b"", 256, |b, _| !excluded(b)))?;
        let addr = *chosen.addr.as_inet()?;
        let origin = chosen.ext.get::<BackendOrigin>().map_or(0, |o| o.0);
        Some((addr, self.config.upstreams.get(origin)?))
    }

    /// Every backend currently known, with its health.
    pub fn backends(&self) -> Vec<(SocketAddr, bool)> {
        let Some(pool) = &self.pool else {
            return Vec::new();
        };
        let backends = pool.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| Some((*b.addr.as_inet()?, backends.ready(b))))
            .collect()
    }
}

/// Builds a route's pool and resolves it once (start-up fails on unresolvable names).
pub async fn build_route(index: usize, c: &RouteConfig) -> Result<Route, ResolveError> {
    let err = |key: &'static str, reason: String| ResolveError { index, key, reason };
    // Literal addresses resolve without DNS; names go through the discovery.
    for u in &c.upstreams {
        if u.host.parse::<std::net::IpAddr>().is_err() {
            (u.host.as_str(), u.port)
                .to_socket_addrs()
                .map_err(|e| err("upstream", format!("cannot resolve `{}`: {e}", u.host)))?;
        }
    }
    let ca = match &c.ca_file {
        Some(path) => Some(super::tls::load_ca(path).map_err(|r| err("ca_file", r))?),
        None => None,
    };
    if c.upstreams.is_empty() {
        return Ok(Route {
            config: c.clone(),
            pool: None,
            ca,
            group_key: index as u64 + 1,
        });
    }
    let backends = Backends::new(Box::new(DnsDiscovery {
        upstreams: c.upstreams.clone(),
    }));
    let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
    if let Some(h) = &c.health_check {
        let first = &c.upstreams[0];
        let mut hc = HttpHealthCheck::new(&first.authority(), first.tls);
        hc.req = pingora::http::RequestHeader::build("GET", h.path.as_bytes(), None)
            .map_err(|e| err("health_check.path", e.to_string()))?;
        hc.req
            .insert_header("host", first.authority())
            .map_err(|e| err("health_check", e.to_string()))?;
        hc.req
            .insert_header("user-agent", "loopgate-health-check")
            .map_err(|e| err("health_check", e.to_string()))?;
        hc.consecutive_success = h.healthy_threshold;
        hc.consecutive_failure = h.unhealthy_threshold;
        hc.peer_template.options.connection_timeout = Some(h.timeout);
        hc.peer_template.options.read_timeout = Some(h.timeout);
        hc.peer_template.options.ca = ca.clone();
        hc.health_changed_callback = Some(Box::new(HealthLog {
            route: c.name.clone(),
        }));
        lb.set_health_check(Box::new(hc));
        lb.health_check_frequency = Some(h.interval);
        lb.parallel_health_check = true;
    }
    lb.update_frequency = Some(DNS_REFRESH);
    lb.update()
        .await
        .map_err(|e| err("upstream", format!("cannot resolve: {e}")))?;
    Ok(Route {
        config: c.clone(),
        pool: Some(Arc::new(lb)),
        ca,
        group_key: index as u64 + 1,
    })
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Sorted most specific first (host, then path length), so the first match wins.
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> RouteTable {
        routes.sort_by_key(|r| {
            std::cmp::Reverse((
                r.config.host.specificity(),
                r.config.path.trim_end_matches('/').len(),
            ))
        });
        RouteTable {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// Builds and resolves every route.
    pub async fn build(configs: &[RouteConfig]) -> Result<RouteTable, ResolveError> {
        let mut routes = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            routes.push(build_route(i, c).await?);
        }
        Ok(RouteTable::new(routes))
    }

    /// The route for a normalised host (`None`: no Host header) and normalised path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| {
            host.map_or(r.config.host == crate::wire::host::HostPattern::Any, |h| {
                r.config.host.matches(h)
            }) && r.covers(path)
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthKind;
    use crate::wire::host::HostPattern;

    fn config(name: &str, host: Option<&str>, path: &str, ports: &[u16]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: HostPattern::parse(host).unwrap(),
            path: path.into(),
            upstreams: ports
                .iter()
                .map(|p| Upstream {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: *p,
                })
                .collect(),
            rewrite: None,
            requirements: Default::default(),
            skip_auth_methods: Vec::new(),
            health_check: None,
            auth: AuthKind::Login,
            strip_prefix: false,
            preserve_host: true,
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            accept_bearer: false,
            allow_path_params: false,
            case_insensitive: false,
            pass_authorization: false,
        }
    }

    async fn table(cs: &[RouteConfig]) -> RouteTable {
        RouteTable::build(cs).await.unwrap()
    }

    #[tokio::test]
    async fn most_specific_host_then_longest_prefix() {
        let t = table(&[
            config("root", None, "/", &[1]),
            config("api", None, "/api/", &[1]),
            config("apix", None, "/api/x", &[1]),
            config("wild", Some("*.example.com"), "/", &[1]),
            config("exact", Some("app.example.com"), "/", &[1]),
            config("exact-admin", Some("app.example.com"), "/admin", &[1]),
        ])
        .await;
        let name = |h: Option<&str>, p: &str| {
            t.find(h, p)
                .map(|r| r.config.name.clone())
                .unwrap_or_default()
        };
        assert_eq!(name(Some("other.test"), "/"), "root");
        assert_eq!(name(Some("other.test"), "/api"), "api");
        assert_eq!(name(Some("other.test"), "/api/x/1"), "apix");
        assert_eq!(name(Some("other.test"), "/api/xy"), "api");
        assert_eq!(name(Some("other.test"), "/apis"), "root");
        assert_eq!(
            name(Some("b.example.com"), "/api/x"),
            "wild",
            "host before path"
        );
        assert_eq!(name(Some("app.example.com"), "/api"), "exact");
        assert_eq!(name(Some("app.example.com"), "/admin/users"), "exact-admin");
        assert_eq!(name(None, "/api"), "api", "no Host: only any-host routes");
        let t = table(&[config("api", None, "/api", &[1])]).await;
        assert!(t.find(Some("x"), "/other").is_none());
    }

    #[tokio::test]
    async fn round_robin_skips_excluded_backends() {
        let t = table(&[config("two", None, "/", &[7001, 7002])]).await;
        let r = t.find(None, "/").unwrap();
        let a = r.pick(&[]).unwrap().0;
        let b = r.pick(&[]).unwrap().0;
        assert_ne!(a, b, "round-robin alternates");
        for _ in 0..4 {
            assert_ne!(r.pick(&[a]).unwrap().0, a);
        }
        assert!(r.pick(&[a, b]).is_none());
        assert_eq!(r.backends().len(), 2);
    }

    #[tokio::test]
    async fn case_insensitive_routes_cover_any_case() {
        let mut admin = config("admin", None, "/admin", &[1]);
        admin.case_insensitive = true;
        admin.strip_prefix = true;
        let t = table(&[config("root", None, "/", &[1]), admin]).await;
        let name = |p: &str| t.find(None, p).map(|r| r.config.name.clone());
        for p in ["/admin", "/ADMIN", "/Admin/secret", "/aDmIn/"] {
            assert_eq!(name(p).as_deref(), Some("admin"), "{p}");
        }
        assert_eq!(name("/administrator").as_deref(), Some("root"));
        let r = t.find(None, "/ADMIN/x").unwrap();
        let np = |p: &str| crate::wire::path::normalize(p).unwrap();
        assert_eq!(r.upstream_path(&np("/ADMIN/x")), "/x");
        assert_eq!(r.upstream_path(&np("/Admin")), "/");
        assert_eq!(r.upstream_path(&np("/ADMIN;jsessionid=1/Y;z")), "/Y;z");
        let strict = table(&[
            config("root", None, "/", &[1]),
            config("admin", None, "/admin", &[1]),
        ])
        .await;
        assert_eq!(strict.find(None, "/ADMIN").unwrap().config.name, "root");
    }
}
