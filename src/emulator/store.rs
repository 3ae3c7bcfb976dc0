//! The emulated authorization server's state and every decision it makes.
//!
//! Pure: no I/O, and the current time (`now`, Unix seconds) is always passed in, so each
//! strict rule is unit-testable and the in-process clock can be advanced by tests.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::error::{ErrorCode, OAuthError};
use super::params::Params;
use super::users::{self, DemoUser};
use crate::oauth::{pkce, scope};
use crate::random;

/// How long a login/consent page stays usable.
pub const AUTHZ_REQUEST_TTL: u64 = 600;

/// Fixed facts about the emulated school and its lifetimes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub jwt_secret: Vec<u8>,
    pub access_token_ttl: u64,
    pub code_ttl: u64,
    pub school_id: u64,
    pub school_subdomain: String,
}

#[derive(Debug, Clone)]
pub struct Client {
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
    pub fn preregistered(id: &str, secret: Option<&str>, redirect_uri: &str) -> Client {
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
pub struct RegistrationRequest {
    pub client_name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RegistrationResponse {
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

/// A validated authorization request waiting for login and consent.
#[derive(Debug, Clone)]
pub struct AuthzRequest {
    pub id: String,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub code_challenge: String,
    /// Bound to the browser by a cookie and echoed by the forms (CSRF protection).
    pub csrf: String,
    pub user: Option<String>,
    pub created_at: u64,
}

/// How a failed authorization request is reported (RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show a page, never redirect.
    Page(OAuthError),
    /// Anything else: redirect back to the client with `error` and `state`.
    Redirect(String, OAuthError),
}

#[derive(Debug)]
struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    challenge: String,
    sub: String,
    issued_at: u64,
    used: bool,
    family: Option<u64>,
}

#[derive(Debug)]
struct Family {
    client_id: String,
    sub: String,
    scopes: Vec<String>,
    revoked: bool,
}

#[derive(Debug)]
struct RefreshRecord {
    family: u64,
    rotated: bool,
}

#[derive(Debug)]
struct AccessRecord {
    family: u64,
    revoked: bool,
    exp: u64,
}

/// The token endpoint's success body, fields exactly as Loopwise's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub scope: String,
    pub created_at: u64,
    pub school_id: u64,
    pub school_subdomain: String,
}

/// Claims of the HS256 access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub scope: String,
    pub school_id: u64,
    pub client_id: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// What a valid Bearer token stands for.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub user: &'static DemoUser,
    pub scopes: Vec<String>,
    pub client_id: String,
}

/// Things that happened inside an operation, for the stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    pub families_revoked: u64,
    pub tokens_revoked: u64,
}

pub struct Store {
    settings: Settings,
    clients: HashMap<String, Client>,
    requests: HashMap<String, AuthzRequest>,
    codes: HashMap<String, CodeRecord>,
    families: HashMap<u64, Family>,
    next_family: u64,
    refresh: HashMap<String, RefreshRecord>,
    access: HashMap<String, AccessRecord>,
    inserts_since_gc: u32,
}

