//! The token endpoint and tokens: code exchange, strict refresh rotation with families,
//! revocation and Bearer validation.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::openid::IdTokenFor;
use super::{Effects, Store};
use crate::emulator::error::{ErrorCode, OAuthError};
use crate::emulator::params::Params;
use crate::emulator::users::{self, DemoUser};
use crate::oauth::{pkce, scope};
use crate::random;

#[derive(Debug)]
pub(super) struct Family {
    pub(super) client_id: String,
    pub(super) sub: String,
    pub(super) scopes: Vec<String>,
    pub(super) revoked: bool,
}

#[derive(Debug)]
pub(super) struct RefreshRecord {
    pub(super) family: u64,
    pub(super) rotated: bool,
}

#[derive(Debug)]
pub(super) struct AccessRecord {
    pub(super) family: u64,
    pub(super) revoked: bool,
    pub(super) exp: u64,
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
    /// OpenID Connect (`--openid` and the `openid` scope granted), code exchanges only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
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
    /// Filler (`EmulatorConfig::access_token_padding`), absent by default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub padding: String,
}

/// What a valid Bearer token stands for.
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub user: &'static DemoUser,
    pub scopes: Vec<String>,
    pub client_id: String,
}

impl Store {
    /// `grant_type=authorization_code` for an already authenticated client.
    pub(crate) fn exchange_code(
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
        let (nonce, auth_time) = (record.nonce.clone(), record.issued_at);
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
        let mut resp = self.mint(family, &scopes, now).map_err(no)?;
        if let (Some(key), true) = (&self.settings.openid, scopes.iter().any(|s| s == "openid")) {
            let user = users::find(&self.families[&family].sub).ok_or_else(|| {
                no(OAuthError::invalid_grant(
                    "the code's user no longer exists",
                ))
            })?;
            resp.id_token = Some(
                key.id_token(&IdTokenFor {
                    issuer: &self.settings.issuer,
                    client_id,
                    user,
                    scopes: &scopes,
                    nonce: nonce.as_deref(),
                    auth_time,
                    now,
                    ttl: self.settings.access_token_ttl,
                })
                .map_err(no)?,
            );
        }
        Ok((resp, Effects::default()))
    }

    /// `grant_type=refresh_token` with strict rotation.
    pub(crate) fn refresh(
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

    pub(super) fn mint(
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
            padding: "p".repeat(self.settings.access_token_padding),
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
            id_token: None,
        })
    }

    pub(super) fn revoke_family(&mut self, family: u64) -> Effects {
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
    pub(crate) fn revoke_user(&mut self, sub: &str) -> u64 {
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
    pub(crate) fn revoke(&mut self, client_id: &str, token: &str, now: u64) -> Effects {
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

    pub(super) fn decode(&self, token: &str, now: u64) -> Result<AccessClaims, OAuthError> {
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
    pub(crate) fn authenticate_bearer(
        &self,
        token: &str,
        now: u64,
    ) -> Result<TokenInfo, OAuthError> {
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
}
