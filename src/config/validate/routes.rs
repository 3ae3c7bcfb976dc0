//! `[[routes]]`: each route's match, upstreams, authentication and limits.

use super::super::raw;
use super::Validator;
use crate::config::{AuthKind, HealthCheckConfig, RouteConfig, Upstream};
use crate::oauth::scope;
use crate::policy::authz::Requirements;
use crate::wire::host::HostPattern;

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        raw: Vec<raw::RawRoute>,
        prefix: Option<&str>,
        schools: &[&str],
    ) -> Vec<RouteConfig> {
        if raw.is_empty() {
            self.err("routes", "at least one [[routes]] entry is required");
        }
        let mut out: Vec<RouteConfig> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            if let Some(route) = self.route(i, r, &out, prefix, schools) {
                out.push(route);
            }
        }
        out
    }

    /// One `[[routes]]` entry; `None` when it has errors (all reported). `earlier` are the
    /// valid routes before it, for the uniqueness checks.
    fn route(
        &mut self,
        i: usize,
        r: raw::RawRoute,
        earlier: &[RouteConfig],
        prefix: Option<&str>,
        school_names: &[&str],
    ) -> Option<RouteConfig> {
        let k = |f: &str| format!("routes[{i}].{f}");
        let name = match r.name {
            None => {
                self.err(k("name"), "is required");
                String::new()
            }
            Some(n) => {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    self.invalid(
                        &k("name"),
                        &n,
                        "letters, digits, `_` and `-` only (it becomes a metric label)",
                    );
                } else if earlier.iter().any(|o| o.name == n) {
                    self.invalid(&k("name"), &n, "another route has this name");
                }
                n
            }
        };
        let host = match HostPattern::parse(r.host.as_deref()) {
            Ok(h) => h,
            Err(e) => {
                self.invalid(&k("host"), r.host.as_deref().unwrap_or(""), e);
                HostPattern::Any
            }
        };
        let path = match r.path {
            None => {
                self.err(k("path"), "is required");
                String::from("/")
            }
            Some(p) => {
                if !p.starts_with('/')
                    || p.contains(['?', '#', '%', '\\'])
                    || p.bytes().any(|b| b.is_ascii_control() || b == b' ')
                {
                    self.invalid(
                        &k("path"),
                        &p,
                        "must be a plain path starting with `/` (no query, `%`, `\\` or spaces)",
                    );
                } else if !crate::wire::path::is_normalized(&p) {
                    self.invalid(
                        &k("path"),
                        &p,
                        "must already be normalised (no `//`, `.` or `..` segments)",
                    );
                } else if earlier.iter().any(|o| {
                    o.host == host && o.path.trim_end_matches('/') == p.trim_end_matches('/')
                }) {
                    self.invalid(
                        &k("path"),
                        &p,
                        "another route has the same host and path (ties are ambiguous)",
                    );
                }
                if let Some(prefix) = prefix {
                    if crate::wire::path::under_prefix(&p, prefix) {
                        self.invalid(
                            &k("path"),
                            &p,
                            format!("overlaps the gateway's own endpoints under `{prefix}`"),
                        );
                    }
                }
                p
            }
        };
        let urls = match r.upstream {
            // No upstream: a policy-only route, answered by forward-auth (`{prefix}/auth`).
            None => Vec::new(),
            Some(raw::RawUpstreams::One(u)) => vec![(k("upstream"), u)],
            Some(raw::RawUpstreams::Many(list)) => {
                if list.is_empty() {
                    self.err(k("upstream"), "the list is empty");
                }
                list.into_iter()
                    .enumerate()
                    .map(|(j, u)| (format!("routes[{i}].upstream[{j}]"), u))
                    .collect()
            }
        };
        let upstreams: Vec<Upstream> = urls
            .iter()
            .filter_map(|(key, u)| self.upstream(key, u))
            .collect();
        if upstreams.iter().any(|u| u.tls) && upstreams.iter().any(|u| !u.tls) {
            self.err(k("upstream"), "mixes http and https backends");
        }
        let rewrite = match r.rewrite {
            None => None,
            Some(rw) => {
                if !rw.starts_with('/') || !crate::wire::path::is_normalized(&rw) {
                    self.invalid(
                        &k("rewrite"),
                        &rw,
                        "must be a normalised path starting with `/`, e.g. /v2/",
                    );
                }
                if r.strip_prefix.is_some() {
                    self.err(
                        k("rewrite"),
                        "replaces the prefix itself; do not combine it with strip_prefix",
                    );
                }
                Some(rw)
            }
        };
        let scopes = r.scopes.unwrap_or_default();
        for (j, sc) in scopes.iter().enumerate() {
            if !scope::is_valid_token(sc) {
                self.invalid(&format!("routes[{i}].scopes[{j}]"), sc, "not a scope token");
            }
        }
        let roles = r.roles.unwrap_or_default();
        let schools: Vec<String> = r
            .schools
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(j, v)| match v {
                toml::Value::String(s) if !s.is_empty() => Some(s),
                toml::Value::Integer(n) => Some(n.to_string()),
                other => {
                    self.invalid(
                        &format!("routes[{i}].schools[{j}]"),
                        &other.to_string(),
                        "expected a school id",
                    );
                    None
                }
            })
            .collect();
        let mut skip_auth_methods = Vec::new();
        for (j, m) in r.skip_auth_methods.unwrap_or_default().iter().enumerate() {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    skip_auth_methods.push(method)
                }
                _ => self.invalid(
                    &format!("routes[{i}].skip_auth_methods[{j}]"),
                    m,
                    "not an HTTP method",
                ),
            }
        }
        let health_check = r.health_check.map(|h| {
            let hk = |f: &str| format!("routes[{i}].health_check.{f}");
            let path = h.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                self.invalid(&hk("path"), &path, "must start with `/`");
            }
            let threshold = |v: &mut Self, f: &str, n: Option<i64>, d: usize| match n {
                None => d,
                Some(n) if (1..=100).contains(&n) => n as usize,
                Some(n) => {
                    v.invalid(&hk(f), &n.to_string(), "must be between 1 and 100");
                    d
                }
            };
            HealthCheckConfig {
                interval: self.duration(&hk("interval"), h.interval.as_deref(), "5s"),
                timeout: self.duration(&hk("timeout"), h.timeout.as_deref(), "2s"),
                healthy_threshold: threshold(self, "healthy_threshold", h.healthy_threshold, 2),
                unhealthy_threshold: threshold(
                    self,
                    "unhealthy_threshold",
                    h.unhealthy_threshold,
                    3,
                ),
                path,
            }
        });
        let auth = match r.auth.as_deref() {
            None | Some("login") => AuthKind::Login,
            Some("public") => AuthKind::Public,
            Some("api") => AuthKind::Api,
            Some(other) => {
                self.invalid(&k("auth"), other, "expected `login`, `api` or `public`");
                AuthKind::Login
            }
        };
        if r.pass_authorization.is_some() && auth != AuthKind::Public {
            self.err(k("pass_authorization"), "only applies to `auth = \"public\"` routes (`login` routes inject the session's token, `api` routes forward the client's)");
        }
        if r.accept_bearer.is_some() && auth != AuthKind::Login {
            self.err(k("accept_bearer"), "only applies to `auth = \"login\"` routes (`api` routes always take Bearer tokens)");
        }
        let loopwise = self.route_schools(&k("loopwise"), r.loopwise, auth, school_names);
        let ca_file = self.path(&k("ca_file"), r.ca_file.as_deref(), true);
        let connect_timeout =
            self.duration(&k("connect_timeout"), r.connect_timeout.as_deref(), "5s");
        let read_timeout = self.duration(&k("read_timeout"), r.read_timeout.as_deref(), "60s");
        if health_check.is_some() && urls.is_empty() {
            self.err(k("health_check"), "needs an upstream to check");
        }
        if urls.len() == upstreams.len() {
            if auth == AuthKind::Public
                && !(scopes.is_empty() && roles.is_empty() && schools.is_empty())
            {
                self.err(
                    k("auth"),
                    "a public route cannot require scopes, roles or schools",
                );
            }
            return Some(RouteConfig {
                name,
                host,
                path,
                upstreams,
                rewrite,
                requirements: Requirements {
                    scopes,
                    roles,
                    schools,
                },
                skip_auth_methods,
                health_check,
                auth,
                strip_prefix: r.strip_prefix.unwrap_or(false),
                preserve_host: r.preserve_host.unwrap_or(true),
                ca_file,
                connect_timeout,
                read_timeout,
                accept_bearer: r.accept_bearer.unwrap_or(false),
                allow_path_params: r.allow_path_params.unwrap_or(false),
                case_insensitive: r.case_insensitive.unwrap_or(false),
                pass_authorization: r.pass_authorization.unwrap_or(false),
                loopwise,
            });
        }
        None
    }

    /// The schools a route accepts: those its `loopwise` key names, or the only one. A
    /// `public` route authenticates no one, so it names none.
    fn route_schools(
        &mut self,
        key: &str,
        raw: Option<raw::RawNames>,
        auth: AuthKind,
        schools: &[&str],
    ) -> Vec<String> {
        let names = match raw {
            None => Vec::new(),
            Some(raw::RawNames::One(n)) => vec![n],
            Some(raw::RawNames::Many(ns)) => ns,
        };
        if auth == AuthKind::Public {
            if !names.is_empty() {
                self.err(
                    key,
                    "a public route authenticates no one, so it names no school",
                );
            }
            return Vec::new();
        }
        if names.is_empty() {
            return match schools {
                [only] => vec![only.to_string()],
                [] => Vec::new(),
                _ => {
                    self.err(
                        key,
                        format!(
                            "is required: there are several schools ({}), name the one(s) this route accepts",
                            schools.join(", ")
                        ),
                    );
                    Vec::new()
                }
            };
        }
        let mut out: Vec<String> = Vec::new();
        for n in names {
            if !schools.contains(&n.as_str()) {
                self.invalid(
                    key,
                    &n,
                    format!(
                        "no [[loopwise]] school has this name (there are: {})",
                        schools.join(", ")
                    ),
                );
            } else if out.contains(&n) {
                self.invalid(key, &n, "is named twice");
            } else {
                out.push(n);
            }
        }
        out
    }

    pub(super) fn upstream(&mut self, key: &str, value: &str) -> Option<Upstream> {
        let u = match url::Url::parse(value) {
            Ok(u) => u,
            Err(e) => {
                self.invalid(key, value, e);
                return None;
            }
        };
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            _ => {
                self.invalid(key, value, "must be http:// or https://");
                return None;
            }
        };
        let Some(host) = u.host_str() else {
            self.invalid(key, value, "has no host");
            return None;
        };
        if u.path() != "/"
            || u.query().is_some()
            || u.fragment().is_some()
            || !u.username().is_empty()
        {
            self.invalid(
                key,
                value,
                "must be scheme://host[:port] only (no path, query or credentials)",
            );
            return None;
        }
        Some(Upstream {
            tls,
            host: host.trim_matches(['[', ']']).to_string(),
            port: u
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
        })
    }
}
