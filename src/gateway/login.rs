//! How a login starts: straight to the school's authorize endpoint when there is one
//! school to choose, or a chooser page listing the route's schools.

use super::Gateway;
use crate::gateway::reply::Reply;
use crate::html::escape;
use crate::login::state::{self, LoginState, LOGIN_TTL};
use crate::oauth::pkce;

impl Gateway {
    /// A 302 to `school`'s authorize endpoint, with this login's sealed state cookie.
    pub fn start_login(&self, school: &str, target: &str, now: u64) -> Reply {
        let target = crate::login::target::safe_target(target, &self.config.server.prefix)
            .unwrap_or_else(|| crate::login::target::DEFAULT_TARGET.to_string());
        let (Some(school), Some(tenant)) = (self.schools.get(school), self.tenant(school)) else {
            return unknown_school(school);
        };
        let state_value = crate::random::token();
        let verifier = pkce::Verifier::generate();
        // OpenID Connect when the school is asked for `openid`: a nonce binds the ID
        // token to this login.
        let nonce = if tenant.scopes.iter().any(|s| s == "openid") {
            crate::random::token()
        } else {
            String::new()
        };
        let url = match school.client.authorize_url(
            &state_value,
            &verifier.challenge(),
            &tenant.scopes,
            (!nonce.is_empty()).then_some(nonce.as_str()),
        ) {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, school = %school.id, "cannot start a login");
                return super::render::loopwise_down(true);
            }
        };
        let name = state::cookie_name(&self.login_cookie_base(), &state_value);
        let sealed = state::seal(
            &self.login_keys,
            &name,
            &LoginState {
                state: state_value,
                verifier: verifier.secret().to_string(),
                target,
                created_at: now,
                issuer_id: school.id.clone(),
                nonce,
            },
        );
        let cookie = format!("{name}={sealed}; {}", self.login_attrs().render(LOGIN_TTL));
        Reply::redirect(302, &url).cookies([cookie])
    }

    /// A browser that must sign in at one of `schools` to reach `target`: the login at
    /// the only one, or (several) a redirect to the chooser at `{prefix}/start`.
    pub(super) fn login_at(&self, schools: &[String], target: &str, now: u64) -> Reply {
        match schools {
            [only] => self.start_login(only, target, now),
            _ => Reply::redirect(302, &self.start_url(None, target)),
        }
    }

    /// `{prefix}/start?rd=…`: the chooser for `schools` (one: the login itself).
    pub(super) fn choose_school(&self, schools: &[String], target: &str, now: u64) -> Reply {
        if let [only] = schools {
            return self.start_login(only, target, now);
        }
        let items: String = schools
            .iter()
            .filter_map(|name| self.schools.get(name))
            .map(|s| {
                format!(
                    "<li><a class=\"school\" id=\"school-{id}\" href=\"{href}\">{label}</a></li>",
                    id = escape(&s.id),
                    href = escape(&self.start_url(Some(&s.id), target)),
                    label = escape(&s.display_name),
                )
            })
            .collect();
        Reply::html(
            200,
            "Choose your school",
            &format!(
                "<h1>Choose your school</h1><p>Sign in with the school you belong to.</p>\
<nav aria-label=\"Schools\"><ul id=\"schools\">{items}</ul></nav>"
            ),
        )
    }

    /// `{prefix}/start?school=…&rd=…` (the login link of one school, or the chooser).
    fn start_url(&self, school: Option<&str>, target: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = school {
            q.append_pair("school", s);
        }
        q.append_pair("rd", target);
        format!("{}/start?{}", self.config.server.prefix, q.finish())
    }
}

/// A login link naming a school this gateway does not serve (not echoed back).
fn unknown_school(_school: &str) -> Reply {
    Reply::error(400, true, "unknown_school", "There is no such school here")
}
