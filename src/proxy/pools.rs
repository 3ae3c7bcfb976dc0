//! Each route's backend pool (matching is [`crate::routes`], pure).
//!
//! Each route with upstreams balances its backends
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
use pingora::services::background::BackgroundService;

use crate::config::{RouteConfig, Upstream};
use crate::routes::Route;

/// How often upstream host names are resolved again.
pub(crate) const DNS_REFRESH: Duration = Duration::from_secs(30);

/// Which configured upstream a discovered backend came from (for SNI and Host).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackendOrigin(pub usize);

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

/// The backends of one route.
pub struct Pool {
    lb: Arc<LoadBalancer<RoundRobin>>,
    upstreams: Vec<Upstream>,
    /// Trust roots for https upstreams when `ca_file` is set.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// Separates this route's pooled upstream connections from other routes'.
    pub group_key: u64,
}

impl Pool {
    /// The next backend: round-robin among healthy ones not in `exclude`; when every
    /// backend is unhealthy, any not excluded (fail open rather than refuse everything).
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<(SocketAddr, &Upstream)> {
        let pool = &self.lb;
        let excluded = |b: &Backend| b.addr.as_inet().is_some_and(|a| exclude.contains(a));
        let chosen = pool
            .select_with(b"", 256, |b, healthy| healthy && !excluded(b))
            .or_else(|| pool.select_with(b"", 256, |b, _| !excluded(b)))?;
        let addr = *chosen.addr.as_inet()?;
        let origin = chosen.ext.get::<BackendOrigin>().map_or(0, |o| o.0);
        Some((addr, self.upstreams.get(origin)?))
    }

    /// Every backend currently known, with its health.
    pub fn backends(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.lb.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| Some((*b.addr.as_inet()?, backends.ready(b))))
            .collect()
    }

    /// Resolves names again and runs health checks until `stop` turns true.
    pub async fn run(&self, stop: tokio::sync::watch::Receiver<bool>) {
        self.lb.start(stop).await
    }
}

/// Builds a route's pool and resolves it once (start-up fails on unresolvable names);
/// `None` for a policy-only route (no upstream).
async fn build_pool(index: usize, c: &RouteConfig) -> Result<Option<Pool>, ResolveError> {
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
        return Ok(None);
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
    Ok(Some(Pool {
        lb: Arc::new(lb),
        upstreams: c.upstreams.clone(),
        ca,
        group_key: index as u64 + 1,
    }))
}

/// Every route's pool, by [`Route::index`].
#[derive(Default)]
pub struct Pools(Vec<Option<Arc<Pool>>>);

impl Pools {
    /// Builds and resolves the pool of every route.
    pub async fn build(configs: &[RouteConfig]) -> Result<Pools, ResolveError> {
        let mut pools = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            pools.push(build_pool(i, c).await?.map(Arc::new));
        }
        Ok(Pools(pools))
    }

    /// The pool of `route`; `None` for a policy-only route.
    pub fn of(&self, route: &Route) -> Option<&Arc<Pool>> {
        self.0.get(route.index)?.as_ref()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.0.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RouteTable;

    fn config(ports: &[u16]) -> RouteConfig {
        crate::routes::fixture::route_config("two", None, "/", ports)
    }

    #[tokio::test]
    async fn round_robin_skips_excluded_backends() {
        let configs = [config(&[7001, 7002]), config(&[])];
        let pools = Pools::build(&configs).await.unwrap();
        let t = RouteTable::new(&configs);
        let r = pools.of(t.find(None, "/").unwrap()).unwrap();
        let a = r.pick(&[]).unwrap().0;
        let b = r.pick(&[]).unwrap().0;
        assert_ne!(a, b, "round-robin alternates");
        for _ in 0..4 {
            assert_ne!(r.pick(&[a]).unwrap().0, a);
        }
        assert!(r.pick(&[a, b]).is_none());
        assert_eq!(r.backends().len(), 2);
        assert_eq!(pools.iter().count(), 1, "a policy-only route has no pool");
    }
}
