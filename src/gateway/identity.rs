//! What an upstream is told about the user: the identity headers, set from the session
//! or the validated Bearer token (a client's own copies are always removed first, see
//! [`crate::wire::headers::to_remove`]).

use crate::session::Identity;
use crate::wire::headers::sanitize;

/// The identity headers to inject, in order.
pub(crate) fn identity_headers(id: &Identity, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-loopwise-user", sanitize(&id.sub)),
        ("x-loopwise-email", sanitize(&id.email)),
        ("x-loopwise-name", sanitize(&id.name)),
        ("x-loopwise-roles", sanitize(&id.roles.join(","))),
        ("x-loopwise-school", sanitize(&id.school)),
        ("x-loopwise-scope", sanitize(scope)),
        ("x-forwarded-user", sanitize(&id.sub)),
        ("x-forwarded-email", sanitize(&id.email)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_values_cannot_split_headers() {
        let id = Identity {
            sub: "ada\r\nX-Evil: 1".into(),
            ..Default::default()
        };
        let h = identity_headers(&id, "read");
        assert_eq!(h[0].1, "adaX-Evil: 1");
    }
}
