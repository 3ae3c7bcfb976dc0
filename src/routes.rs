//! Which route serves a request: the most specific host (exact, then the longest
//! wildcard, then any), then the longest path prefix, on the normalised path. Pure: the
//! backend pools that carry a route's traffic are the pingora side's
//! ([`crate::proxy::pools`]), indexed by [`Route::index`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::RouteConfig;
use crate::wire::host::HostPattern;
use crate::wire::path::{under_prefix, NormalPath};

/// A configured route.
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    /// Its position in the config's `routes` (the key of its backend pool).
    pub index: usize,
}

impl Route {
    /// A route with no upstream only applies policy (forward-auth); proxied to, it is 404.
    pub fn is_policy_only(&self) -> bool {
        self.config.upstreams.is_empty()
    }

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
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Sorted most specific first (host, then path length), so the first match wins.
    routes: Vec<Arc<Route>>,
    /// Routes of an exact host, by that host.
    by_host: HashMap<String, PrefixIndex>,
    /// Routes of any host or of a wildcard.
    other_hosts: PrefixIndex,
}

/// Positions in [`RouteTable::routes`] by path prefix (without its trailing `/`; the root
/// is `""`), so finding a route costs a lookup per segment of the request path, whatever
/// the number of routes.
#[derive(Debug, Default)]
struct PrefixIndex {
    exact_case: HashMap<String, Vec<usize>>,
    /// `case_insensitive` routes, by their lower-cased prefix.
    any_case: HashMap<String, Vec<usize>>,
}

impl PrefixIndex {
    fn add(&mut self, route: &Route, at: usize) {
        let base = route.config.path.trim_end_matches('/');
        let (map, key) = if route.config.case_insensitive {
            (&mut self.any_case, base.to_ascii_lowercase())
        } else {
            (&mut self.exact_case, base.to_string())
        };
        map.entry(key).or_default().push(at);
    }

    /// The first position (most specific) among the routes whose prefix covers `path`
    /// and for which `accepts` holds.
    fn first(&self, path: &str, accepts: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut consider = |map: &HashMap<String, Vec<usize>>, path: &str| {
            for base in covering_bases(path) {
                if let Some(at) = map
                    .get(base)
                    .and_then(|ats| ats.iter().copied().find(|&at| accepts(at)))
                {
                    best = Some(best.map_or(at, |b| b.min(at)));
                }
            }
        };
        if !self.exact_case.is_empty() {
            consider(&self.exact_case, path);
        }
        if !self.any_case.is_empty() {
            consider(&self.any_case, &path.to_ascii_lowercase());
        }
        best
    }
}

/// The prefixes (without a trailing `/`) under which `path` lies, in the sense of
/// [`under_prefix`]: the path itself, then each part before one of its `/`, down to `""`.
fn covering_bases(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once(path).chain(
        path.bytes()
            .enumerate()
            .rev()
            .filter(|&(_, b)| b == b'/')
            .map(move |(i, _)| &path[..i]),
    )
}

impl RouteTable {
    /// The table of `configs`, in config order as [`Route::index`].
    pub fn new(configs: &[RouteConfig]) -> RouteTable {
        let mut routes: Vec<Route> = configs
            .iter()
            .enumerate()
            .map(|(index, c)| Route {
                config: c.clone(),
                index,
            })
            .collect();
        routes.sort_by_key(|r| {
            std::cmp::Reverse((
                r.config.host.specificity(),
                r.config.path.trim_end_matches('/').len(),
            ))
        });
        let mut by_host: HashMap<String, PrefixIndex> = HashMap::new();
        let mut other_hosts = PrefixIndex::default();
        for (at, r) in routes.iter().enumerate() {
            match &r.config.host {
                HostPattern::Exact(h) => by_host.entry(h.clone()).or_default().add(r, at),
                HostPattern::Any | HostPattern::Wildcard(_) => other_hosts.add(r, at),
            }
        }
        RouteTable {
            routes: routes.into_iter().map(Arc::new).collect(),
            by_host,
            other_hosts,
        }
    }

