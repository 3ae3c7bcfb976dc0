//! Dynamic client registration (RFC 7591) and its persistence, so a gateway without a
//! configured `client_id` registers once and reuses the result across restarts. RFC
//! 7592's `registration_access_token` and `registration_client_uri` are kept (the file
//! is private to the gateway's user), so a stored registration is checked at start-up
//! and registered again when the server has forgotten it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::LoopwiseError;
use super::http::{HttpClient, HttpRequest};
use super::metadata::Metadata;

/// What is persisted in `loopwise.registration_file`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub issuer: String,
    pub redirect_uri: String,
    pub client_id: String,
    pub registered_at: u64,
    /// RFC 7592: the Bearer that reads (or updates) this registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<String>,
    /// RFC 7592: where this registration can be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_client_uri: Option<String>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("registered_at", &self.registered_at)
            .field("manageable", &self.registration_access_token.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("Loopwise does not advertise a registration_endpoint; set loopwise.client_id")]
    NotSupported,
    #[error("dynamic registration failed: {0}")]
    Loopwise(#[from] LoopwiseError),
    #[error("cannot write the registration file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The stored registration, if it exists and still fits this issuer and redirect URI.
pub fn load(path: &Path, issuer: &str, redirect_uri: &str) -> Option<Registration> {
    let text = std::fs::read_to_string(path).ok()?;
    let r: Registration = serde_json::from_str(&text).ok()?;
    (r.issuer == issuer && r.redirect_uri == redirect_uri && !r.client_id.is_empty()).then_some(r)
}

pub fn request(meta: &Metadata, client_name: &str, redirect_uri: &str) -> Option<HttpRequest> {
    let endpoint = meta.registration_endpoint.as_ref()?;
    Some(HttpRequest::json(
        endpoint,
        &serde_json::json!({
            "client_name": client_name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }),
    ))
}

#[derive(Deserialize)]
struct Registered {
    client_id: String,
    #[serde(default)]
    registration_access_token: Option<String>,
    #[serde(default)]
    registration_client_uri: Option<String>,
}

/// Whether the server still knows a stored registration (RFC 7592 read). `true` when it
/// cannot tell (no management URI, or the server unreachable): only a clear "unknown"
/// (401, 403, 404) means it forgot.
pub async fn still_known(http: &dyn HttpClient, r: &Registration) -> bool {
    let (Some(uri), Some(token)) = (&r.registration_client_uri, &r.registration_access_token)
    else {
        return true;
    };
    match http
        .execute(HttpRequest::get(uri.clone()).bearer(token))
        .await
    {
        Ok(resp) => !matches!(resp.status, 401 | 403 | 404),
        Err(_) => true,
    }
}

/// Reuses the stored registration (when the server still knows it) or registers anew
/// and stores it.
pub async fn ensure(
    http: &dyn HttpClient,
    meta: &Metadata,
    client_name: &str,
    redirect_uri: &str,
    path: &Path,
    now: u64,
) -> Result<Registration, RegistrationError> {
    if let Some(r) = load(path, &meta.issuer, redirect_uri) {
        if still_known(http, &r).await {
            return Ok(r);
        }
        tracing::warn!(client_id = %r.client_id, issuer = %meta.issuer, "the school no longer knows the registered client; registering again");
    }
    register(http, meta, client_name, redirect_uri, path, now).await
}

/// Registers anew and stores the result (atomically: a temporary file, private to the
/// gateway's user, renamed into place, so a crash never leaves half a file).
pub async fn register(
    http: &dyn HttpClient,
    meta: &Metadata,
    client_name: &str,
    redirect_uri: &str,
    path: &Path,
    now: u64,
) -> Result<Registration, RegistrationError> {
    let req = request(meta, client_name, redirect_uri).ok_or(RegistrationError::NotSupported)?;
    let resp = http
        .execute(req)
        .await
        .map_err(|e| LoopwiseError::Unreachable(e.0))?;
    if resp.status >= 500 || resp.status == 429 {
        return Err(LoopwiseError::Unavailable(resp.status).into());
    }
    let reg: Registered = if (200..300).contains(&resp.status) {
        serde_json::from_slice(&resp.body)
            .map_err(|e| LoopwiseError::Malformed(format!("registration response: {e}")))?
    } else {
        let e: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        return Err(LoopwiseError::Refused {
            code: e["error"].as_str().unwrap_or("unknown_error").to_string(),
            description: e["error_description"].as_str().unwrap_or("").to_string(),
        }
        .into());
    };
    let r = Registration {
        issuer: meta.issuer.clone(),
        redirect_uri: redirect_uri.to_string(),
        client_id: reg.client_id,
        registered_at: now,
        registration_access_token: reg.registration_access_token,
        registration_client_uri: reg.registration_client_uri,
    };
    let write_err = |source| RegistrationError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write_err)?;
        f.write_all(&serde_json::to_vec_pretty(&r).expect("serialisable"))
            .map_err(write_err)?;
    }
    std::fs::rename(&tmp, path).map_err(write_err)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_registration_is_reused_only_for_the_same_issuer_and_redirect() {
        let dir = std::env::temp_dir().join(format!("lg-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        let r = Registration {
            issuer: "https://a".into(),
            redirect_uri: "https://gw/cb".into(),
            client_id: "c1".into(),
            registered_at: 1,
            registration_access_token: None,
            registration_client_uri: None,
        };
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(load(&path, "https://a", "https://gw/cb"), Some(r));
        assert_eq!(load(&path, "https://b", "https://gw/cb"), None);
        assert_eq!(load(&path, "https://a", "https://gw2/cb"), None);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(load(&path, "https://a", "https://gw/cb"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
