//! The emulator's HTML pages: plain forms that work without JavaScript, so a browser,
//! curl or a test client can drive them.

use super::error::OAuthError;
use super::store::AuthzRequest;
use super::users::USERS;
use crate::html::{escape, page};

pub(super) fn login(req: &AuthzRequest) -> String {
    let mut buttons = String::new();
    for u in USERS {
        buttons.push_str(&format!(
            "<button type=\"submit\" name=\"user\" value=\"{sub}\" id=\"login-{sub}\">{name} \
<span class=\"muted\">— {title} · {email}</span></button>\n",
            sub = escape(u.sub),
            name = escape(u.name),
            title = escape(u.title),
            email = escape(u.email),
        ));
    }
    page(
        "Sign in to Loopwise",
        &format!(
            "<h1>Sign in to Loopwise</h1>\
<p><strong>{client}</strong> wants to sign you in. Choose a demo user:</p>\
<form method=\"post\" action=\"/oauth/authorize/login\">\
<input type=\"hidden\" name=\"request_id\" value=\"{id}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n{buttons}</form>\
<p class=\"muted\">Loopwise emulator — demo users only.</p>",
            client = escape(&req.client_name),
            id = escape(&req.id),
            csrf = escape(&req.csrf),
        ),
    )
}

pub(super) fn consent(req: &AuthzRequest, user_name: &str) -> String {
    let scopes: String = req
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    page(
        "Authorize access",
        &format!(
            "<h1>Authorize {client}?</h1>\
<p>Signed in as <strong>{user}</strong>. <strong>{client}</strong> asks for:</p>\
<ul id=\"scopes\">{scopes}</ul>\
<form method=\"post\" action=\"/oauth/authorize/consent\">\
<input type=\"hidden\" name=\"request_id\" value=\"{id}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Approve</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\" class=\"secondary\">Deny</button>\
</form>",
            client = escape(&req.client_name),
            user = escape(user_name),
            id = escape(&req.id),
            csrf = escape(&req.csrf),
        ),
    )
}

pub(super) fn error(e: &OAuthError) -> String {
    page(
        "Authorization error",
        &format!(
            "<h1>This sign-in request cannot continue</h1>\
<p><code id=\"error\">{code}</code></p><p id=\"error-description\">{desc}</p>\
<p class=\"muted\">You were not sent back to the application because the request could not \
be trusted.</p>",
            code = escape(e.code.as_str()),
            desc = escape(&e.description),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_client_controlled_text() {
        let req = AuthzRequest {
            id: "i".into(),
            client_id: "c".into(),
            client_name: "<script>x</script>".into(),
            redirect_uri: "r".into(),
            scopes: vec!["read".into()],
            state: None,
            code_challenge: "c".into(),
            nonce: None,
            csrf: "t".into(),
            user: None,
            created_at: 0,
        };
        assert!(!login(&req).contains("<script>x"));
        assert!(!consent(&req, "<b>").contains("<b>"));
        assert!(login(&req).contains("id=\"login-ada\""));
    }
}
