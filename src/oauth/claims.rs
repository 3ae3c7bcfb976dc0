//! Which claims of userinfo, an ID token or an introspection answer name the user's
//! email, name, roles and school (`[loopwise] claims`). Loopwise says `org_id` for the
//! school; standards servers differ, so the names are configurable. `roles` may be an
//! array or one string (`"teacher"`, or several separated by spaces or commas).

use serde_json::{Map, Value};

use crate::session::Identity;

/// The claim names; `Default` is Loopwise's dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    pub roles: String,
    pub school: String,
    pub email: String,
    pub name: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            roles: "roles".into(),
            school: "org_id".into(),
            email: "email".into(),
            name: "name".into(),
        }
    }
}

/// A claim as text: strings as they are, numbers written out, anything else empty.
pub(crate) fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

impl ClaimNames {
    /// The identity `claims` name (`sub` empty when there is none: callers refuse it).
    pub fn identity(&self, claims: &Map<String, Value>) -> Identity {
        Identity {
            sub: scalar(claims.get("sub")),
            name: scalar(claims.get(&self.name)),
            email: scalar(claims.get(&self.email)),
            roles: roles(claims.get(&self.roles)),
            school: scalar(claims.get(&self.school)),
        }
    }
}

/// Roles from an array of strings or from one string.
fn roles(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| scalar(Some(i)))
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Fills what `base` lacks from `more` (same user): userinfo completing an ID token.
pub fn merge(mut base: Identity, more: Identity) -> Identity {
    if base.name.is_empty() {
        base.name = more.name;
    }
    if base.email.is_empty() {
        base.email = more.email;
    }
    if base.roles.is_empty() {
        base.roles = more.roles;
    }
    if base.school.is_empty() {
        base.school = more.school;
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn roles_may_be_a_string_or_an_array_and_names_are_configurable() {
        let d = ClaimNames::default();
        let id = d.identity(&map(json!({"sub": 7, "roles": "teacher", "org_id": 4242})));
        assert_eq!(
            (id.sub.as_str(), id.roles.clone(), id.school.as_str()),
            ("7", vec!["teacher".to_string()], "4242")
        );
        let id = d.identity(&map(json!({"sub": "a", "roles": "admin, teacher staff"})));
        assert_eq!(id.roles, ["admin", "teacher", "staff"]);
        let id = d.identity(&map(json!({"sub": "a", "roles": ["admin", 3, null, ""]})));
        assert_eq!(id.roles, ["admin", "3"]);
        let id = d.identity(&map(json!({"sub": "a", "roles": {"x": 1}})));
        assert!(id.roles.is_empty());
        let custom = ClaimNames {
            roles: "groups".into(),
            school: "tenant".into(),
            email: "mail".into(),
            name: "display".into(),
        };
        let id = custom.identity(&map(json!({"sub": "a", "groups": ["g"], "tenant": "t",
                                             "mail": "m@x", "display": "D", "roles": ["no"]})));
        assert_eq!(
            (id.roles, id.school, id.email, id.name),
            (vec!["g".to_string()], "t".into(), "m@x".into(), "D".into())
        );
    }

    #[test]
    fn merge_fills_only_what_is_missing() {
        let base = Identity {
            sub: "a".into(),
            email: "a@x".into(),
            ..Default::default()
        };
        let more = Identity {
            sub: "a".into(),
            email: "other@x".into(),
            name: "A".into(),
            roles: vec!["r".into()],
            school: "s".into(),
        };
        let m = merge(base, more);
        assert_eq!(
            (m.email.as_str(), m.name.as_str(), m.school.as_str()),
            ("a@x", "A", "s")
        );
        assert_eq!(m.roles, ["r"]);
    }
}
