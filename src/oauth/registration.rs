//! Dynamic client registration (RFC 7591) and its persistence, so a gateway without a
//! configured `client_id` registers once and reuses the result across restarts.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::client::{LoopwiseError, Metadata};
use super::http::{HttpClient, HttpRequest};

/// What is persisted in `loopwise.registration_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub issuer: String,
    pub redirect_uri: String,
    pub client_id: String,
    pub registered_at: u64,
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
}

/// Reuses the stored registration or registers anew and stores it (atomically: a
/// temporary file renamed into place, so a crash never leaves half a file).
pub async fn ensure(
    http: &dyn HttpClient,
    meta: &Metadata,
    client_name: &str,
    redirect_uri: &str,
    path: &Path,
    now: u64,
) -> Result<Registration, RegistrationError> {
    if let Some(r) = load(path, &meta.issuer, redirect_uri) {
        return Ok(r);
    }
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
    };
    let write_err = |source| RegistrationError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&r).expect("serialisable"))
        .map_err(write_err)?;
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
