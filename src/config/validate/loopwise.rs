//! `[loopwise]`: the school's issuer, client and scopes.

use super::super::raw;
use super::Validator;
use crate::config::LoopwiseConfig;
use crate::oauth::scope;

impl Validator<'_> {
    pub(super) fn loopwise(&mut self, raw: raw::RawLoopwise) -> Option<LoopwiseConfig> {
        let issuer = match raw.issuer {
            None => {
                self.err(
                    "loopwise.issuer",
                    "is required (the school's origin, e.g. https://demo.loopwise.com)",
                );
                None
            }
            Some(i) => self.origin("loopwise.issuer", &i),
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
                    "loopwise.issuer",
                    i,
                    "must be https (http is allowed for loopback addresses, or set loopwise.allow_http = true)",
                );
            }
        }
        if let Some(id) = &raw.client_id {
            if id.is_empty() || id.chars().any(|c| c.is_control() || c == ' ') {
                self.invalid(
                    "loopwise.client_id",
                    id,
                    "must be a non-empty id without spaces",
                );
            }
        }
        let client_secret = match &raw.client_secret {
            None => None,
            Some(src) => {
                if raw.client_id.is_none() {
                    self.err(
                        "loopwise.client_secret",
                        "needs loopwise.client_id (dynamically registered clients are public)",
                    );
                }
                match src.resolve(self.env, self.base_dir) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.err("loopwise.client_secret", e.to_string());
                        None
                    }
                }
            }
        };
        let scopes = raw.scopes.unwrap_or_else(|| vec!["read".into()]);
        if scopes.is_empty() {
            self.err("loopwise.scopes", "must list at least one scope");
        }
        for (i, s) in scopes.iter().enumerate() {
            if !scope::is_valid_token(s) {
                self.invalid(&format!("loopwise.scopes[{i}]"), s, "not a scope token");
            }
        }
        let registration_file = self
            .path(
                "loopwise.registration_file",
                Some(
                    raw.registration_file
                        .as_deref()
                        .unwrap_or("loopgate-registration.json"),
                ),
                false,
            )
            .unwrap_or_default();
        let timeout = self.duration("loopwise.timeout", raw.timeout.as_deref(), "10s");
        let ca_file = self.path("loopwise.ca_file", raw.ca_file.as_deref(), true);
        let jwt_secret = self.secret(
            "loopwise.jwt_secret",
            raw.jwt_secret.as_ref(),
            16,
            "is too short to be an HS256 secret (at least 16 bytes)",
        );
        let audience = match raw.audience {
            Some(a) if a.trim().is_empty() => {
                self.invalid("loopwise.audience", &a, "must not be empty");
                None
            }
            a => a,
        };
        let school_id = match raw.school_id {
            None => None,
            Some(toml::Value::String(s)) if !s.is_empty() => Some(s),
            Some(toml::Value::Integer(n)) => Some(n.to_string()),
            Some(other) => {
                self.invalid(
                    "loopwise.school_id",
                    &other.to_string(),
                    "expected the school id, e.g. 4242",
                );
                None
            }
        };
        Some(LoopwiseConfig {
            issuer: issuer?,
            client_id: raw.client_id,
            client_secret,
            scopes,
            registration_file,
            client_name: raw.client_name.unwrap_or_else(|| "Loopgate".into()),
            timeout,
            ca_file,
            jwt_secret,
            school_id,
            audience,
        })
    }
}
