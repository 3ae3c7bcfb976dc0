//! Registration that heals: the school answered `invalid_client` (at a code exchange or a
//! refresh), i.e. it forgot the client. A client that registered itself registers again
//! (at most once a minute, see `LoopwiseClient::reregister`), logged and counted in
//! `loopgate_reregistrations_total`; a configured client cannot, and is refused.

use super::Gateway;
use crate::oauth::School;

/// What became of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Healed {
    /// Registered again: the next login uses the new client id.
    Registered,
    /// A configured client (or one that registered again less than a minute ago).
    NotRegistered,
    /// Registering again failed (logged).
    Failed,
}

pub(super) async fn reregister(gw: &Gateway, school: &School, now: u64) -> Healed {
    let count = |result: &str| {
        gw.shared
            .metrics
            .reregistrations
            .with_label_values(&[&school.id, result])
            .inc()
    };
    match school.client.reregister(now).await {
        Ok(Some(client_id)) => {
            count("ok");
            tracing::warn!(school = %school.id, %client_id, "the school no longer knew the client: registered again; the next login uses the new client");
            Healed::Registered
        }
        Ok(None) => {
            tracing::warn!(school = %school.id, "the school does not know the client and it cannot register again now (a configured client_id, or registered again less than a minute ago)");
            Healed::NotRegistered
        }
        Err(e) => {
            count("error");
            tracing::error!(school = %school.id, error = %e, "the school no longer knows the client and registering again failed");
            Healed::Failed
        }
    }
}

impl Gateway {
    /// Asks every school whose client registered itself (and wants it checked) whether it
    /// still knows the client, and registers again where it forgot: a forgotten client
    /// otherwise shows up only as the school's error page at the next login, which the
    /// gateway never sees. Run every `registration_check` by the runtime.
    pub(crate) async fn check_registrations(&self, now: u64) {
        for school in self.schools.iter() {
            let wanted = self
                .config
                .school(&school.id)
                .is_some_and(|lw| !lw.registration_check.is_zero());
            if wanted
                && school.client.is_registered_dynamically()
                && school.client.registration_forgotten().await
            {
                tracing::warn!(school = %school.id, "the school no longer knows the registered client");
                reregister(self, school, now).await;
            }
        }
    }

    /// How long until the next registration check: the shortest `registration_check` of
    /// the schools whose client registered itself; `None` when there are none.
    pub(crate) fn registration_check_every(&self) -> Option<std::time::Duration> {
        self.schools
            .iter()
            .filter(|s| s.client.is_registered_dynamically())
            .filter_map(|s| self.config.school(&s.id).map(|lw| lw.registration_check))
            .filter(|d| !d.is_zero())
            .min()
    }
}
