//! The demo users of the emulated school: one per role, so policies can be tested.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct DemoUser {
    pub sub: &'static str,
    pub name: &'static str,
    pub email: &'static str,
    pub email_verified: bool,
    /// Most privileged first, as Loopwise's userinfo lists them.
    pub roles: &'static [&'static str],
    /// A label for the login page.
    #[serde(skip)]
    pub title: &'static str,
}

pub const USERS: &[DemoUser] = &[
    DemoUser {
        sub: "ada",
        name: "Ada Lovelace",
        email: "ada@demo.loopwise.test",
        email_verified: true,
        roles: &["school_admin", "teacher"],
        title: "School admin",
    },
    DemoUser {
        sub: "grace",
        name: "Grace Hopper",
        email: "grace@demo.loopwise.test",
        email_verified: true,
        roles: &["teacher"],
        title: "Teacher",
    },
    DemoUser {
        sub: "alan",
        name: "Alan Turing",
        email: "alan@demo.loopwise.test",
        email_verified: false,
        roles: &["student"],
        title: "Student",
    },
];

/// The user `--auto-approve` logs in when `--auto-user` is not given: the school admin.
pub const DEFAULT_AUTO_USER: &str = "ada";

pub(super) fn find(sub: &str) -> Option<&'static DemoUser> {
    USERS.iter().find(|u| u.sub == sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_distinct_and_subs_unique() {
        let mut first_roles: Vec<_> = USERS.iter().map(|u| u.roles[0]).collect();
        first_roles.dedup();
        assert_eq!(first_roles.len(), USERS.len());
        assert!(find(DEFAULT_AUTO_USER).is_some());
        assert!(find("nobody").is_none());
    }
}
