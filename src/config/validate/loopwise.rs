//! `[loopwise]` / `[[loopwise]]`: each school's name, issuer, client and scopes.

use super::super::raw;
use super::Validator;
use crate::config::LoopwiseConfig;
use crate::oauth::{scope, DEFAULT_SCHOOL};

impl Validator<'_> {
    /// Every school: one `[loopwise]` table (its name defaults to `default`) or an array
    /// of `[[loopwise]]` tables, each named. Names, issuers and registration files are
    /// unique, and no school's cookie name can be mistaken for another's chunk.
    pub(super) fn schools(&mut self, raw: Option<toml::Value>) -> Vec<LoopwiseConfig> {
        let tables: Vec<(String, toml::Value)> = match raw {
            None => vec![("loopwise".into(), toml::Value::Table(Default::default()))],
            Some(t @ toml::Value::Table(_)) => vec![("loopwise".into(), t)],
            Some(toml::Value::Array(items)) if !items.is_empty() => items
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("loopwise[{i}]"), t))
                .collect(),
            Some(toml::Value::Array(_)) => {
                self.err("loopwise", "needs at least one [[loopwise]] table");
                return Vec::new();
            }
            Some(other) => {
                self.err(
                    "loopwise",
                    format!(
                        "expected a [loopwise] table or [[loopwise]] tables, not a {}",
                        other.type_str()
                    ),
                );
                return Vec::new();
            }
        };
        let several = tables.len() > 1 || tables.first().is_some_and(|(k, _)| k != "loopwise");
        let mut out: Vec<LoopwiseConfig> = Vec::new();
        for (key, value) in tables {
            let mut unknown = Vec::new();
            let parsed: Result<raw::RawLoopwise, _> = serde_ignored::deserialize(value, |path| {
                unknown.push(super::super::key_path(&path))
            });
            for u in unknown {
                self.err(format!("{key}.{u}"), "unknown key");
            }
            let raw = match parsed {
                Ok(r) => r,
                Err(e) => {
                    self.err(&key, e.to_string().trim().replace('\n', " "));
                    continue;
                }
            };
            if let Some(school) = self.loopwise(&key, raw, several, &out) {
                out.push(school);
            }
        }
        out
    }

    /// One school under `key`; `earlier` are the valid schools before it.
    fn loopwise(
        &mut self,
        key: &str,
        raw: raw::RawLoopwise,
        several: bool,
        earlier: &[LoopwiseConfig],
    ) -> Option<LoopwiseConfig> {
        let k = |f: &str| format!("{key}.{f}");
        let name = match raw.name.clone() {
            None if several => {
                self.err(
                    k("name"),
                    "is required when there are several [[loopwise]] tables",
                );
                return None;
            }
            None => DEFAULT_SCHOOL.to_string(),
            Some(n) => {
                let ok = !n.is_empty()
                    && n.len() <= 32
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    self.invalid(
                        &k("name"),
                        &n,
                        "1-32 letters, digits, `_` and `-` (it becomes a cookie name and a metric label)",
                    );
                    return None;
                }
                if earlier.iter().any(|o| o.name == n) {
                    self.invalid(&k("name"), &n, "another school has this name");
                    return None;
                }
                // `{cookie}.north_1` is chunk 1 of school `north`'s session cookie.
                if let Some(o) = earlier
                    .iter()
                    .find(|o| chunk_of(&n, &o.name) || chunk_of(&o.name, &n))
                {
                    self.invalid(
                        &k("name"),
                        &n,
                        format!("its session cookie would read as a chunk of school `{}`'s (drop the `_<digits>` ending)", o.name),
                    );
                    return None;
                }
                n
            }
        };
        if let Some(d) = &raw.display_name {
            if d.trim().is_empty() || d.chars().any(char::is_control) {
                self.invalid(
                    &k("display_name"),
                    d,
                    "must be non-empty text without control characters",
                );
            }
        }
        let default_registration = if name == DEFAULT_SCHOOL {
            "loopgate-registration.json".to_string()
        } else {
            format!("loopgate-registration-{name}.json")
        };
        let issuer = match raw.issuer {
            None => {
                self.err(
                    k("issuer"),
                    "is required (the school's origin, e.g. https://demo.loopwise.com)",
                );
                None
            }
            Some(i) => self.issuer(&k("issuer"), &i),
        };
        if let Some(i) = &issuer {
            let host = url::Url::parse(i)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if i.starts_with("http://") && !loopback && !raw.allow_http.unwrap_or(false) {
                self.invalid(
                    &k("issuer"),
                    i,
                    format!(
                        "must be https (http is allowed for loopback addresses, or set {} = true)",
                        k("allow_http")
                    ),
                );
            }
        }
        if let Some(id) = &raw.client_id {
            if id.is_empty() || id.chars().any(|c| c.is_control() || c == ' ') {
                self.invalid(&k("client_id"), id, "must be a non-empty id without spaces");
            }
        }
        let client_secret = match &raw.client_secret {
            None => None,
            Some(src) => {
                if raw.client_id.is_none() {
                    self.err(
                        k("client_secret"),
                        format!(
                            "needs {} (dynamically registered clients are public)",
                            k("client_id")
                        ),
                    );
                }
                match src.resolve(self.env, self.base_dir) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.err(k("client_secret"), e.to_string());
                        None
                    }
                }
            }
        };
        let scopes = raw.scopes.unwrap_or_else(|| vec!["read".into()]);
        if scopes.is_empty() {
            self.err(k("scopes"), "must list at least one scope");
        }
        for (i, s) in scopes.iter().enumerate() {
            if !scope::is_valid_token(s) {
                self.invalid(&format!("{key}.scopes[{i}]"), s, "not a scope token");
            }
        }
        let registration_file = self
            .path(
                &k("registration_file"),
                Some(
                    raw.registration_file
                        .as_deref()
                        .unwrap_or(&default_registration),
                ),
                false,
            )
            .unwrap_or_default();
        let timeout = self.duration(&k("timeout"), raw.timeout.as_deref(), "10s");
        let registration_check = self.duration_or_zero(
            &k("registration_check"),
            raw.registration_check.as_deref(),
            "5m",
        );
        let ca_file = self.path(&k("ca_file"), raw.ca_file.as_deref(), true);
        let jwt_secret = self.secret(
            &k("jwt_secret"),
            raw.jwt_secret.as_ref(),
            16,
            "is too short to be an HS256 secret (at least 16 bytes)",
        );
        let audience: Vec<String> = match raw.audience {
            None => Vec::new(),
            Some(raw::RawNames::One(a)) => vec![a],
            Some(raw::RawNames::Many(list)) => list,
        };
        for a in &audience {
            if a.trim().is_empty() {
                self.invalid(&k("audience"), a, "must not be empty");
            }
        }
        let school_id = match raw.school_id {
            None => None,
            Some(toml::Value::String(s)) if !s.is_empty() => Some(s),
            Some(toml::Value::Integer(n)) => Some(n.to_string()),
            Some(other) => {
                self.invalid(
                    &k("school_id"),
                    &other.to_string(),
                    "expected the school id, e.g. 4242",
                );
                None
            }
        };
        if let Some(i) = &issuer {
            if let Some(o) = earlier.iter().find(|o| o.issuer == *i) {
                self.invalid(
                    &k("issuer"),
                    i,
                    format!(
                        "school `{}` has this issuer (a token's `iss` must name one school)",
                        o.name
                    ),
                );
            }
        }
        if let Some(o) = earlier
            .iter()
            .find(|o| o.registration_file == registration_file)
        {
            self.err(
                k("registration_file"),
                format!(
                    "school `{}` registers in the same file; give each school its own",
                    o.name
                ),
            );
        }
        let defaults = crate::oauth::claims::ClaimNames::default();
        let raw_claims = raw.claims.unwrap_or_default();
        let mut claim = |field: &str, v: Option<String>, default: String| match v {
            None => default,
            Some(c) if !c.is_empty() && !c.chars().any(char::is_control) => c,
            Some(c) => {
                self.invalid(&k(&format!("claims.{field}")), &c, "must be a claim name");
                default
            }
        };
        let claims = crate::oauth::claims::ClaimNames {
            roles: claim("roles", raw_claims.roles, defaults.roles),
            school: claim("school", raw_claims.school, defaults.school),
            email: claim("email", raw_claims.email, defaults.email),
            name: claim("name", raw_claims.name, defaults.name),
        };
        let mut authorize_params = Vec::new();
        for (name, value) in raw.authorize_params.unwrap_or_default() {
            const OURS: [&str; 8] = [
                "response_type",
                "client_id",
                "redirect_uri",
                "scope",
                "state",
                "code_challenge",
                "code_challenge_method",
                "nonce",
            ];
            if OURS.contains(&name.as_str()) {
                self.invalid(
                    &k("authorize_params"),
                    &name,
                    "the gateway sets this parameter itself (scopes go in `scopes`)",
                );
            } else {
                authorize_params.push((name, value));
            }
        }
        Some(LoopwiseConfig {
            opaque_tokens: raw.opaque_tokens.unwrap_or(false),
            claims,
            authorize_params,
            display_name: raw.display_name.unwrap_or_else(|| name.clone()),
            name,
            issuer: issuer?,
            client_id: raw.client_id,
            client_secret,
            scopes,
            registration_file,
            client_name: raw.client_name.unwrap_or_else(|| "Loopgate".into()),
            registration_check,
            timeout,
            ca_file,
            jwt_secret,
            school_id,
            audience,
        })
    }
}

impl Validator<'_> {
    /// An issuer: an http(s) URL with a host and maybe a path (`https://idp/realms/x`),
    /// no query, fragment or credentials; a trailing `/` is dropped.
    fn issuer(&mut self, key: &str, value: &str) -> Option<String> {
        let u = match url::Url::parse(value) {
            Ok(u) => u,
            Err(e) => {
                self.invalid(key, value, e);
                return None;
            }
        };
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            self.invalid(key, value, "must be an http:// or https:// URL with a host");
            return None;
        }
        if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
            self.invalid(
                key,
                value,
                "must be the issuer URL only (no query, fragment or credentials)",
            );
            return None;
        }
        Some(value.trim_end_matches('/').to_string())
    }
}

/// Whether `name` is `other` followed by `_<digits>` (how cookie chunks are named).
fn chunk_of(name: &str, other: &str) -> bool {
    name.strip_prefix(other)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}
