//! The authorization endpoint: validated requests, login and consent, codes.

use subtle::ConstantTimeEq;

use super::{grant_scopes, Store, AUTHZ_REQUEST_TTL};
use crate::emulator::error::{ErrorCode, OAuthError};
use crate::emulator::params::Params;
use crate::emulator::users::{self};
use crate::oauth::pkce;
use crate::random;

/// A validated authorization request waiting for login and consent.
#[derive(Debug, Clone)]
pub(crate) struct AuthzRequest {
    pub id: String,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub code_challenge: String,
    /// OpenID Connect's `nonce`, returned in the ID token.
    pub nonce: Option<String>,
    /// Bound to the browser by a cookie and echoed by the forms (CSRF protection).
    pub csrf: String,
    pub user: Option<String>,
    pub created_at: u64,
}

/// How a failed authorization request is reported (RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub(crate) enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show a page, never redirect.
    Page(OAuthError),
    /// Anything else: redirect back to the client with `error` and `state`.
    Redirect(String, OAuthError),
}

#[derive(Debug)]
pub(super) struct CodeRecord {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) scopes: Vec<String>,
    pub(super) challenge: String,
    pub(super) nonce: Option<String>,
    pub(super) sub: String,
    pub(super) issued_at: u64,
    pub(super) used: bool,
    pub(super) family: Option<u64>,
}

impl Store {
    /// Validates an authorization request (RFC 6749 §4.1.1 + RFC 7636 §4.3) and records it.
    pub(crate) fn begin_authorize(
        &mut self,
        params: &Params,
        now: u64,
    ) -> Result<AuthzRequest, AuthorizeError> {
        let page = |d: &str| AuthorizeError::Page(OAuthError::invalid_request(d));
        if params.is_bad("client_id") {
            return Err(page("client_id is repeated or too long"));
        }
        let client_id = params
            .get("client_id")
            .ok_or_else(|| page("missing client_id"))?;
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| AuthorizeError::Page(OAuthError::invalid_client("unknown client_id")))?;
        if params.is_bad("redirect_uri") {
            return Err(page("redirect_uri is repeated or too long"));
        }
        let redirect_uri = params
            .get("redirect_uri")
            .ok_or_else(|| page("missing redirect_uri"))?;
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(page(
                "redirect_uri does not match any URI registered for this client",
            ));
        }
        let state = params.get("state").map(str::to_string);
        let back = |e: OAuthError| {
            AuthorizeError::Redirect(error_redirect(redirect_uri, &e, state.as_deref()), e)
        };
        params.check().map_err(back)?;
        match params.get("response_type") {
            None => return Err(back(OAuthError::invalid_request("missing response_type"))),
            Some("code") => {}
            Some(_) => {
                return Err(back(OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                )))
            }
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return Err(back(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "client is not registered for the authorization_code grant",
            )));
        }
        let challenge = params.get("code_challenge").ok_or_else(|| {
            back(OAuthError::invalid_request(
                "code_challenge is required (PKCE S256)",
            ))
        })?;
        match params.get("code_challenge_method") {
            Some("S256") => {}
            None => {
                return Err(back(OAuthError::invalid_request(
                    "code_challenge_method=S256 is required",
                )))
            }
            Some(_) => {
                return Err(back(OAuthError::invalid_request(
                    "transform algorithm not supported: only S256",
                )))
            }
        }
        if !pkce::is_valid_s256_challenge(challenge) {
            return Err(back(OAuthError::invalid_request(
                "code_challenge must be 43 base64url characters",
            )));
        }
        let scopes = grant_scopes(params.get("scope"), &client.scopes).map_err(back)?;
        let nonce = params.get("nonce").map(str::to_string);
        let request = AuthzRequest {
            id: random::token(),
            client_id: client.id.clone(),
            client_name: client.name.clone(),
            redirect_uri: redirect_uri.to_string(),
            scopes,
            state,
            code_challenge: challenge.to_string(),
            nonce,
            csrf: random::token(),
            user: None,
            created_at: now,
        };
        self.gc(now);
        self.requests.insert(request.id.clone(), request.clone());
        Ok(request)
    }

    pub(super) fn pending(
        &mut self,
        id: &str,
        csrf: &str,
        now: u64,
    ) -> Result<&mut AuthzRequest, OAuthError> {
        let req = self
            .requests
            .get_mut(id)
            .filter(|r| now < r.created_at + AUTHZ_REQUEST_TTL)
            .ok_or_else(|| {
                OAuthError::invalid_request("this sign-in page has expired; start again")
            })?;
        if !bool::from(req.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(OAuthError::invalid_request(
                "the form does not belong to this browser (CSRF check failed)",
            ));
        }
        Ok(req)
    }

    /// The login form chose a demo user.
    pub(crate) fn login(
        &mut self,
        id: &str,
        csrf: &str,
        sub: &str,
        now: u64,
    ) -> Result<AuthzRequest, OAuthError> {
        let user = users::find(sub).ok_or_else(|| OAuthError::invalid_request("unknown user"))?;
        let req = self.pending(id, csrf, now)?;
        req.user = Some(user.sub.to_string());
        Ok(req.clone())
    }

    /// The consent form's decision; the request is used up either way.
    /// Returns where to send the browser.
    pub(crate) fn decide(
        &mut self,
        id: &str,
        csrf: &str,
        approve: bool,
        now: u64,
    ) -> Result<String, OAuthError> {
        let req = self.pending(id, csrf, now)?;
        let sub = req
            .user
            .clone()
            .ok_or_else(|| OAuthError::invalid_request("choose a user before consenting"))?;
        let req = self.requests.remove(id).expect("pending request exists");
        if !approve {
            let e = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
            return Ok(error_redirect(&req.redirect_uri, &e, req.state.as_deref()));
        }
        Ok(self.issue_code(&req, &sub, now))
    }

    /// `--auto-approve`: log `sub` in and approve at once.
    pub(crate) fn auto_approve(&mut self, req: &AuthzRequest, sub: &str, now: u64) -> String {
        self.requests.remove(&req.id);
        self.issue_code(req, sub, now)
    }

    pub(super) fn issue_code(&mut self, req: &AuthzRequest, sub: &str, now: u64) -> String {
        let code = random::token();
        self.codes.insert(
            code.clone(),
            CodeRecord {
                client_id: req.client_id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                scopes: req.scopes.clone(),
                challenge: req.code_challenge.clone(),
                nonce: req.nonce.clone(),
                sub: sub.to_string(),
                issued_at: now,
                used: false,
                family: None,
            },
        );
        let mut pairs = vec![("code", code.as_str())];
        if let Some(s) = req.state.as_deref() {
            pairs.push(("state", s));
        }
        append_query(&req.redirect_uri, &pairs)
    }

    // ---- token endpoint ----
}

/// `uri` with `pairs` appended to its query, keeping any query it already has.
pub(super) fn append_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        // Registered URIs were validated, so this only happens for a hand-added client.
        Err(_) => uri.to_string(),
    }
}

fn error_redirect(redirect_uri: &str, e: &OAuthError, state: Option<&str>) -> String {
    let mut pairs = vec![
        ("error", e.code.as_str()),
        ("error_description", e.description.as_str()),
    ];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    append_query(redirect_uri, &pairs)
}
