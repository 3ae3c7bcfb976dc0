//! Per-route authorization: scopes (all required), roles (any of), schools (any of).
//! Pure: decides from what the session or token carries.

/// What a route requires beyond being authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub schools: Vec<String>,
}

/// What an identity lacks, for the 403 page and the `insufficient_scope` challenge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    pub scopes: Vec<String>,
    /// Set when none of the route's roles is held (any one would do).
    pub roles: Vec<String>,
    /// Set when the identity's school is not among the allowed ones.
    pub schools: Vec<String>,
}

impl Missing {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.scopes.is_empty() {
            parts.push(format!("the scope(s) {}", self.scopes.join(", ")));
        }
        if !self.roles.is_empty() {
            parts.push(format!("one of the roles {}", self.roles.join(", ")));
        }
        if !self.schools.is_empty() {
            parts.push(format!(
                "membership of school {}",
                self.schools.join(" or ")
            ));
        }
        parts.join("; ")
    }
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.roles.is_empty() && self.schools.is_empty()
    }

    /// `Ok` when `granted_scope` (space-separated), `roles` and `school` satisfy the route.
    pub fn check(
        &self,
        granted_scope: &str,
        roles: &[String],
        school: &str,
    ) -> Result<(), Missing> {
        let granted: Vec<&str> = granted_scope.split(' ').filter(|s| !s.is_empty()).collect();
        let missing = Missing {
            scopes: self
                .scopes
                .iter()
                .filter(|s| !granted.contains(&s.as_str()))
                .cloned()
                .collect(),
            roles: if self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r)) {
                Vec::new()
            } else {
                self.roles.clone()
            },
            schools: if self.schools.is_empty() || self.schools.iter().any(|s| s == school) {
                Vec::new()
            } else {
                self.schools.clone()
            },
        };
        if missing == Missing::default() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(scopes: &[&str], roles: &[&str], schools: &[&str]) -> Requirements {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Requirements {
            scopes: v(scopes),
            roles: v(roles),
            schools: v(schools),
        }
    }

    #[test]
    fn all_scopes_any_role_any_school() {
        let teacher = vec!["teacher".to_string()];
        let r = req(
            &["read", "courses:read"],
            &["school_admin", "teacher"],
            &["4242"],
        );
        assert!(r.check("read courses:read write", &teacher, "4242").is_ok());
        let m = r.check("read", &teacher, "4242").unwrap_err();
        assert_eq!(m.scopes, ["courses:read"]);
        let m = r
            .check("read courses:read", &["student".into()], "1")
            .unwrap_err();
        assert_eq!(m.roles, ["school_admin", "teacher"]);
        assert_eq!(m.schools, ["4242"]);
        assert!(m
            .describe()
            .contains("one of the roles school_admin, teacher"));
        assert!(Requirements::default().check("", &[], "").is_ok());
    }
}
