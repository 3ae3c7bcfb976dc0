//! `[session]`: the cookie, its secrets and lifetimes.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

use super::super::raw;
use super::Validator;
use crate::config::{SessionConfig, SessionStoreKind, MIN_SESSION_SECRET_BYTES};

impl Validator<'_> {
    pub(super) fn session(&mut self, raw: raw::RawSession, secure: bool) -> Option<SessionConfig> {
        let mut secrets = Vec::new();
        match raw.secrets {
            None => self.err(
                "session.secrets",
                "is required: base64 of at least 32 random bytes, e.g. [{ env = \"LOOPGATE_SESSION_SECRET\" }] (generate with: head -c 32 /dev/urandom | base64)",
            ),
            Some(list) if list.is_empty() => self.err("session.secrets", "must list at least one secret"),
            Some(list) => {
                for (i, src) in list.iter().enumerate() {
                    let key = format!("session.secrets[{i}]");
                    match src.resolve(self.env, self.base_dir) {
                        Err(e) => self.err(&key, e.to_string()),
                        Ok(s) => match decode_session_secret(s.expose()) {
                            Ok(bytes) => secrets.push(bytes),
                            Err(e) => self.err(&key, e.to_string()),
                        },
                    }
                }
            }
        }
        let name = raw.cookie_name.unwrap_or_else(|| "loopgate_session".into());
        let name_ok = !name.is_empty()
            && !name.starts_with("__")
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            self.invalid(
                "session.cookie_name",
                &name,
                "letters, digits, `_` and `-` only, not starting with `__` (the __Host- prefix is added for https)",
            );
        }
        let lifetime = self.duration("session.lifetime", raw.lifetime.as_deref(), "7d");
        let refresh_before = self.duration(
            "session.refresh_before",
            raw.refresh_before.as_deref(),
            "60s",
        );
        let refresh_grace =
            self.duration("session.refresh_grace", raw.refresh_grace.as_deref(), "5m");
        let cookie_name = if secure {
            format!("__Host-{name}")
        } else {
            name
        };
        let store = match raw.store.as_deref().unwrap_or("cookie") {
            "cookie" => SessionStoreKind::Cookie,
            "redis" => SessionStoreKind::Redis,
            other => {
                self.invalid("session.store", other, "expected \"cookie\" or \"redis\"");
                SessionStoreKind::Cookie
            }
        };
        (!secrets.is_empty()).then_some(SessionConfig {
            secrets,
            cookie_name,
            lifetime,
            refresh_before,
            refresh_grace,
            store,
        })
    }
}

/// A session secret is base64 (standard or URL-safe, padded or not) of ≥ 32 bytes.
pub fn decode_session_secret(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(s).ok())
        .ok_or_else(|| {
            "is not base64 (generate one with: head -c 32 /dev/urandom | base64)".to_string()
        })?;
    if bytes.len() < MIN_SESSION_SECRET_BYTES {
        return Err(format!(
            "decodes to {} bytes; at least {MIN_SESSION_SECRET_BYTES} random bytes are required",
            bytes.len()
        ));
    }
    Ok(bytes)
}
