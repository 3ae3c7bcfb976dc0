//! The per-request authentication and authorization decision for a matched route, shared
//! by the proxy path and forward-auth (`{prefix}/auth`). It decides; `render.rs` answers.

use super::denial::{Audience, Authenticated, Credential, Decision, Denial, Granted, TokenProblem};
use super::{BearerAuth, Gateway, RequestView, SessionAuth};
use crate::config::AuthKind;
use crate::routes::Route;

impl Gateway {
    /// Authenticates and authorizes `view` for `route`.
    pub async fn authorize(&self, route: &Route, view: &RequestView<'_>, now: u64) -> Decision {
        let rc = &route.config;
        if rc.auth == AuthKind::Public {
            return allow(None, Vec::new(), Granted::Public);
        }
        if rc.skip_auth_methods.contains(view.method) {
            return allow(None, Vec::new(), Granted::SkipAuth);
        }
        let use_bearer = rc.auth == AuthKind::Api
            || (rc.accept_bearer && view.headers.contains_key(http::header::AUTHORIZATION));
        if use_bearer {
            // An API client: JSON answers whatever its `Accept` says.
            let deny = |denial| Decision::Deny {
                denial,
                audience: Audience::Api,
            };
            return match self
                .authenticate_bearer(view.headers, &rc.loopwise, now)
                .await
            {
                BearerAuth::Valid { info, token, .. } => match rc.requirements.check(
                    &info.scope,
                    &info.identity.roles,
                    &info.identity.school,
                ) {
                    Ok(()) => allow(
                        Some(Authenticated {
                            identity: info.identity,
                            scope: info.scope,
                            token,
                        }),
                        Vec::new(),
                        Granted::Bearer,
                    ),
                    Err(missing) => deny(Denial::Forbidden {
                        missing,
                        via: Credential::Bearer,
                    }),
                },
                BearerAuth::Missing => deny(Denial::InvalidToken(TokenProblem::Missing)),
                BearerAuth::Invalid => deny(Denial::InvalidToken(TokenProblem::Invalid)),
                BearerAuth::Unavailable => deny(Denial::LoopwiseUnavailable),
            };
        }
        let deny = |denial| Decision::Deny {
            denial,
            audience: Audience::of(view.is_navigation()),
        };
        match self
            .authenticate_session(view.headers, &rc.loopwise, now)
            .await
        {
            SessionAuth::Active {
                session,
                set_cookies,
            } => {
                let s = *session;
                match rc
                    .requirements
                    .check(&s.scope, &s.identity.roles, &s.identity.school)
                {
                    Ok(()) => allow(
                        Some(Authenticated {
                            identity: s.identity,
                            scope: s.scope,
                            token: s.access_token,
                        }),
                        set_cookies,
                        Granted::Session,
                    ),
                    Err(missing) => deny(Denial::Forbidden {
                        missing,
                        via: Credential::Session {
                            identity: Box::new(s.identity),
                            set_cookies,
                        },
                    }),
                }
            }
            SessionAuth::Anonymous { clear } | SessionAuth::Ended { clear } => {
                deny(Denial::LoginRequired {
                    clear_cookies: clear,
                    schools: rc.loopwise.clone(),
                })
            }
            SessionAuth::LoopwiseDown => deny(Denial::LoopwiseUnavailable),
            SessionAuth::StoreDown => deny(Denial::SessionStoreUnavailable),
        }
    }
}

fn allow(auth: Option<Authenticated>, set_cookies: Vec<String>, granted: Granted) -> Decision {
    Decision::Allow {
        auth,
        set_cookies,
        granted,
    }
}
