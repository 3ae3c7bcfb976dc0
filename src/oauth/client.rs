//! The Loopwise OAuth client: authorize URL, code exchange, refresh, revoke, userinfo,
//! ID tokens, logout and re-registration. Requests are built and answers parsed by pure
//! functions (`answers.rs`, `metadata.rs`); only [`HttpClient::execute`] touches the
//! network, so everything else is unit-tested.

use std::sync::{Arc, Mutex, OnceLock};

pub use super::answers::{parse_token, parse_userinfo, TokenSet};
use super::claims::ClaimNames;
use super::error::parse_json;
pub use super::error::LoopwiseError;
use super::http::{HttpClient, HttpRequest, HttpResponse};
use super::id_token::{self, IdTokenError};
pub use super::metadata::{discover, Metadata};
use crate::secret::Secret;
use crate::session::Identity;

/// What discovery and registration yield: the endpoints and the client id.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub metadata: Metadata,
    pub client_id: String,
}

/// A registered OAuth client of one Loopwise school. It may start *pending* (Loopwise
/// was unreachable at start-up): then every call fails as transient until a background
/// task resolves it, while sessions whose tokens are still valid keep working.
#[derive(Clone)]
pub struct LoopwiseClient {
    http: Arc<dyn HttpClient>,
    issuer: String,
    resolved: Arc<OnceLock<Resolved>>,
    /// Why it is still pending (the last discovery error), for /readyz and errors.
    pending_reason: Arc<Mutex<String>>,
    client_secret: Option<Secret>,
    /// Byte-identical in the authorize and token requests (Loopwise compares them exactly).
    pub redirect_uri: String,
    /// Which claims name email, name, roles and school.
    claims: ClaimNames,
    /// Extra authorize parameters (`prompt`, `resource`, …), in order.
    authorize_params: Vec<(String, String)>,
    /// The provider's signing keys, fetched when an ID token first needs them.
    jwks: Arc<Mutex<Option<Arc<jsonwebtoken::jwk::JwkSet>>>>,
    /// A client id registered again after the server forgot the first (see
    /// [`LoopwiseClient::reregister`]); every clone sees it.
    reissued: Arc<arc_swap::ArcSwapOption<String>>,
    /// Where and how the client registered itself (`None`: a configured client id).
    registration: Option<Arc<RegistrationSpec>>,
}

/// What a dynamically registered client needs to register again.
#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    pub file: std::path::PathBuf,
    pub client_name: String,
    /// When it last registered again (unix seconds; 0: never), so a storm of
    /// `invalid_client` answers re-registers once.
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl RegistrationSpec {
    pub fn new(file: std::path::PathBuf, client_name: String) -> RegistrationSpec {
        RegistrationSpec {
            file,
            client_name,
            last: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for LoopwiseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopwiseClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id())
            .field("confidential", &self.client_secret.is_some())
            .finish()
    }
}

impl LoopwiseClient {
    /// A client whose metadata and client id are known.
    pub fn new(
        http: Arc<dyn HttpClient>,
        metadata: Metadata,
        client_id: String,
        client_secret: Option<Secret>,
        redirect_uri: String,
    ) -> Self {
        let c = Self::pending(
            http,
            metadata.issuer.clone(),
            client_secret,
            redirect_uri,
            String::new(),
        );
        c.resolve(Resolved {
            metadata,
            client_id,
        });
        c
    }

    /// A client still waiting for Loopwise's metadata; `reason` says why.
    pub fn pending(
        http: Arc<dyn HttpClient>,
        issuer: String,
        client_secret: Option<Secret>,
        redirect_uri: String,
        reason: String,
    ) -> Self {
        LoopwiseClient {
            http,
            issuer,
            resolved: Arc::new(OnceLock::new()),
            pending_reason: Arc::new(Mutex::new(reason)),
            client_secret,
            redirect_uri,
            claims: ClaimNames::default(),
            authorize_params: Vec::new(),
            jwks: Arc::new(Mutex::new(None)),
            reissued: Arc::new(arc_swap::ArcSwapOption::empty()),
            registration: None,
        }
    }

    /// The same client, registered dynamically as `spec` says (so it can heal).
    pub fn with_registration(mut self, spec: RegistrationSpec) -> Self {
        self.registration = Some(Arc::new(spec));
        self
    }

