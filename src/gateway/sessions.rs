//! Browser sessions, one per school: each school's session lives in its own cookie, so a
//! browser can be signed in at two schools at once and a route only ever reads the
//! cookies of the schools it accepts.

use http::HeaderMap;

use super::{outcome_name, Found, Gateway, SaveError, SessionAuth};
use crate::session::{cookies, Session};
use crate::token::refresh::{needs_refresh, RefreshOutcome};

impl Gateway {
    /// The session cookie of `school` (`None` for a school this gateway does not serve).
    pub(super) fn session_cookie_name(&self, school: &str) -> Option<&str> {
        self.tenant(school).map(|t| t.cookie_name.as_str())
    }

    /// Every live session the request's cookies carry, one per school, in the order of
    /// the configured schools. Every failure is "no session" for that school.
    pub async fn sessions(&self, headers: &HeaderMap, now: u64) -> Vec<Session> {
        let mut out = Vec::new();
        for school in self.schools.iter() {
            if let Found::Session(s, _) = self.lookup_session(&school.id, headers, now).await {
                out.push(*s);
            }
        }
        out
    }

    /// Ends every session the request carries (sign-out): each removed from the store and
    /// recorded as ended, so every copy of its cookie is "no session" from now on.
    pub async fn end_sessions(&self, headers: &HeaderMap, now: u64) -> Vec<Session> {
        let mut ended = Vec::new();
        for school in self.schools.iter() {
            let Found::Session(session, payload) =
                self.lookup_session(&school.id, headers, now).await
            else {
                continue;
            };
            self.shared
                .revoked
                .end(&session.sid, session.expires_at, now)
                .await;
            if let Err(e) = self.shared.store.remove(&payload).await {
                tracing::warn!(error = %e, school = %school.id, "sign-out could not remove the session from the store");
            }
            ended.push(*session);
        }
        ended
    }

    /// The store payload the request's cookie for `school` carries, if it opens.
    fn current_payload(&self, school: &str, headers: &HeaderMap) -> Option<Vec<u8>> {
        let name = self.session_cookie_name(school)?;
        let fields = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let jar = cookies::parse(fields);
        let sealed = cookies::read_chunked(&jar, name)?;
        self.session_keys.open(name, &sealed).ok()
    }