impl Store {
    pub fn new(settings: Settings) -> Store {
        Store {
            settings,
            clients: HashMap::new(),
            requests: HashMap::new(),
            codes: HashMap::new(),
            families: HashMap::new(),
            next_family: 1,
            refresh: HashMap::new(),
            access: HashMap::new(),
            inserts_since_gc: 0,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Adds a client; a second `--client` with the same id adds a redirect URI.
    pub fn add_client(&mut self, client: Client) {
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
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.clients.get(id)
    }

    // ---- registration (RFC 7591) ----

    pub fn register(
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
    pub fn authenticate_client(&self, params: &Params) -> Result<&Client, OAuthError> {
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

    /// Validates an authorization request (RFC 6749 §4.1.1 + RFC 7636 §4.3) and records it.
    pub fn begin_authorize(
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
        let request = AuthzRequest {
            id: random::token(),
            client_id: client.id.clone(),
            client_name: client.name.clone(),
            redirect_uri: redirect_uri.to_string(),
            scopes,
            state,
            code_challenge: challenge.to_string(),
            csrf: random::token(),
            user: None,
            created_at: now,
        };
        self.gc(now);
        self.requests.insert(request.id.clone(), request.clone());
        Ok(request)
    }

    fn pending(&mut self, id: &str, csrf: &str, now: u64) -> Result<&mut AuthzRequest, OAuthError> {
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
    pub fn login(
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
    pub fn decide(
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
    pub fn auto_approve(&mut self, req: &AuthzRequest, sub: &str, now: u64) -> String {
        self.requests.remove(&req.id);
        self.issue_code(req, sub, now)
    }

    fn issue_code(&mut self, req: &AuthzRequest, sub: &str, now: u64) -> String {
        let code = random::token();
        self.codes.insert(
            code.clone(),
            CodeRecord {
                client_id: req.client_id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                scopes: req.scopes.clone(),
                challenge: req.code_challenge.clone(),
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

    /// `grant_type=authorization_code` for an already authenticated client.
    pub fn exchange_code(
        &mut self,
        client_id: &str,
        params: &Params,
        now: u64,
    ) -> Result<(TokenResponse, Effects), (OAuthError, Effects)> {
        let no = |e| (e, Effects::default());
        let code = params.require("code").map_err(no)?;
        let redirect_uri = params.require("redirect_uri").map_err(no)?;
        let verifier = params
            .get("code_verifier")
            .ok_or_else(|| no(OAuthError::invalid_request("missing code_verifier (PKCE)")))?;
        if !pkce::is_valid_verifier(verifier) {
            return Err(no(OAuthError::invalid_request(
                "code_verifier must be 43-128 unreserved characters",
            )));
        }
        let record = self
            .codes
            .get_mut(code)
            .ok_or_else(|| no(OAuthError::invalid_grant("unknown authorization code")))?;
        if record.used {
            // RFC 6749 §4.1.2: a replayed code revokes what was issued from it.
            let family = record.family;
            let mut fx = Effects::default();
            if let Some(f) = family {
                fx = self.revoke_family(f);
            }
            return Err((
                OAuthError::invalid_grant(
                    "authorization code was already used; tokens issued from it are revoked",
                ),
                fx,
            ));
        }
        // Single use: any presentation spends the code, even a failed one.
        record.used = true;
        if now >= record.issued_at + self.settings.code_ttl {
            return Err(no(OAuthError::invalid_grant("authorization code expired")));
        }
        if record.client_id != client_id {
            return Err(no(OAuthError::invalid_grant(
                "authorization code was issued to another client",
            )));
        }
        if record.redirect_uri != redirect_uri {
            return Err(no(OAuthError::invalid_grant(
                "redirect_uri differs from the one in the authorization request",
            )));
        }
        if !pkce::verify_s256(verifier, &record.challenge) {
            return Err(no(OAuthError::invalid_grant(
                "code_verifier does not match code_challenge",
            )));
        }
        let (sub, scopes) = (record.sub.clone(), record.scopes.clone());
        let family = self.next_family;
        self.next_family += 1;
        if let Some(r) = self.codes.get_mut(code) {
            r.family = Some(family);
        }
        self.families.insert(
            family,
            Family {
                client_id: client_id.to_string(),
                sub,
                scopes: scopes.clone(),
                revoked: false,
            },
        );
        let resp = self.mint(family, &scopes, now).map_err(no)?;
        Ok((resp, Effects::default()))
    }

    /// `grant_type=refresh_token` with strict rotation.
    pub fn refresh(
        &mut self,
        client_id: &str,
        params: &Params,
        now: u64,
    ) -> Result<(TokenResponse, Effects), (OAuthError, Effects)> {
        let no = |e| (e, Effects::default());
        let token = params.require("refresh_token").map_err(no)?;
        let record = self
            .refresh
            .get_mut(token)
            .ok_or_else(|| no(OAuthError::invalid_grant("unknown refresh token")))?;
        let family_id = record.family;
        if record.rotated {
            let fx = self.revoke_family(family_id);
            return Err((
                OAuthError::invalid_grant(
                    "refresh token was already used; the whole grant is revoked",
                ),
                fx,
            ));
        }
        let family = &self.families[&family_id];
        if family.revoked {
            return Err(no(OAuthError::invalid_grant("refresh token was revoked")));
        }
        if family.client_id != client_id {
            return Err(no(OAuthError::invalid_grant(
                "refresh token was issued to another client",
            )));
        }
        let scopes = match params.get("scope") {
            None => family.scopes.clone(),
            Some(s) => {
                let asked = scope::split(s);
                if asked.is_empty() || asked.iter().any(|a| !family.scopes.contains(a)) {
                    return Err(no(OAuthError::new(
                        ErrorCode::InvalidScope,
                        "a refresh may only narrow the original scope",
                    )));
                }
                asked
            }
        };
        if let Some(r) = self.refresh.get_mut(token) {
            r.rotated = true;
        }
        let resp = self.mint(family_id, &scopes, now).map_err(no)?;
        Ok((resp, Effects::default()))
    }

    fn mint(
        &mut self,
        family: u64,
        scopes: &[String],
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let f = &self.families[&family];
        let jti = random::token();
        let exp = now + self.settings.access_token_ttl;
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: f.sub.clone(),
            scope: scope::join(scopes),
            school_id: self.settings.school_id,
            client_id: f.client_id.clone(),
            iat: now,
            exp,
            jti: jti.clone(),
        };
        let access_token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.settings.jwt_secret),
        )
        .map_err(|_| OAuthError::invalid_request("could not sign the access token"))?;
        let refresh_token = random::token();
        self.gc(now);
        self.access.insert(
            jti,
            AccessRecord {
                family,
                revoked: false,
                exp,
            },
        );
        self.refresh.insert(
            refresh_token.clone(),
            RefreshRecord {
                family,
                rotated: false,
            },
        );
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.settings.access_token_ttl,
            refresh_token,
            scope: scope::join(scopes),
            created_at: now,
            school_id: self.settings.school_id,
            school_subdomain: self.settings.school_subdomain.clone(),
        })
    }

    fn revoke_family(&mut self, family: u64) -> Effects {
        match self.families.get_mut(&family) {
            Some(f) if !f.revoked => {
                f.revoked = true;
                Effects {
                    families_revoked: 1,
                    tokens_revoked: 0,
                }
            }
            _ => Effects::default(),
        }
    }

    /// Revokes every grant of user `sub` (what a school admin does when removing an app's
    /// access). Returns how many grants were revoked.
    pub fn revoke_user(&mut self, sub: &str) -> u64 {
        let ids: Vec<u64> = self
            .families
            .iter()
            .filter(|(_, f)| f.sub == sub && !f.revoked)
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .map(|id| self.revoke_family(*id).families_revoked)
            .sum()
    }

    // ---- revocation (RFC 7009) ----

    /// Revokes `token` if it belongs to `client_id`; unknown tokens are ignored (§2.2).
    /// A refresh token takes its whole grant with it (§2.1).
    pub fn revoke(&mut self, client_id: &str, token: &str, now: u64) -> Effects {
        if let Some(r) = self.refresh.get(token) {
            let family = r.family;
            if self.families.get(&family).map(|f| f.client_id.as_str()) == Some(client_id) {
                return self.revoke_family(family);
            }
            return Effects::default();
        }
        if let Ok(claims) = self.decode(token, now) {
            if claims.client_id == client_id {
                if let Some(a) = self.access.get_mut(&claims.jti) {
                    if !a.revoked {
                        a.revoked = true;
                        return Effects {
                            families_revoked: 0,
                            tokens_revoked: 1,
                        };
                    }
                }
            }
        }
        Effects::default()
    }

    // ---- resource side ----

    fn decode(&self, token: &str, now: u64) -> Result<AccessClaims, OAuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the emulator's own (advanceable) clock.
        v.validate_exp = false;
        v.required_spec_claims.clear();
        v.set_issuer(&[&self.settings.issuer]);
        let data = jsonwebtoken::decode::<AccessClaims>(
            token,
            &DecodingKey::from_secret(&self.settings.jwt_secret),
            &v,
        )
        .map_err(|_| OAuthError::invalid_token("the access token is malformed or not ours"))?;
        if now >= data.claims.exp {
            return Err(OAuthError::invalid_token("the access token expired"));
        }
        Ok(data.claims)
    }

    /// Validates a Bearer access token: signature, issuer, expiry, and revocation.
    pub fn authenticate_bearer(&self, token: &str, now: u64) -> Result<TokenInfo, OAuthError> {
        let claims = self.decode(token, now)?;
        let record = self
            .access
            .get(&claims.jti)
            .ok_or_else(|| OAuthError::invalid_token("unknown access token"))?;
        let family_revoked = self
            .families
            .get(&record.family)
            .map(|f| f.revoked)
            .unwrap_or(true);
        if record.revoked || family_revoked {
            return Err(OAuthError::invalid_token("the access token was revoked"));
        }
        let user = users::find(&claims.sub)
            .ok_or_else(|| OAuthError::invalid_token("the token's user no longer exists"))?;
        Ok(TokenInfo {
            user,
            scopes: scope::split(&claims.scope),
            client_id: claims.client_id,
        })
    }

    /// Forgets expired requests, codes and access tokens every few hundred inserts.
    /// Refresh tokens and families are kept for the process lifetime (about 100 bytes per
    /// login or refresh): a replay must be caught however late it comes.
    fn gc(&mut self, now: u64) {
        self.inserts_since_gc += 1;
        if self.inserts_since_gc < 256 {
            return;
        }
        self.inserts_since_gc = 0;
        let code_ttl = self.settings.code_ttl;
        self.requests
            .retain(|_, r| now < r.created_at + AUTHZ_REQUEST_TTL);
        // Keep used codes a while longer than their lifetime so replays are still detected.
        self.codes
            .retain(|_, c| now < c.issued_at + code_ttl.max(AUTHZ_REQUEST_TTL));
        self.access.retain(|_, a| now < a.exp);
    }
}

/// Grants the requested scopes that the client may have (RFC 6749 §3.3 allows a subset);
/// unknown scopes are an error, an empty request gets the client's default.
pub fn grant_scopes(asked: Option<&str>, allowed: &[String]) -> Result<Vec<String>, OAuthError> {
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

/// `uri` with `pairs` appended to its query, keeping any query it already has.
pub fn append_query(uri: &str, pairs: &[(&str, &str)]) -> String {
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

/// A short, printable excerpt of client input for error messages.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIRECT: &str = "http://127.0.0.1:8080/oauth2/callback";

    fn store() -> Store {
        let mut s = Store::new(Settings {
            issuer: "http://lw.test".into(),
            jwt_secret: b"secret-secret-secret-secret-1234".to_vec(),
            access_token_ttl: 100,
            code_ttl: 60,
            school_id: 7,
            school_subdomain: "demo".into(),
        });
        s.add_client(Client::preregistered("app", None, REDIRECT));
        s
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            ser.append_pair(k, v);
        }
        Params::parse(ser.finish().as_bytes())
    }

    fn authorize(s: &mut Store, verifier: &str, extra: &[(&str, &str)]) -> String {
        let challenge = pkce::challenge_s256(verifier);
        let mut p = vec![
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", REDIRECT),
            ("state", "st"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        p.extend_from_slice(extra);
        let req = s.begin_authorize(&params(&p), 1000).unwrap();
        let req = s.login(&req.id, &req.csrf, "grace", 1000).unwrap();
        let loc = s.decide(&req.id, &req.csrf, true, 1000).unwrap();
        let u = url::Url::parse(&loc).unwrap();
        let q: HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st");
        q["code"].clone()
    }

    fn exchange(
        s: &mut Store,
        code: &str,
        verifier: &str,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let p = params(&[
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ]);
        s.exchange_code("app", &p, now)
            .map(|r| r.0)
            .map_err(|e| e.0)
    }

    const V: &str = "a-verifier-that-is-long-enough-for-rfc-7636-rules";

    #[test]
    fn happy_path_then_rotation_and_replay() {
        let mut s = store();
        let code = authorize(&mut s, V, &[]);
        let t1 = exchange(&mut s, &code, V, 1001).unwrap();
        let info = s.authenticate_bearer(&t1.access_token, 1002).unwrap();
        assert_eq!(info.user.sub, "grace");
        let t2 = s
            .refresh(
                "app",
                &params(&[("refresh_token", &t1.refresh_token)]),
                1003,
            )
            .unwrap()
            .0;
        assert_ne!(t2.refresh_token, t1.refresh_token);
        let (e, fx) = s
            .refresh(
                "app",
                &params(&[("refresh_token", &t1.refresh_token)]),
                1004,
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidGrant);
        assert_eq!(fx.families_revoked, 1);
        assert!(s.authenticate_bearer(&t2.access_token, 1005).is_err());
        let e = s
            .refresh(
                "app",
                &params(&[("refresh_token", &t2.refresh_token)]),
                1006,
            )
            .unwrap_err()
            .0;
        assert_eq!(e.code, ErrorCode::InvalidGrant);
    }

    #[test]
    fn code_rules() {
        let mut s = store();
        let code = authorize(&mut s, V, &[]);
        let wrong = "b-verifier-that-is-long-enough-for-rfc-7636-rules";
        assert_eq!(
            exchange(&mut s, &code, wrong, 1001).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        // spent by the failed attempt
        assert!(exchange(&mut s, &code, V, 1001).is_err());

        let code = authorize(&mut s, V, &[]);
        assert!(
            exchange(&mut s, &code, V, 1060).is_err(),
            "expired at issued_at + ttl"
        );

        let code = authorize(&mut s, V, &[]);
        let t = exchange(&mut s, &code, V, 1001).unwrap();
        assert!(exchange(&mut s, &code, V, 1002).is_err());
        assert!(
            s.authenticate_bearer(&t.access_token, 1003).is_err(),
            "replay revokes"
        );
    }

    #[test]
    fn access_tokens_expire_on_the_emulator_clock() {
        let mut s = store();
        let code = authorize(&mut s, V, &[]);
        let t = exchange(&mut s, &code, V, 1000).unwrap();
        assert!(s.authenticate_bearer(&t.access_token, 1099).is_ok());
        assert!(s.authenticate_bearer(&t.access_token, 1100).is_err());
    }

    #[test]
    fn scope_is_granted_as_a_subset_and_unknown_scopes_fail() {
        let allowed = vec!["read".to_string(), "courses:read".to_string()];
        assert_eq!(
            grant_scopes(Some("read students:read"), &allowed).unwrap(),
            ["read"]
        );
        assert_eq!(
            grant_scopes(Some("read bogus"), &allowed).unwrap_err().code,
            ErrorCode::InvalidScope
        );
        assert_eq!(grant_scopes(None, &allowed).unwrap(), allowed);
    }

    #[test]
    fn untrusted_redirects_are_pages_not_redirects() {
        let mut s = store();
        let c = pkce::challenge_s256(V);
        let base = [
            ("response_type", "code"),
            ("client_id", "app"),
            ("code_challenge", c.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let mut p = base.to_vec();
        p.push(("redirect_uri", "http://evil.test/cb"));
        assert!(matches!(
            s.begin_authorize(&params(&p), 0),
            Err(AuthorizeError::Page(_))
        ));
        let mut p = base.to_vec();
        p.push(("redirect_uri", REDIRECT));
        p.push(("redirect_uri", REDIRECT));
        assert!(matches!(
            s.begin_authorize(&params(&p), 0),
            Err(AuthorizeError::Page(_))
        ));
        let mut p = base.to_vec();
        p[3] = ("code_challenge_method", "plain");
        p.push(("redirect_uri", REDIRECT));
        assert!(matches!(
            s.begin_authorize(&params(&p), 0),
            Err(AuthorizeError::Redirect(_, e)) if e.code == ErrorCode::InvalidRequest
        ));
    }

    #[test]
    fn csrf_and_expiry_guard_the_forms() {
        let mut s = store();
        let c = pkce::challenge_s256(V);
        let p = params(&[
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", c.as_str()),
            ("code_challenge_method", "S256"),
        ]);
        let req = s.begin_authorize(&p, 0).unwrap();
        assert!(s.login(&req.id, "forged", "ada", 0).is_err());
        assert!(
            s.decide(&req.id, &req.csrf, true, 0).is_err(),
            "no user yet"
        );
        assert!(s
            .login(&req.id, &req.csrf, "ada", AUTHZ_REQUEST_TTL)
            .is_err());
    }

    #[test]
    fn registration_validates_metadata() {
        let mut s = store();
        let req = |json: &str| serde_json::from_str::<RegistrationRequest>(json).unwrap();
        let e = s
            .register(req(r#"{"redirect_uris":["/relative"]}"#), 0)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRedirectUri);
        let e = s
            .register(req(r#"{"redirect_uris":["https://a.test/cb#frag"]}"#), 0)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRedirectUri);
        let e = s
            .register(
                req(r#"{"redirect_uris":["https://a.test/cb"],"grant_types":["password"]}"#),
                0,
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
        let ok = s
            .register(
                req(r#"{"redirect_uris":["https://a.test/cb"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"client_secret_post","scope":"read nope"}"#),
                0,
            )
            .unwrap();
        assert!(ok.client_secret.is_some());
        assert_eq!(ok.scope, "read");
        assert!(s.client(&ok.client_id).is_some());
    }
}