    /// The server says it does not know this client (`invalid_client`): when the client
    /// registered itself, register again (at most once a minute, however many requests
    /// hit it) and use the new id from now on. `Ok(None)`: not a registered client, or it
    /// re-registered less than a minute ago.
    pub async fn reregister(
        &self,
        now: u64,
    ) -> Result<Option<String>, super::registration::RegistrationError> {
        let Some(spec) = &self.registration else {
            return Ok(None);
        };
        let r = self.ready()?;
        let last = spec.last.load(std::sync::atomic::Ordering::Relaxed);
        if last != 0 && now < last + 60 {
            return Ok(None);
        }
        if spec
            .last
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_err()
        {
            return Ok(None);
        }
        let reg = super::registration::register(
            self.http.as_ref(),
            &r.metadata,
            &spec.client_name,
            &self.redirect_uri,
            &spec.file,
            now,
        )
        .await?;
        self.reissued.store(Some(Arc::new(reg.client_id.clone())));
        Ok(Some(reg.client_id))
    }

    /// Whether the school says it forgot this client's registration (RFC 7592 read of the
    /// stored one). `false` for a configured client, one without management credentials,
    /// or a school that cannot be asked: only a clear "unknown" counts.
    pub async fn registration_forgotten(&self) -> bool {
        let (Some(spec), Ok(r)) = (&self.registration, self.ready()) else {
            return false;
        };
        let Some(stored) =
            super::registration::load(&spec.file, &r.metadata.issuer, &self.redirect_uri)
        else {
            return false;
        };
        !super::registration::still_known(self.http.as_ref(), &stored).await
    }

    /// Whether this client registered itself (and so can register again).
    pub fn is_registered_dynamically(&self) -> bool {
        self.registration.is_some()
    }

    /// The same client reading identity from `claims` and sending `authorize_params`.
    pub fn with_options(
        mut self,
        claims: ClaimNames,
        authorize_params: Vec<(String, String)>,
    ) -> Self {
        self.claims = claims;
        self.authorize_params = authorize_params;
        self
    }

    /// Whether the client authenticates with a secret (a public client cannot, at most
    /// introspection endpoints).
    pub fn is_confidential(&self) -> bool {
        self.client_secret.is_some()
    }

    /// The claim names identity is read with.
    pub fn claim_names(&self) -> &ClaimNames {
        &self.claims
    }

    /// Completes a pending client (every clone sees it); later calls are ignored.
    pub fn resolve(&self, r: Resolved) {
        let _ = self.resolved.set(r);
    }