    async fn lookup_session(&self, school: &str, headers: &HeaderMap, now: u64) -> Found {
        let Some(payload) = self.current_payload(school, headers) else {
            return Found::Nothing;
        };
        match self.shared.store.load(&payload, now).await {
            // The cookie of school A holds only A's sessions; anything else is no session.
            Ok(Some(s))
                if self
                    .schools
                    .get(&s.issuer_id)
                    .is_some_and(|s| s.id == school)
                    && !self.shared.revoked.is_ended(&s.sid, now).await =>
            {
                Found::Session(Box::new(s), payload)
            }
            Ok(_) => Found::Nothing,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable; treating as no session");
                Found::StoreDown
            }
        }
    }

    /// The session of a request for a route accepting `schools` (the first of them the
    /// browser has a live session of), refreshed first when its access token is (nearly)
    /// expired. One refresh per session and refresh token, however many requests race.
    /// Sessions of other schools are neither read nor touched.
    pub async fn authenticate_session(
        &self,
        headers: &HeaderMap,
        schools: &[String],
        now: u64,
    ) -> SessionAuth {
        let mut clear = Vec::new();
        let mut found = None;
        for school in schools {
            match self.lookup_session(school, headers, now).await {
                Found::Session(s, _) => {
                    found = Some(*s);
                    break;
                }
                Found::StoreDown => return SessionAuth::StoreDown,
                Found::Nothing => {
                    let attrs = self.session_attrs();
                    clear.extend(
                        self.existing_session_cookie_names(school, headers)
                            .iter()
                            .map(|n| cookies::clear(n, &attrs)),
                    );
                }
            }
        }
        let Some(mut session) = found else {
            return SessionAuth::Anonymous { clear };
        };
        let Some(school) = self.schools.get(&session.issuer_id) else {
            return SessionAuth::Anonymous { clear: Vec::new() };
        };
        let school_name = school.id.as_str();
        let client = &school.client;
        let before = self.config.session.refresh_before;
        // A remembered refresh result can itself be due (a very late pre-refresh cookie):
        // follow the chain a couple of steps at most, but call Loopwise once at most.
        let mut refreshed = false;
        for _ in 0..3 {
            if !needs_refresh(&session, now, before) {
                break;
            }
            let attempt = self.shared.refresh.refresh(client, &session, now).await;
            if attempt.performed {
                let outcome = outcome_name(&attempt.outcome);
                self.shared
                    .metrics
                    .refresh
                    .with_label_values(&[outcome, school_name])
                    .inc();
                tracing::info!(sub = %crate::wire::headers::sanitize(&session.identity.sub), school = %school_name, outcome, "refresh");
            } else {
                self.shared.metrics.refresh_coalesced.inc();
            }
            match attempt.outcome.as_ref() {
                RefreshOutcome::Refreshed(new) => {
                    session = new.as_ref().clone();
                    refreshed = true;
                    if attempt.performed {
                        break;
                    }
                }
                RefreshOutcome::Ended => {
                    return SessionAuth::Ended {
                        clear: self.clear_session_cookies(school_name, headers),
                    }
                }
                RefreshOutcome::ClientUnknown => {
                    // So that the login this user is sent to works at once.
                    if attempt.performed {
                        super::heal::reregister(self, school, now).await;
                    }
                    return SessionAuth::Ended {
                        clear: self.clear_session_cookies(school_name, headers),
                    };
                }
                RefreshOutcome::Unavailable { .. } => break,
            }
        }
        if session.access_expires_at <= now {
            return if session.refresh_token.is_some() {
                SessionAuth::LoopwiseDown
            } else {
                SessionAuth::Ended {
                    clear: self.clear_session_cookies(school_name, headers),
                }
            };
        }
        let set_cookies = if refreshed {
            match self.session_cookies(&session, headers, now).await {
                Ok(c) => c,
                // Signed out or revoked while the refresh was in flight.
                Err(SaveError::Store(crate::session::StoreError::Ended)) => {
                    return SessionAuth::Ended {
                        clear: self.clear_session_cookies(school_name, headers),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store the refreshed session");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        SessionAuth::Active {
            session: Box::new(session),
            set_cookies,
        }
    }

    /// Deletions of `school`'s session cookies the request carries (at least the head).
    pub(super) fn clear_session_cookies(&self, school: &str, headers: &HeaderMap) -> Vec<String> {
        let attrs = self.session_attrs();
        let existing = self.existing_session_cookie_names(school, headers);
        match (existing.is_empty(), self.session_cookie_name(school)) {
            (true, Some(name)) => vec![cookies::clear(name, &attrs)],
            _ => existing.iter().map(|n| cookies::clear(n, &attrs)).collect(),
        }
    }

    /// Deletions of every school's session cookies the request carries.
    pub(super) fn clear_all_session_cookies(&self, headers: &HeaderMap) -> Vec<String> {
        let attrs = self.session_attrs();
        let mut out: Vec<String> = self
            .schools
            .iter()
            .flat_map(|s| self.existing_session_cookie_names(&s.id, headers))
            .map(|n| cookies::clear(&n, &attrs))
            .collect();
        if out.is_empty() {
            out = self.clear_session_cookies(&self.schools.first().id, headers);
        }
        out
    }

    /// `Set-Cookie` values that store `session` in its school's cookie, replacing
    /// whatever the browser has there.
    pub async fn session_cookies(
        &self,
        session: &Session,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Vec<String>, SaveError> {
        let school = self
            .schools
            .get(&session.issuer_id)
            .map(|s| s.id.clone())
            .ok_or(SaveError::UnknownSchool)?;
        let name = self
            .session_cookie_name(&school)
            .ok_or(SaveError::UnknownSchool)?;
        let previous = self.current_payload(&school, headers);
        let payload = self.shared.store.save(session, previous.as_deref()).await?;
        let sealed = self.session_keys.seal(name, &payload);
        let existing = self.existing_session_cookie_names(&school, headers);
        let max_age = session.expires_at.saturating_sub(now);
        cookies::set_chunked(name, &sealed, &self.session_attrs(), max_age, &existing)
            .ok_or(SaveError::TooLarge)
    }

    fn existing_session_cookie_names(&self, school: &str, headers: &HeaderMap) -> Vec<String> {
        let Some(name) = self.session_cookie_name(school) else {
            return Vec::new();
        };
        let fields = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let jar = cookies::parse(fields);
        cookies::present_names(&jar, name)
    }
}