    /// The route for a normalised host (`None`: no Host header) and normalised path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let accepts = |at: usize| {
            let pattern = &self.routes[at].config.host;
            host.map_or(*pattern == HostPattern::Any, |h| pattern.matches(h))
        };
        let exact = host
            .and_then(|h| self.by_host.get(h))
            .and_then(|index| index.first(path, &accepts));
        let other = self.other_hosts.first(path, &accepts);
        let at = match (exact, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        self.routes.get(at)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The first route in order that matches, by trying each: the model [`Self::find`]
    /// must agree with.
    #[cfg(test)]
    fn find_by_scan(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| {
            host.map_or(r.config.host == HostPattern::Any, |h| {
                r.config.host.matches(h)
            }) && r.covers(path)
        })
    }
}

/// A route config for tests, with every optional behaviour off.
#[cfg(test)]
pub(crate) mod fixture {
    use std::time::Duration;

    use crate::config::{AuthKind, RouteConfig, Upstream};
    use crate::wire::host::HostPattern;

    pub(crate) fn route_config(
        name: &str,
        host: Option<&str>,
        path: &str,
        ports: &[u16],
    ) -> RouteConfig {
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
            loopwise: vec![crate::oauth::DEFAULT_SCHOOL.into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fixture::route_config as config;

    fn table(cs: &[RouteConfig]) -> RouteTable {
        RouteTable::new(cs)
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let t = table(&[
            config("root", None, "/", &[1]),
            config("api", None, "/api/", &[1]),
            config("apix", None, "/api/x", &[1]),
            config("wild", Some("*.example.com"), "/", &[1]),
            config("exact", Some("app.example.com"), "/", &[1]),
            config("exact-admin", Some("app.example.com"), "/admin", &[1]),
        ]);
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
        let t = table(&[config("api", None, "/api", &[1])]);
        assert!(t.find(Some("x"), "/other").is_none());
    }

    #[test]
    fn case_insensitive_routes_cover_any_case() {
        let mut admin = config("admin", None, "/admin", &[1]);
        admin.case_insensitive = true;
        admin.strip_prefix = true;
        let t = table(&[config("root", None, "/", &[1]), admin]);
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
        ]);
        assert_eq!(strict.find(None, "/ADMIN").unwrap().config.name, "root");
    }

    proptest::proptest! {
        /// The indexed lookup picks what trying every route in order picks, for tables
        /// mixing hosts (exact, wildcard, any), nested and root prefixes, trailing
        /// slashes and case-insensitive routes.
        #[test]
        fn indexed_lookup_agrees_with_a_scan(
            specs in proptest::collection::vec((0usize..4, 0usize..7, proptest::bool::ANY), 1..12),
            probes in proptest::collection::vec((0usize..5, 0usize..10), 1..20),
        ) {
            let hosts = [None, Some("app.example.com"), Some("*.example.com"), Some("other.test")];
            let paths = ["/", "/a", "/a/", "/a/b", "/A/b", "/ab", "/a/b/c"];
            let configs: Vec<RouteConfig> = specs
                .iter()
                .enumerate()
                .map(|(i, &(h, p, ci))| {
                    let mut c = config(&format!("r{i}"), hosts[h], paths[p], &[1]);
                    c.case_insensitive = ci;
                    c
                })
                .collect();
            let t = table(&configs);
            let request_hosts = [None, Some("app.example.com"), Some("b.example.com"), Some("other.test"), Some("x.test")];
            let request_paths = ["/", "/a", "/a/", "/a/b", "/A/B", "/ab", "/a/b/c", "/a/bc", "/b", "/a/b/c/d"];
            for (h, p) in probes {
                let (host, path) = (request_hosts[h], request_paths[p]);
                proptest::prop_assert_eq!(
                    t.find(host, path).map(|r| r.index),
                    t.find_by_scan(host, path).map(|r| r.index),
                    "{:?} {}", host, path
                );
            }
        }
    }
}