    /// Records why a pending client is still pending.
    pub fn set_pending_reason(&self, reason: String) {
        *self
            .pending_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// `None` once resolved; otherwise why not.
    pub fn pending_reason(&self) -> Option<String> {
        match self.resolved.get() {
            Some(_) => None,
            None => Some(
                self.pending_reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn metadata(&self) -> Option<&Metadata> {
        self.resolved.get().map(|r| &r.metadata)
    }

    pub fn client_id(&self) -> Option<String> {
        self.resolved.get().map(|r| self.current_id(r))
    }

    /// The metadata and client id, or a transient error while they are not loaded.
    fn ready(&self) -> Result<&Resolved, LoopwiseError> {
        self.resolved.get().ok_or_else(|| {
            LoopwiseError::Unreachable(format!(
                "metadata not loaded yet: {}",
                self.pending_reason().unwrap_or_default()
            ))
        })
    }

    /// The authorization URL for one login (PKCE S256 always).
    pub fn authorize_url(
        &self,
        state: &str,
        code_challenge: &str,
        scopes: &[String],
        nonce: Option<&str>,
    ) -> Result<String, LoopwiseError> {
        let r = self.ready()?;
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("response_type", "code")
            .append_pair("client_id", &self.current_id(r))
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", state)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(n) = nonce {
            ser.append_pair("nonce", n);
        }
        for (k, v) in &self.authorize_params {
            ser.append_pair(k, v);
        }
        let endpoint = &r.metadata.authorization_endpoint;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        Ok(format!("{endpoint}{sep}{}", ser.finish()))
    }

    /// A form to `url` with `pairs` and the client's authentication (`client_secret_post`).
    fn client_form(&self, r: &Resolved, url: &str, pairs: &[(&str, &str)]) -> HttpRequest {
        let id = self.current_id(r);
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        all.push(("client_id", &id));
        if let Some(s) = &self.client_secret {
            all.push(("client_secret", s.expose()));
        }
        HttpRequest::form(url, &all)
    }

    /// The client id in use: the one resolved at start-up, or the one a re-registration
    /// replaced it with.
    fn current_id(&self, r: &Resolved) -> String {
        match self.reissued.load_full() {
            Some(id) => id.as_ref().clone(),
            None => r.client_id.clone(),
        }
    }

    pub fn code_request(&self, code: &str, verifier: &str) -> Result<HttpRequest, LoopwiseError> {
        let r = self.ready()?;
        let pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        Ok(self.client_form(r, &r.metadata.token_endpoint, &pairs))
    }

    pub fn refresh_request(&self, refresh_token: &str) -> Result<HttpRequest, LoopwiseError> {
        let r = self.ready()?;
        let pairs = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        Ok(self.client_form(r, &r.metadata.token_endpoint, &pairs))
    }

    /// `None` when Loopwise offers no revocation endpoint.
    pub fn revoke_request(
        &self,
        token: &str,
        hint: &str,
    ) -> Result<Option<HttpRequest>, LoopwiseError> {
        let r = self.ready()?;
        let Some(endpoint) = r.metadata.revocation_endpoint.as_ref() else {
            return Ok(None);
        };
        let pairs = vec![("token", token), ("token_type_hint", hint)];
        Ok(Some(self.client_form(r, endpoint, &pairs)))
    }

    /// RFC 7662 introspection; `None` when the metadata advertises no endpoint.
    pub fn introspection_request(&self, token: &str) -> Result<Option<HttpRequest>, LoopwiseError> {
        let r = self.ready()?;
        let Some(endpoint) = r.metadata.introspection_endpoint.as_ref() else {
            return Ok(None);
        };
        let pairs = vec![("token", token), ("token_type_hint", "access_token")];
        Ok(Some(self.client_form(r, endpoint, &pairs)))
    }

    /// Sends a request built elsewhere (e.g. introspection), classifying transport errors.
    pub async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, LoopwiseError> {
        self.send(req).await
    }

    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, LoopwiseError> {
        self.http
            .execute(req)
            .await
            .map_err(|e| LoopwiseError::Unreachable(e.0))
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<TokenSet, LoopwiseError> {
        parse_token(&self.send(self.code_request(code, verifier)?).await?)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, LoopwiseError> {
        parse_token(&self.send(self.refresh_request(refresh_token)?).await?)
    }

    pub async fn userinfo(&self, access_token: &str) -> Result<Identity, LoopwiseError> {
        let url = self
            .ready()?
            .metadata
            .userinfo_url()
            .ok_or(LoopwiseError::Unsupported("userinfo endpoint"))?;
        let req = HttpRequest::get(url).bearer(access_token);
        parse_userinfo(&self.send(req).await?, &self.claims)
    }

    /// Verifies an ID token of this login (`nonce`) against the provider's keys (fetched
    /// once, and again once if the token's key is not among them: a key rotation) or,
    /// for HS256, the client secret. Returns its claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
        now: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, IdTokenFailure> {
        let r = self.ready()?;
        let client_id = self.current_id(r);
        let expected = id_token::Expected {
            issuer: &self.issuer,
            client_id: &client_id,
            nonce,
            now,
        };
        let secret = self.client_secret.as_ref().map(|s| s.expose());
        let (_, alg) = id_token::header(token)?;
        let symmetric = matches!(
            alg,
            jsonwebtoken::Algorithm::HS256
                | jsonwebtoken::Algorithm::HS384
                | jsonwebtoken::Algorithm::HS512
        );
        if symmetric {
            return Ok(id_token::verify(token, None, secret, &expected)?);
        }
        for attempt in 0..2 {
            let cached = self.jwks.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let keys = match cached {
                Some(k) if attempt == 0 => k,
                _ => self.fetch_jwks(r).await?,
            };
            match id_token::verify(token, Some(&keys), secret, &expected) {
                Err(IdTokenError::UnknownKey) if attempt == 0 => continue,
                other => return Ok(other?),
            }
        }
        Err(IdTokenError::UnknownKey.into())
    }

    async fn fetch_jwks(
        &self,
        r: &Resolved,
    ) -> Result<Arc<jsonwebtoken::jwk::JwkSet>, LoopwiseError> {
        let url = r.metadata.jwks_uri.as_ref().ok_or_else(|| {
            LoopwiseError::Malformed("an id_token came but the metadata has no jwks_uri".into())
        })?;
        let set: jsonwebtoken::jwk::JwkSet =
            parse_json(&self.send(HttpRequest::get(url.clone())).await?)?;
        let set = Arc::new(set);
        *self.jwks.lock().unwrap_or_else(|p| p.into_inner()) = Some(set.clone());
        Ok(set)
    }

    /// OpenID Connect RP-initiated logout: where to send the browser to end its session
    /// at the provider, back to `post_logout_redirect_uri`. `None` when not offered.
    pub fn end_session_url(
        &self,
        id_token: &str,
        post_logout_redirect_uri: &str,
    ) -> Option<String> {
        let r = self.resolved.get()?;
        let endpoint = r.metadata.end_session_endpoint.as_ref()?;
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("id_token_hint", id_token)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri)
            .append_pair("client_id", &self.current_id(r));
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        Some(format!("{endpoint}{sep}{}", q.finish()))
    }

    /// RFC 7009 revocation; Loopwise answers 200 whatever the token's state.
    pub async fn revoke(&self, token: &str, hint: &str) -> Result<(), LoopwiseError> {
        let Some(req) = self.revoke_request(token, hint)? else {
            return Ok(());
        };
        let resp = self.send(req).await?;
        if resp.status == 200 {
            Ok(())
        } else {
            parse_json::<serde_json::Value>(&resp).map(|_| ())
        }
    }
}

/// Why an ID token could not be accepted: the provider could not be asked for its keys,
/// or the token itself is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenFailure {
    #[error(transparent)]
    Loopwise(#[from] LoopwiseError),
    #[error(transparent)]
    Invalid(#[from] IdTokenError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::http::TransportError;
    use async_trait::async_trait;
    use std::sync::Mutex;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    fn meta() -> Metadata {
        Metadata {
            revocation_endpoint: Some("https://lw.test/api/oauth/revoke".into()),
            ..Metadata::fixture()
        }
    }

    type Answer = Box<dyn Fn(&HttpRequest) -> Result<HttpResponse, TransportError> + Send + Sync>;

    /// A closure-backed HttpClient that records requests.
    struct Mock {
        seen: Mutex<Vec<HttpRequest>>,
        answer: Answer,
    }

    #[async_trait]
    impl HttpClient for Mock {
        async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
            let r = (self.answer)(&req);
            self.seen.lock().unwrap().push(req);
            r
        }
    }

    fn client(
        answer: impl Fn(&HttpRequest) -> Result<HttpResponse, TransportError> + Send + Sync + 'static,
        secret: Option<&str>,
    ) -> (LoopwiseClient, Arc<Mock>) {
        let mock = Arc::new(Mock {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(answer),
        });
        let c = LoopwiseClient::new(
            mock.clone(),
            meta(),
            "cid".into(),
            secret.map(Secret::new),
            "https://gw.test/oauth2/callback".into(),
        );
        (c, mock)
    }

    fn form_of(req: &HttpRequest) -> Vec<(String, String)> {
        form_urlencoded::parse(&req.body).into_owned().collect()
    }

    #[tokio::test]
    async fn a_pending_client_fails_transiently_until_resolved() {
        let mock = Arc::new(Mock {
            seen: Mutex::new(Vec::new()),
            answer: Box::new(|_| unreachable!("nothing is sent while pending")),
        });
        let c = LoopwiseClient::pending(
            mock.clone(),
            "https://lw.test".into(),
            None,
            "https://gw.test/oauth2/callback".into(),
            "connection refused".into(),
        );
        let e = c.authorize_url("st", "ch", &[], None).unwrap_err();
        assert!(matches!(e, LoopwiseError::Unreachable(ref m) if m.contains("connection refused")));
        assert!(!e.is_fatal(), "a pending client must not end sessions");
        assert!(matches!(
            c.refresh("rt").await,
            Err(LoopwiseError::Unreachable(_))
        ));
        assert!(matches!(
            c.userinfo("at").await,
            Err(LoopwiseError::Unreachable(_))
        ));
        assert_eq!(c.pending_reason().as_deref(), Some("connection refused"));
        // Clones share the outcome: the background task resolves the gateway's copy.
        c.clone().resolve(Resolved {
            metadata: meta(),
            client_id: "cid".into(),
        });
        assert_eq!(c.pending_reason(), None);
        assert!(c
            .authorize_url("st", "ch", &[], None)
            .unwrap()
            .contains("client_id=cid"));
    }

    #[test]
    fn authorize_url_carries_pkce_and_exact_redirect() {
        let (c, _) = client(|_| unreachable!(), None);
        let url = c
            .authorize_url("st", "ch", &["read".into(), "courses:read".into()], None)
            .unwrap();
        let u = url::Url::parse(&url).unwrap();
        let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("redirect_uri"), Some("https://gw.test/oauth2/callback"));
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(get("code_challenge"), Some("ch"));
        assert_eq!(get("scope"), Some("read courses:read"));
        assert!(!url.contains("verifier"));
    }

    #[tokio::test]
    async fn code_exchange_sends_the_same_redirect_uri_and_secret_post() {
        let (c, mock) = client(
            |_| {
                Ok(resp(
                    200,
                    r#"{"access_token":"a","token_type":"Bearer","expires_in":7200,"refresh_token":"r","scope":"read"}"#,
                ))
            },
            Some("s3cret"),
        );
        let t = c.exchange_code("the-code", "the-verifier").await.unwrap();
        assert_eq!(t.expires_in, Some(7200));
        let seen = mock.seen.lock().unwrap();
        let f = form_of(&seen[0]);
        assert!(f.contains(&("redirect_uri".into(), c.redirect_uri.clone())));
        assert!(f.contains(&("client_secret".into(), "s3cret".into())));
        assert!(f.contains(&("code_verifier".into(), "the-verifier".into())));
        assert!(!format!("{t:?}").contains("\"a\""));
    }

    #[tokio::test]
    async fn failures_are_classified_by_type() {
        let cases: Vec<(Result<HttpResponse, TransportError>, bool, &str)> = vec![
            (
                Ok(resp(
                    400,
                    r#"{"error":"invalid_grant","error_description":"x"}"#,
                )),
                true,
                "refused",
            ),
            (
                Ok(resp(401, r#"{"error":"invalid_client"}"#)),
                true,
                "refused",
            ),
            (
                Ok(resp(400, r#"{"error":"invalid_request"}"#)),
                false,
                "refused",
            ),
            (Ok(resp(503, "down")), false, "unavailable"),
            (Ok(resp(429, "")), false, "unavailable"),
            (Ok(resp(200, "<html>")), false, "malformed"),
            (
                Ok(resp(200, r#"{"access_token":"a","token_type":"mac"}"#)),
                false,
                "malformed",
            ),
            (Err(TransportError("refused".into())), false, "unreachable"),
        ];
        for (answer, fatal, kind) in cases {
            let (c, _) = client(move |_| answer.clone(), None);
            let e = c.refresh("rt").await.unwrap_err();
            assert_eq!(e.is_fatal(), fatal, "{e:?}");
            let actual = match e {
                LoopwiseError::Refused { .. } => "refused",
                LoopwiseError::Unavailable(_) => "unavailable",
                LoopwiseError::Malformed(_) => "malformed",
                LoopwiseError::Unreachable(_) => "unreachable",
                LoopwiseError::Unsupported(_) => "unsupported",
            };
            assert_eq!(actual, kind);
        }
    }

    #[test]
    fn metadata_issuer_must_match() {
        let body = r#"{"issuer":"https://evil.test","authorization_endpoint":"a","token_endpoint":"t","code_challenge_methods_supported":["S256"]}"#;
        assert!(Metadata::parse(&resp(200, body), "https://lw.test").is_err());
        let body = r#"{"issuer":"https://lw.test","authorization_endpoint":"a","token_endpoint":"t","code_challenge_methods_supported":["plain"]}"#;
        assert!(Metadata::parse(&resp(200, body), "https://lw.test").is_err());
        let body = r#"{"issuer":"https://lw.test","authorization_endpoint":"a","token_endpoint":"t","code_challenge_methods_supported":["S256"]}"#;
        let m = Metadata::parse(&resp(200, body), "https://lw.test").unwrap();
        assert_eq!(
            m.userinfo_url(),
            None,
            "not Loopwise's token path: no userinfo"
        );
        let body = r#"{"issuer":"https://lw.test","authorization_endpoint":"a","token_endpoint":"https://lw.test/api/oauth/token","code_challenge_methods_supported":["S256"]}"#;
        let m = Metadata::parse(&resp(200, body), "https://lw.test").unwrap();
        assert_eq!(
            m.userinfo_url().as_deref(),
            Some("https://lw.test/api/oauth/userinfo"),
            "a Loopwise school: its documented path"
        );
        let body = r#"{"issuer":"https://op.test","authorization_endpoint":"a","token_endpoint":"t","userinfo_endpoint":"https://op.test/me","code_challenge_methods_supported":["S256"]}"#;
        let m = Metadata::parse(&resp(200, body), "https://op.test").unwrap();
        assert_eq!(m.userinfo_url().as_deref(), Some("https://op.test/me"));
    }

    #[test]
    fn userinfo_accepts_numeric_ids() {
        let id = parse_userinfo(
            &resp(
                200,
                r#"{"sub":42,"name":"N","email":"e","org_id":4242,"roles":["teacher"]}"#,
            ),
            &ClaimNames::default(),
        )
        .unwrap();
        assert_eq!((id.sub.as_str(), id.school.as_str()), ("42", "4242"));
        assert!(parse_userinfo(&resp(200, r#"{"sub":""}"#), &ClaimNames::default()).is_err());
    }

    #[tokio::test]
    async fn userinfo_4xx_is_refused_and_5xx_transient() {
        for (status, body) in [
            (400, ""),
            (401, ""),
            (403, "<html>forbidden</html>"),
            (404, "not found"),
            (414, ""),
            (403, r#"{"error":"insufficient_scope"}"#),
        ] {
            let (c, _) = client(move |_| Ok(resp(status, body)), None);
            let e = c.userinfo("at").await.unwrap_err();
            assert!(
                matches!(e, LoopwiseError::Refused { .. }),
                "{status}: {e:?}"
            );
            assert!(!e.is_fatal(), "{status}");
        }
        let (c, _) = client(|_| Ok(resp(403, r#"{"error":"insufficient_scope"}"#)), None);
        assert!(matches!(c.userinfo("at").await,
            Err(LoopwiseError::Refused { code, .. }) if code == "insufficient_scope"));
        for status in [429, 500, 503] {
            let (c, _) = client(move |_| Ok(resp(status, "")), None);
            assert_eq!(
                c.userinfo("at").await.unwrap_err(),
                LoopwiseError::Unavailable(status)
            );
        }
    }

    #[test]
    fn metadata_is_looked_for_where_rfc_8414_and_openid_connect_put_it() {
        assert_eq!(
            Metadata::urls("https://idp.example/realms/x"),
            [
                "https://idp.example/.well-known/oauth-authorization-server/realms/x".to_string(),
                "https://idp.example/realms/x/.well-known/openid-configuration".to_string(),
            ]
        );
        assert_eq!(
            Metadata::urls("http://127.0.0.1:8081"),
            [
                "http://127.0.0.1:8081/.well-known/oauth-authorization-server".to_string(),
                "http://127.0.0.1:8081/.well-known/openid-configuration".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn discovery_falls_back_to_openid_configuration_only_when_the_first_is_absent() {
        let body = r#"{"issuer":"https://idp.example/realms/x","authorization_endpoint":"https://idp.example/a",
            "token_endpoint":"https://idp.example/t","code_challenge_methods_supported":["S256"],
            "authorization_response_iss_parameter_supported":true,"jwks_uri":"https://idp.example/k"}"#;
        for (first, falls_back) in [(404, true), (400, true), (503, false), (200, false)] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let seen2 = seen.clone();
            let http = Mock {
                seen: Mutex::new(Vec::new()),
                answer: Box::new(move |req: &HttpRequest| {
                    seen2.lock().unwrap().push(req.url.clone());
                    Ok(
                        if req.url.contains("openid-configuration") || first == 200 {
                            resp(200, body)
                        } else {
                            resp(first, "nope")
                        },
                    )
                }),
            };
            let got = discover(&http, "https://idp.example/realms/x").await;
            let asked = seen.lock().unwrap().len();
            if falls_back {
                let m = got.unwrap();
                assert!(m.authorization_response_iss_parameter_supported);
                assert_eq!(m.jwks_uri.as_deref(), Some("https://idp.example/k"));
                assert_eq!(asked, 2, "{first}");
            } else {
                assert_eq!(
                    asked, 1,
                    "{first}: a transient answer is not a missing document"
                );
                assert_eq!(got.is_ok(), first == 200);
            }
        }
    }

    #[test]
    fn userinfo_roles_may_be_one_string_and_claim_names_configured() {
        let id = parse_userinfo(
            &resp(200, r#"{"sub":"a","roles":"teacher","org_id":"9"}"#),
            &ClaimNames::default(),
        )
        .unwrap();
        assert_eq!(id.roles, ["teacher"]);
        let names = ClaimNames {
            school: "school_code".into(),
            ..ClaimNames::default()
        };
        let id = parse_userinfo(&resp(200, r#"{"sub":"a","school_code":"N1"}"#), &names).unwrap();
        assert_eq!(id.school, "N1");
    }
}
