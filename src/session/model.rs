//! What a logged-in browser session holds.

use serde::{Deserialize, Serialize};

/// The identity Loopwise vouched for, as injected into upstream headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identity {
    #[serde(rename = "s")]
    pub sub: String,
    #[serde(rename = "n", default)]
    pub name: String,
    #[serde(rename = "e", default)]
    pub email: String,
    /// Most privileged first, as Loopwise lists them.
    #[serde(rename = "r", default)]
    pub roles: Vec<String>,
    /// The school (`org_id`), as a string whatever its JSON type was.
    #[serde(rename = "o", default)]
    pub school: String,
}

/// A session: identity plus tokens. Field names are short because it may live in a cookie.
/// `Debug` leaves the tokens out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// A random id that survives refreshes: the unit of single-flight refresh.
    #[serde(rename = "id", default)]
    pub sid: String,
    /// The school (`oauth::Schools` id) that issued the tokens: refresh, revoke and
    /// userinfo go there, and no other school's route accepts the session. Empty in
    /// sessions sealed before it was kept (the only school).
    #[serde(rename = "k", default, skip_serializing_if = "String::is_empty")]
    pub issuer_id: String,
    #[serde(rename = "i")]
    pub identity: Identity,
    /// Granted scopes, space-separated.
    #[serde(rename = "sc", default)]
    pub scope: String,
    #[serde(rename = "at")]
    pub access_token: String,
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the access token expires, by the gateway's clock at receipt + `expires_in`.
    #[serde(rename = "ax")]
    pub access_expires_at: u64,
    /// When the access token was received (0 in sessions sealed before this was kept):
    /// with `access_expires_at` it gives the token's lifetime, which bounds how early a
    /// refresh may start.
    #[serde(rename = "ai", default)]
    pub access_issued_at: u64,
    #[serde(rename = "c")]
    pub created_at: u64,
    /// End of the session's lifetime (`session.lifetime` after login).
    #[serde(rename = "x")]
    pub expires_at: u64,
    /// Where the login came from, for an operator's list of a user's sessions; kept only
    /// by a server-side store (a cookie has no room to spare for it).
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// OpenID Connect: the login's ID token, kept only when the school offers
    /// RP-initiated logout (sent back as `id_token_hint` at sign-out).
    #[serde(rename = "it", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// The browser a session was started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    /// The client's address (through `server.trusted_proxies`).
    #[serde(rename = "ip", default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// `User-Agent`, cut to [`Origin::MAX_USER_AGENT`] bytes.
    #[serde(rename = "ua", default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Origin {
    pub const MAX_USER_AGENT: usize = 256;

    /// The origin of a request from `client_ip` with `user_agent`.
    pub fn new(client_ip: Option<std::net::IpAddr>, user_agent: Option<&str>) -> Origin {
        let user_agent = user_agent.map(|ua| {
            let mut end = ua.len().min(Self::MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_string()
        });
        Origin {
            client_ip: client_ip.map(|ip| ip.to_string()),
            user_agent,
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .field("issuer_id", &self.issuer_id)
            .field("identity", &self.identity)
            .field("scope", &self.scope)
            .field("access_expires_at", &self.access_expires_at)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whether the session itself (not its access token) is still alive at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_tokens() {
        let s = Session {
            sid: "s1".into(),
            issuer_id: "default".into(),
            identity: Identity {
                sub: "ada".into(),
                ..Default::default()
            },
            scope: "read".into(),
            access_token: "AT-SECRET".into(),
            refresh_token: Some("RT-SECRET".into()),
            access_expires_at: 10,
            access_issued_at: 0,
            created_at: 0,
            expires_at: 100,
            origin: None,
            id_token: None,
        };
        let d = format!("{s:?}");
        assert!(!d.contains("AT-SECRET") && !d.contains("RT-SECRET"));
        assert!(s.is_live(99) && !s.is_live(100));
    }

    #[test]
    fn sessions_sealed_before_school_ids_still_read() {
        let old = r#"{"id":"s1","i":{"s":"ada"},"at":"AT","ax":10,"c":0,"x":100}"#;
        let s: Session = serde_json::from_str(old).unwrap();
        assert_eq!(s.issuer_id, "", "no id: the only school");
        let with = Session {
            issuer_id: "north".into(),
            ..s
        };
        let json = serde_json::to_string(&with).unwrap();
        assert!(json.contains(r#""k":"north""#), "{json}");
        assert_eq!(serde_json::from_str::<Session>(&json).unwrap(), with);
    }
}
