//! Clients: pre-registered and dynamically registered (RFC 7591), their authentication
//! and the scopes they may be granted.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{printable, Store};
use crate::emulator::error::{ErrorCode, OAuthError};
use crate::emulator::params::Params;
use crate::oauth::scope;
use crate::random;

#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub id: String,
    pub secret: Option<String>,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// The scopes this client may be granted; anything else asked for is dropped.
    pub scopes: Vec<String>,
}

impl Client {
    /// A pre-registered client (from `--client`) that may use every scope and grant.
    pub(crate) fn preregistered(id: &str, secret: Option<&str>, redirect_uri: &str) -> Client {
        Client {
            id: id.to_string(),
            secret: secret.map(str::to_string),
            name: id.to_string(),
            redirect_uris: vec![redirect_uri.to_string()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scopes: scope::LOOPWISE_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// RFC 7591 registration request (unknown members are ignored, as §2 requires).
#[derive(Debug, Deserialize)]
pub(crate) struct RegistrationRequest {
    pub client_name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RegistrationResponse {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<u64>,
    pub client_id_issued_at: u64,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub scope: String,
}

impl Store {
    /// Adds a client; a second `--client` with the same id adds a redirect URI.
    pub(crate) fn add_client(&mut self, client: Client) {
        match self.clients.get_mut(&client.id) {
            Some(existing) => {
                for uri in client.redirect_uris {
                    if !existing.redirect_uris.contains(&uri) {
                        existing.redirect_uris.push(uri);
                    }
                }
            }
            None => {
                self.clients.insert(client.id.clone(), client);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn client(&self, id: &str) -> Option<&Client> {
        self.clients.get(id)
    }

    // ---- registration (RFC 7591) ----

    pub(crate) fn register(
        &mut self,
        req: RegistrationRequest,
        now: u64,
    ) -> Result<RegistrationResponse, OAuthError> {
        let meta = |d: &str| OAuthError::new(ErrorCode::InvalidClientMetadata, d);
        let redirect_uris = req.redirect_uris.unwrap_or_default();
        if redirect_uris.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                "redirect_uris must list at least one URI",
            ));
        }
        for uri in &redirect_uris {
            validate_redirect_uri(uri)?;
        }
        let grant_types = req
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".into()]);
        if grant_types.is_empty() {
            return Err(meta("grant_types must not be empty"));
        }
        for g in &grant_types {
            if g != "authorization_code" && g != "refresh_token" {
                return Err(meta(&format!(
                    "grant type `{}` is not supported",
                    printable(g)
                )));
            }
        }
        let response_types = req.response_types.unwrap_or_else(|| vec!["code".into()]);
        if response_types.iter().any(|r| r != "code") || response_types.is_empty() {
            return Err(meta("only the `code` response type is supported"));
        }
        if grant_types.iter().any(|g| g == "authorization_code")
            != response_types.iter().any(|r| r == "code")
        {
            return Err(meta(
                "grant_types and response_types disagree (RFC 7591 §2.1)",
            ));
        }
        let method = req
            .token_endpoint_auth_method
            .unwrap_or_else(|| "none".into());
        let confidential = match method.as_str() {
            "none" => false,
            "client_secret_post" => true,
            other => {
                return Err(meta(&format!(
                "token_endpoint_auth_method `{}` is not supported (use none or client_secret_post)",
                printable(other)
            )))
            }
        };
        let scopes = match req.scope.as_deref() {
            None => scope::LOOPWISE_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Some(s) => {
                let asked = scope::split(s);
                let granted: Vec<String> = asked
                    .into_iter()
                    .filter(|s| scope::LOOPWISE_SCOPES.contains(&s.as_str()))
                    .collect();
                if granted.is_empty() {
                    return Err(meta("none of the requested scopes is known"));
                }
                granted
            }
        };
        let name = req.client_name.unwrap_or_else(|| "unnamed client".into());
        if name.len() > 200 {
            return Err(meta("client_name is too long"));
        }
        let client = Client {
            id: format!("lw_{}", &random::token()[..22]),
            secret: confidential.then(random::token),
            name,
            redirect_uris,
            grant_types,
            scopes,
        };
        let resp = RegistrationResponse {
            client_id: client.id.clone(),
            client_secret: client.secret.clone(),
            client_secret_expires_at: client.secret.as_ref().map(|_| 0),
            client_id_issued_at: now,
            client_name: client.name.clone(),
            redirect_uris: client.redirect_uris.clone(),
            grant_types: client.grant_types.clone(),
            response_types,
            token_endpoint_auth_method: method,
            scope: scope::join(&client.scopes),
        };
        self.clients.insert(client.id.clone(), client);
        Ok(resp)
    }

    /// Authenticates a client at the token and revocation endpoints
    /// (`none` or `client_secret_post`).
    pub(crate) fn authenticate_client(&self, params: &Params) -> Result<&Client, OAuthError> {
        let id = params
            .get("client_id")
            .ok_or_else(|| OAuthError::invalid_client("missing client_id"))?;
        let client = self
            .clients
            .get(id)
            .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        match (&client.secret, params.get("client_secret")) {
            (None, None) => Ok(client),
            (None, Some(_)) => Err(OAuthError::invalid_client(
                "this public client must not send a client_secret",
            )),
            (Some(_), None) => Err(OAuthError::invalid_client(
                "client authentication required (client_secret_post)",
            )),
            (Some(expected), Some(given)) => {
                if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
                    Ok(client)
                } else {
                    Err(OAuthError::invalid_client("client authentication failed"))
                }
            }
        }
    }

    // ---- authorization endpoint ----
}

/// Grants the requested scopes that the client may have (RFC 6749 §3.3 allows a subset);
/// unknown scopes are an error, an empty request gets the client's default.
pub(crate) fn grant_scopes(
    asked: Option<&str>,
    allowed: &[String],
) -> Result<Vec<String>, OAuthError> {
    let asked = match asked {
        None => return Ok(allowed.to_vec()),
        Some(s) => scope::split(s),
    };
    if let Some(bad) = asked
        .iter()
        .find(|s| !scope::is_valid_token(s) || !scope::LOOPWISE_SCOPES.contains(&s.as_str()))
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            format!("unknown scope `{}`", printable(bad)),
        ));
    }
    let granted: Vec<String> = asked.into_iter().filter(|s| allowed.contains(s)).collect();
    if granted.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "none of the requested scopes is allowed for this client",
        ));
    }
    Ok(granted)
}

/// Registered redirect URIs: absolute http(s), no fragment (RFC 6749 §3.1.2).
fn validate_redirect_uri(uri: &str) -> Result<(), OAuthError> {
    let bad = |d: &str| {
        OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            format!("redirect URI `{}` {d}", printable(uri)),
        )
    };
    let parsed = url::Url::parse(uri).map_err(|_| bad("is not an absolute URI"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(bad("must use http or https"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("has no host"));
    }
    if uri.contains('#') {
        return Err(bad("must not contain a fragment"));
    }
    Ok(())
}
