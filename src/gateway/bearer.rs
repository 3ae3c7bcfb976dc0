//! Bearer tokens an API client brought, validated at the school they belong to: a JWT's
//! `iss` picks the school (a token of a school the route does not accept is refused
//! without asking anyone); an opaque token is tried at the route's schools only. Each
//! validation is cached under its school, so one school's verdict never answers for
//! another's.

use http::HeaderMap;

use super::{BearerAuth, Gateway, Tenant};
use crate::oauth::School;
use crate::token::cache::Lookup;
use crate::token::validate::{self, Verdict};

impl Gateway {
    /// Validates a client's Bearer token for a route accepting `schools` (cached; one
    /// validation per token and school at a time).
    pub async fn authenticate_bearer(
        &self,
        headers: &HeaderMap,
        schools: &[String],
        now: u64,
    ) -> BearerAuth {
        let token = match crate::wire::bearer::bearer_token(headers) {
            Ok(None) => return BearerAuth::Missing,
            Err(_) => return BearerAuth::Invalid,
            Ok(Some(t)) => t,
        };
        // Not even shaped like a token (a JWT of sane size, or an opaque token where the
        // school issues those): refused before the cache, so junk neither costs a call to
        // Loopwise nor fills the negative cache.
        let jwt = validate::plausible(token);
        let opaque = !jwt && validate::plausible_opaque(token);
        if !jwt && !opaque {
            return BearerAuth::Invalid;
        }
        // With one school there is no other for `iss` to pick: skip reading it (the
        // validation itself checks the issuer, or the school refuses what is not its own).
        let issuer_school = if self.schools.len() > 1 {
            validate::unverified_issuer(token)
                .and_then(|iss| self.schools.by_issuer(&iss).map(|s| s.id.clone()))
        } else {
            None
        };
        let candidates: Vec<&str> = match &issuer_school {
            Some(s) if schools.contains(s) => vec![s.as_str()],
            // Another school's token: never valid here, whatever that school says.
            Some(_) => return BearerAuth::Invalid,
            None => schools.iter().map(String::as_str).collect(),
        };
        let candidates: Vec<&str> = candidates
            .into_iter()
            .filter(|s| jwt || self.tenant(s).is_some_and(|t| t.opaque_tokens))
            .collect();
        let mut unavailable = false;
        for name in candidates {
            let (Some(school), Some(tenant)) = (self.schools.get(name), self.tenant(name)) else {
                continue;
            };
            match self.validate_at(school, tenant, token, now).await {
                Some(auth @ BearerAuth::Valid { .. }) => return auth,
                Some(BearerAuth::Unavailable) => unavailable = true,
                _ => {}
            }
        }
        if unavailable {
            BearerAuth::Unavailable
        } else {
            BearerAuth::Invalid
        }
    }

    /// One school's verdict on `token` (`None`: not valid there).
    async fn validate_at(
        &self,
        school: &School,
        tenant: &Tenant,
        token: &str,
        now: u64,
    ) -> Option<BearerAuth> {
        let result = self
            .token_cache
            .get(
                &school.id,
                token,
                now,
                validate::validate(&tenant.validation, &school.client, token, now),
            )
            .await;
        let lookup_label = match &result {
            Ok((_, Lookup::Hit)) => "hit",
            Ok((_, Lookup::NegativeHit)) => "negative_hit",
            Ok((_, Lookup::Miss)) => "miss",
            Err(_) => "error",
        };
        self.shared
            .metrics
            .token_cache_requests
            .with_label_values(&[lookup_label])
            .inc();
        match result {
            Ok((Verdict::Valid(info), lookup)) => {
                let school_ok = tenant
                    .school_id
                    .as_ref()
                    .is_none_or(|s| *s == info.identity.school);
                // A token for another API of the same school is not for this gateway.
                let audience_ok = tenant.audience.is_empty()
                    || info.audiences.iter().any(|a| tenant.audience.contains(a));
                (school_ok && audience_ok).then(|| BearerAuth::Valid {
                    info: Box::new(info),
                    token: token.to_string(),
                    lookup,
                })
            }
            Ok((Verdict::Invalid, _)) => None,
            Err(e) => {
                tracing::warn!(error = %e, school = %school.id, mode = tenant.validation.name(&school.client), "cannot validate a Bearer token: Loopwise unavailable");
                Some(BearerAuth::Unavailable)
            }
        }
    }
}
